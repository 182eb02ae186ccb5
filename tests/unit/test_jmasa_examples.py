"""NMI instructions become engine examples with the right images in the right order, and
prediction rows score as ``iea.metrics`` does."""

from __future__ import annotations

import pytest
from PIL import Image

from iea.data.records import Aspect, Tweet
from iea.jmasa import RegionView, TweetInput, jmasa_examples, score_predictions
from iea.nmi import AlignedRegion

TOKENS = tuple("Spent the morning with David Beckham and the dog".split())
TWEET = Tweet("t1", TOKENS, "t1.jpg", (Aspect(4, 6, "POS"), Aspect(8, 9, "NEU")))


def _input() -> TweetInput:
    whole = Image.new("RGB", (32, 32), "white")
    regions = tuple(
        RegionView(rid, (0, 0, 8, 8), Image.new("RGB", (8, 8 + rid), "red"), f"region {rid}")
        for rid in (1, 2, 3)
    )
    return TweetInput(TWEET, whole, regions)


def test_full_example_puts_each_crop_after_its_phrase():
    item = _input()
    aligned = [
        AlignedRegion(3, 8, 9, "a dog", (0, 0, 8, 8)),
        AlignedRegion(1, 4, 6, "a man", (1, 1, 4, 4)),
    ]
    (ex,), (ins,) = jmasa_examples([item], [aligned])
    kinds = [c["type"] for c in ex.content]
    assert kinds.count("image") == len(ex.images) == 3
    assert ex.images[0] is item.image
    # region 1 (David Beckham) comes before region 3 (dog) in the text
    assert ex.images[1] is item.regions[0].crop and ex.images[2] is item.regions[2].crop
    assert ins.region_ids == (1, 3)
    assert ex.target == "David Beckham <POS> ; dog <NEU>"
    text = "".join(c.get("text", "<img>") for c in ex.content)
    assert text.index("Beckham") < text.index("a man") < text.index("dog") < text.index("a dog")


def test_no_aligner_nmi_carries_the_whole_image_only():
    aligned = [AlignedRegion(1, 4, 6, "a man", (1, 1, 4, 4))]
    (ex,), _ = jmasa_examples([_input()], [aligned], ablation="no_aligner_nmi")
    assert len(ex.images) == 1 and "a man" not in str(ex.content)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="1 tweets but 0 alignment lists"):
        jmasa_examples([_input()], [])


def test_score_predictions_flattens_metrics():
    rows = [
        {
            "id": "t1",
            "aspects": [
                {"from": 4, "to": 6, "polarity": "POS"},
                {"from": 8, "to": 9, "polarity": "NEG"},
            ],
            "parsed": True,
            "unmatched": ["Ronaldo"],
        }
    ]
    m = score_predictions(rows, [TWEET])
    assert m["jmasa_tp"] == 1 and m["jmasa_pred"] == 3 and m["jmasa_gold"] == 2
    assert m["jmasa_p"] == pytest.approx(1 / 3) and m["jmasa_r"] == pytest.approx(0.5)
    assert m["mate_tp"] == 2 and m["unmatched"] == 1 and m["masc_acc"] == pytest.approx(0.5)


def test_alignment_answers_are_cached_per_region(tmp_path, monkeypatch):
    from iea import jmasa
    from iea.store import LocalStore

    calls: list[int] = []

    def fake_generate(model, processor, examples, **kw):
        calls.append(len(examples))
        return ["David Beckham [4-6]", "none", "dog [8-9]"][: len(examples)]

    monkeypatch.setattr(jmasa, "generate", fake_generate)
    store = LocalStore(tmp_path)
    first = jmasa.align_regions(None, None, [_input()], store=store, aligner_key="k1")
    assert calls == [3]
    assert [(r.region_id, r.word_start, r.word_end) for r in first[0]] == [(1, 4, 6), (3, 8, 9)]
    again = jmasa.align_regions(None, None, [_input()], store=store, aligner_key="k1")
    assert calls == [3] and again == first  # every answer came from the cache
    jmasa.align_regions(None, None, [_input()], store=store, aligner_key="k2")
    assert calls == [3, 3]  # another aligner version asks again


def test_eval_counts_the_unmatched_pairs_of_training_prediction_files(tmp_path):
    import json

    from iea.evaluate import load_predictions

    path = tmp_path / "pred.jsonl"
    row = {
        "id": "t1",
        "output": "David Beckham <POS> ; Ronaldo <NEG>",
        "aspects": [{"from": 4, "to": 6, "polarity": "POS"}],
        "parsed": True,
        "unmatched": ["Ronaldo"],
    }
    path.write_text(json.dumps(row) + "\n")
    pred, unparsed, unmatched = load_predictions(path, {"t1": TOKENS})
    assert pred == {"t1": {(4, 6, "POS")}} and unparsed == 0 and unmatched == 1
    rows = [row]
    assert score_predictions(rows, [TWEET])["jmasa_pred"] == 2  # the same count as the flow
