"""Aligner negatives and dev selection (``iea.align.training``), with a stand-in model.

Dev selection must count false alignments (a phrase answered for a region the text does not
name) and must never read the test split: without val there is no selection at all.
"""

from __future__ import annotations

from collections import Counter

import pytest
from PIL import Image

import iea.align.training as training
from iea.align.aligner import AlignedSpan
from iea.align.records import FgcaRecord
from iea.align.training import (
    DEV_SELECT,
    alignment_scores,
    dev_evaluator,
    evaluate_aligner,
    negative_pairs,
)

# image id -> (text, its class phrases)
IMAGES = {
    "v0": ("a dog sleeps on the sofa", ("dog", "sofa")),
    "v1": ("the bus passes a tree", ("bus", "tree")),
    "v2": ("my cat and the dog play", ("cat", "dog")),
    "v3": ("a bird over the water", ("bird", "water")),
    "v4": ("the sofa by the window", ("sofa", "window")),
}


def _records(images=IMAGES, split="val") -> list[FgcaRecord]:
    rows = []
    for k, (image_id, (text, phrases)) in enumerate(images.items()):
        words = text.split()
        for j, phrase in enumerate(phrases):
            ws = words.index(phrase)
            start = text.index(phrase)
            rows.append(
                FgcaRecord(
                    image_id=image_id,
                    region_id=j + 1,
                    bbox=(0, 0, 8, 8),
                    description=f"a {phrase}",
                    text=text,
                    phrase=phrase,
                    start=start,
                    end=start + len(phrase),
                    word_start=ws,
                    word_end=ws + 1,
                    class_id=10 * k + j,
                    class_name=phrase,
                    image_class_ids=(10 * k, 10 * k + 1),
                    split=split,
                )
            )
    return rows


class FakeImages:
    """Stands in for :class:`PascalImages`: 8x8 gray images, and a log of what was read."""

    def __init__(self):
        self.read: Counter[str] = Counter()

    def image(self, image_id):
        self.read[image_id] += 1
        return Image.new("RGB", (8, 8), (128, 128, 128))

    def crop(self, image_id, class_id, bbox):
        self.read[image_id] += 1
        return Image.new("RGB", (8, 8), (128, 128, 128))


class Oracle:
    """Right on every positive; on negatives answers ``"none"`` or, with ``aligns_negatives``,
    the first word of the text (a false alignment)."""

    def __init__(self, records, aligns_negatives: bool):
        self.gold = {f"{r.image_id}/{r.region_id}": r for r in records}
        self.aligns_negatives = aligns_negatives

    def answer(self, example) -> str:
        if "~" not in example.key:
            r = self.gold[example.key]
            words = r.text.split()[r.word_start : r.word_end]
            return f"{' '.join(words)} [{r.word_start}-{r.word_end}]"
        prompt = "".join(part.get("text", "") for part in example.content)
        (line,) = [x for x in prompt.splitlines() if x.startswith("Text: ")]
        return f"{line.split()[1]} [0-1]" if self.aligns_negatives else "none"


@pytest.fixture
def fake_generate(monkeypatch):
    seen = []

    def generate(model, processor, examples, *, max_new_tokens, batch_size, cache=None):
        seen.extend(examples)
        return [model.answer(e) for e in examples]

    monkeypatch.setattr(training, "generate", generate)
    return seen


# --- negatives ----------------------------------------------------------------------------


def test_negative_pairs_are_seeded_and_never_name_the_region():
    recs = _records()
    pairs = negative_pairs(recs, 0.5, seed=3)
    assert pairs == negative_pairs(recs, 0.5, seed=3)
    assert pairs != negative_pairs(recs, 0.5, seed=4)
    assert [i for i, _ in pairs] == sorted({i for i, _ in pairs})  # one per record, in order
    for i, other in pairs:
        assert other != recs[i].image_id
        assert recs[i].phrase not in IMAGES[other][1]  # the other text does not name the class
    assert negative_pairs(recs, 0.0, seed=3) == []
    assert [i for i, _ in negative_pairs(recs, 1.0, seed=3)] == list(range(len(recs)))


def test_negative_pairs_skip_records_with_no_other_text_and_check_the_rate():
    only = {"v0": IMAGES["v0"]}
    assert negative_pairs(_records(only), 1.0, seed=0) == []
    with pytest.raises(ValueError, match=r"negatives must be in \[0, 1\], got 1.5"):
        negative_pairs(_records(), 1.5, seed=0)


def test_training_examples_carry_the_same_negatives(fake_generate):
    recs = _records(split="train")
    examples = training.fgca_examples(recs, FakeImages(), negatives=0.5, seed=3)
    negatives = [e for e in examples if "~" in e.key]
    pairs = negative_pairs(recs, 0.5, seed=3)
    assert [e.key for e in negatives] == [
        f"{recs[i].image_id}/{recs[i].region_id}~{other}" for i, other in pairs
    ]
    assert {e.target for e in negatives} == {"none"}
    assert len(examples) == len(recs) + len(pairs)


# --- the metric ---------------------------------------------------------------------------


def _span(ws, we):
    return AlignedSpan(ws, we, 0, 0, "x")


def test_alignment_scores_count_false_alignments():
    gold = [(1, 2), (3, 4), None, None]
    always_aligns = [_span(1, 2), _span(3, 4), _span(0, 1), _span(2, 3)]
    says_none = [_span(1, 2), _span(3, 4), None, None]
    a, b = alignment_scores(always_aligns, gold), alignment_scores(says_none, gold)
    assert a["span_acc"] == b["span_acc"] == 1.0  # positives alone cannot tell them apart
    assert (a["exact_acc"], a["false_alignment_rate"]) == (0.5, 1.0)
    assert (b["exact_acc"], b["false_alignment_rate"]) == (1.0, 0.0)
    assert (a["positives"], a["negatives"]) == (2, 2)
    wrong = alignment_scores([None, _span(3, 5), None, _span(0, 1)], gold)
    assert (wrong["exact_acc"], wrong["span_acc"], wrong["false_alignment_rate"]) == (
        0.25,
        0.0,
        0.5,
    )
    empty = alignment_scores([], [])
    assert empty["exact_acc"] == empty["span_acc"] == empty["false_alignment_rate"] == 0.0
    with pytest.raises(ValueError, match="3 predictions for 4 gold spans"):
        alignment_scores(always_aligns[:3], gold)


# --- dev selection ------------------------------------------------------------------------


def test_dev_selection_scores_val_positives_and_negatives(fake_generate):
    val = _records(split="val")
    test = _records({f"t{k}": v for k, v in IMAGES.items()}, split="test")
    images = FakeImages()
    evaluate = dev_evaluator(
        None, {"train": [], "val": val, "test": test}, images, negatives=0.5, seed=3
    )
    assert evaluate is not None
    aligning = evaluate(Oracle(val, aligns_negatives=True))
    abstaining = evaluate(Oracle(val, aligns_negatives=False))

    pairs = negative_pairs(val, 0.5, seed=3)
    assert pairs and len(fake_generate) == 2 * (len(val) + len(pairs))
    assert not any(k.startswith("t") for k in images.read)  # test never read
    assert {e.key.split("~")[-1] for e in fake_generate if "~" in e.key} <= set(IMAGES)
    # the metric selected on tells a model that aligns every negative from one that does not
    assert aligning["span_acc"] == abstaining["span_acc"] == 1.0
    assert aligning[DEV_SELECT] < abstaining[DEV_SELECT] == 1.0
    n = len(val) + len(pairs)
    assert aligning[DEV_SELECT] == pytest.approx(len(val) / n)
    assert aligning["false_alignment_rate"] == 1.0 and abstaining["false_alignment_rate"] == 0.0


def test_no_val_split_means_no_selection_and_test_is_never_read(fake_generate):
    images = FakeImages()
    test = _records(split="test")
    for splits in ({"train": _records(), "val": [], "test": test}, {"test": test}):
        assert dev_evaluator(None, splits, images, negatives=0.3, seed=0) is None
    assert not images.read and not fake_generate


def test_evaluate_aligner_without_negatives_scores_positives_only(fake_generate):
    val = _records()
    r = evaluate_aligner(Oracle(val, True), None, val, FakeImages())
    assert (r["positives"], r["negatives"]) == (len(val), 0)
    assert r["exact_acc"] == r["span_acc"] == r["valid"] == 1.0
    assert len(r["answers"]) == len(val)


# --- the setting --------------------------------------------------------------------------


def test_negatives_is_an_aligner_setting_in_zero_one():
    from iea.config import ConfigError, load_settings

    def load(*overrides):
        models = ["aligner.model=tiny-qwen3-vl", "jmasa.model=tiny-qwen3-vl"]
        return load_settings(overrides=[*models, *overrides], env={})

    assert load_settings(env={}).aligner.negatives == 0.3
    assert load("aligner.negatives=0.5").aligner.negatives == 0.5
    with pytest.raises(ConfigError, match="aligner.negatives"):
        load("aligner.negatives=1.5")
    with pytest.raises(ConfigError, match="jmasa.negatives"):  # the aligner's alone
        load("jmasa.negatives=0.5")
