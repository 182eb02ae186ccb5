"""The real Twitter-2015/2017 annotations through every stage, on stand-in images.

The real images are not here, so each image id gets a stand-in: a scene of the controlled world
(:func:`iea.data.world.draw_scene`), one of :data:`SCENES` picked by a hash of the id, saved as
a JPEG under the id's file name. Every selected tweet (the first :data:`FIRST` of each test
split, plus the first tweets of every hard kind of :data:`KINDS` found in the other splits, plus
the longest tweet) then goes through the stages as ``iea train jmasa`` runs them:

1. interpretation: the demo config's trained tiny SAM and interpreter
   (:class:`iea.vision.interpreter.ImageInterpreter` via :func:`iea.jmasa.tweet_inputs`), on the
   segmented image and, for ``no_segmentation``, on the whole image as the one region;
2. alignment: :func:`iea.jmasa.align_regions` with the untrained tiny Qwen3-VL (a trained
   aligner needs FGCA; what is checked here is that real tokens go through the path and that
   whatever it answers becomes valid spans of the tweet);
3. the NMI: :func:`iea.jmasa.jmasa_examples` for ``full``, ``no_nmi``, ``no_segmentation`` and
   ``text_only``, both with the aligner's regions and with an oracle alignment that puts the
   regions the interpreter actually produced on the gold spans (so every tweet with a kept
   region carries region images and descriptions next to its phrases);
4. one short fine-tuning (:func:`iea.models.finetune.train`, 1 epoch, full mode);
5. prediction (:func:`iea.jmasa.predict`) and ``iea eval`` through the CLI.

For every tweet and every ablation the target is non-empty and parses back onto the tweet's
tokens to exactly its gold pairs (oracle JMASA F1 1.0, also through ``iea eval``); the
instruction's text holds exactly the tweet's words, each region group right after its phrase
(``full``, ``no_segmentation``) or all after the text (``no_nmi``), one image per placeholder;
and the tokenizer writes the target back unchanged (a model can write every gold answer, emoji
and all). The tweets with hashtags, mentions, ``RT``, URLs, emoji, other non-ASCII text,
repeated phrases and 30+ tokens are collected, and each kind must be present.

The untrained aligner aligns next to nothing, so the ``aligner`` instructions are mostly plain
text; the ``oracle`` ones carry the real regions, crops and descriptions.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iea.data.convert import read_split
from iea.data.records import Tweet, normalize_image_id
from iea.data.world import POLARITIES, WORLD_CLASSES, draw_scene, sample_distractors
from iea.nmi import AlignedRegion

pytestmark = [pytest.mark.real_data, pytest.mark.model]

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo.yaml"
DATASETS = ("twitter2015", "twitter2017")
FIRST = 100
"""The first tweets of each test split."""
PER_KIND = 2
"""Extra tweets per hard kind (from the rest of test, then dev, then train)."""
RUN = ("full", "no_nmi", "no_segmentation", "text_only")
N_TRAIN = 40
"""Training examples of the one short fine-tuning (half from each dataset)."""
TRAIN_BATCH = 8
SCENES = 48
"""Distinct stand-in scenes: each image id gets one, picked by a hash of the id."""
SIZES = ((320, 240), (240, 320), (400, 300), (288, 288))
"""Stand-in image sizes (W, H), so the stages see several shapes."""
SHOWN = 8


def _kinds(tweet: Tweet) -> set[str]:
    """The hard kinds of token content ``tweet`` holds."""
    toks = tweet.tokens
    terms = [toks[a.start : a.end] for a in tweet.aspects]
    n = len(toks)
    checks = {
        "hashtag": "#" in toks,
        "mention": "@" in toks,
        "RT": "RT" in toks,
        "URL": any("http" in t.lower() for t in toks),
        "emoji": any(unicodedata.category(c) == "So" for t in toks for c in t),
        "non-ASCII": any(ord(c) > 127 for t in toks for c in t),
        "hashtag in an aspect": any("#" in term for term in terms),
        "same aspect text twice": len(set(terms)) < len(terms),
        "aspect text also outside its span": any(
            sum(toks[i : i + len(term)] == term for i in range(n - len(term) + 1)) > 1
            for term in terms
        ),
        "30+ tokens": n >= 30,
    }
    return {k for k, v in checks.items() if v}


KINDS = (
    "hashtag",
    "mention",
    "RT",
    "URL",
    "emoji",
    "non-ASCII",
    "hashtag in an aspect",
    "same aspect text twice",
    "aspect text also outside its span",
    "30+ tokens",
)


def _select(root: Path, dataset: str) -> list[Tweet]:
    splits = {
        s: read_split("vlp", root / dataset / "vlp_json", s)[0] for s in ("test", "dev", "train")
    }
    chosen = {t.id: t for t in splits["test"][:FIRST]}
    rest = splits["test"][FIRST:] + splits["dev"] + splits["train"]
    for kind in KINDS:
        extra = [t for t in rest if t.id not in chosen and kind in _kinds(t)][:PER_KIND]
        chosen.update((t.id, t) for t in extra)
    longest = max(rest, key=lambda t: len(t.tokens))
    chosen.setdefault(longest.id, longest)
    return list(chosen.values())


def stand_in(image_id: str, rates: dict[str, float]) -> Image.Image:
    """A scene of the controlled world for ``image_id``: 1-3 objects of random classes and
    polarities and the demo's distractors, drawn from a seed hashed from the id.

    The seed is one of :data:`SCENES`, so ids share scenes now and then: the interpreter's
    content cache (keyed by the image bytes, not the file name) then serves the other ids, and
    the tiny SAM (about 0.5 s an image on 2 cores) runs once a scene, not once a tweet.
    """
    digest = hashlib.sha256(image_id.encode("utf-8")).digest()
    seed = int.from_bytes(digest[:8], "big") % SCENES
    rng = np.random.default_rng(seed)
    size = SIZES[seed % len(SIZES)]
    n = int(rng.integers(1, 4))
    names = [str(c) for c in rng.choice(WORLD_CLASSES, size=n, replace=False)]
    pols = [str(rng.choice(POLARITIES)) for _ in names]
    rgb, _, _ = draw_scene(
        rng,
        list(zip(names, pols, strict=True)),
        sample_distractors(rng, rates, names, pols),
        size,
    )
    return Image.fromarray(rgb, "RGB")


def _oracle(item) -> list[AlignedRegion]:
    """The regions the interpreter kept, put on the gold spans in turn (region k on aspect
    ``k mod n``): the alignment a perfect aligner could at best give these stand-ins."""
    aspects = item.tweet.aspects
    if not aspects:
        return []
    return [
        AlignedRegion(r.region_id, a.start, a.end, r.description, r.bbox)
        for k, r in enumerate(item.regions)
        for a in [aspects[k % len(aspects)]]
    ]


GROUP = re.compile(r" \[region: <region (\d+)>[^\]]*\]")
"""One region group of an instruction as :meth:`iea.nmi.Instruction.text_only` renders it."""


def _placement(text: str) -> tuple[str, list[tuple[int, int]]]:
    """The text part of a rendered instruction without its region groups, and per group
    ``(region id, number of words before it)``, in order."""
    text = text.split("\nText:", 1)[1]
    plain, where, pos = [], [], 0
    for m in GROUP.finditer(text):
        plain += text[pos : m.start()].split()
        where.append((int(m.group(1)), len(plain)))
        pos = m.end()
    return " ".join(plain + text[pos:].split()), where


def _layout_problems(ablation: str, ins, tweet: Tweet, regions) -> list[str]:
    """What is wrong with where the instruction puts the tweet's words and its regions."""
    text = ins.text_only()
    if ablation == "no_nmi" and regions:
        text, _, appended = text.partition("\nRegions:")
        want = [(r.region_id, 0) for r in sorted(regions, key=lambda r: r.region_id)]
        _, got = _placement("\nText:" + appended)
        if got != want:
            return [f"regions after the text {got}, wanted {want}"]
    plain, where = _placement(text)
    problems = [] if plain == tweet.text else [f"the words are {plain!r}"]
    if ablation in ("full", "no_segmentation"):
        want = sorted((r.region_id, r.word_end) for r in regions)
        if sorted(where) != want:
            problems.append(f"region groups at {where}, wanted (id, phrase end) {want}")
    elif where:
        problems.append(f"region groups in the text: {where}")
    return problems


@dataclass
class Run:
    tweets: list[Tweet]
    dataset: dict[str, str]
    """Tweet id -> its dataset."""
    inputs: list
    whole: list
    aligned: list
    aligned_whole: list
    built: dict
    """``(ablation, "oracle" | "aligner") -> (examples, instructions, aligned regions)``."""
    failures: dict[str, list[str]]
    """Tweet id -> what broke for it (the stage and the error)."""
    processor: object
    train_result: object
    losses: list[float]
    rows: list[dict]
    eval_out: dict
    eval_oracle: dict
    in_process: dict


@pytest.fixture(scope="module")
def run(twitter_root, model_cache, tmp_path_factory) -> Run:
    from typer.testing import CliRunner

    from flows.cli import app
    from iea.config import load_settings
    from iea.jmasa import align_regions, jmasa_examples, predict, score_predictions, tweet_inputs
    from iea.models.finetune import FinetuneConfig, prepare_model, train
    from iea.models.refs import load_vlm
    from iea.store import open_store
    from iea.vision.interpreter import ImageInterpreter

    tmp = tmp_path_factory.mktemp("real-stages")
    settings = load_settings(
        DEMO,
        [
            f"store.root={tmp / 'store'}",
            f"runtime.model_cache={model_cache}",
            f"data.work_dir={tmp / 'work'}",
            f"fgca.work_dir={tmp / 'work' / 'fgca'}",
        ],
        env={},
    )
    rates = dict(settings.data.synthetic.distractors)
    interpreter = ImageInterpreter(settings, open_store(settings.store))

    tweets, dataset, inputs, whole = [], {}, [], []
    failures: dict[str, list[str]] = {}
    for ds in DATASETS:
        images = tmp / "images" / ds  # the two datasets' image ids are separate name spaces
        images.mkdir(parents=True)
        for tweet in _select(twitter_root, ds):
            assert tweet.id not in dataset, f"tweet id {tweet.id} in both datasets"
            assert normalize_image_id(tweet.image_id) == tweet.image_id
            path = images / tweet.image_id
            if not path.exists():
                stand_in(tweet.image_id, rates).save(path, format="JPEG", quality=90)
            try:
                (item,) = tweet_inputs([tweet], images, interpreter)
                (item_whole,) = tweet_inputs([tweet], images, interpreter, whole_image=True)
            except Exception as e:  # noqa: BLE001 - collected per tweet, asserted below
                failures[tweet.id] = [f"[{ds}] {tweet.text}", f"interpretation: {e!r}"]
                continue
            tweets.append(tweet)
            dataset[tweet.id] = ds
            inputs.append(item)
            whole.append(item_whole)

    model, processor = load_vlm("tiny-qwen3-vl", device="cpu", cache=model_cache)
    # The untrained aligner writes junk to the token limit for every region; 8 tokens are
    # enough junk to decode (the answer path is the same) at a third of the demo's 24.
    aligned = align_regions(model, processor, inputs, max_new_tokens=8, batch_size=16)
    aligned_whole = align_regions(model, processor, whole, max_new_tokens=8, batch_size=16)
    oracle = [_oracle(i) for i in inputs]
    oracle_whole = [_oracle(i) for i in whole]

    built = {}
    for ablation in RUN:
        items = whole if ablation == "no_segmentation" else inputs
        for how, regions in (
            ("oracle", oracle_whole if ablation == "no_segmentation" else oracle),
            ("aligner", aligned_whole if ablation == "no_segmentation" else aligned),
        ):
            built[ablation, how] = (*jmasa_examples(items, regions, ablation=ablation), regions)

    # one short fine-tuning on the full instructions (regions on their phrases), both datasets
    examples = built["full", "oracle"][0]
    half = N_TRAIN // 2
    train_set = []
    for ds in DATASETS:
        ours = [e for e, tw in zip(examples, tweets, strict=True) if dataset[tw.id] == ds]
        train_set += ours[:half]
    cfg = FinetuneConfig(
        epochs=1,
        mode="full",
        learning_rate=settings.jmasa.train.learning_rate,
        batch_size=TRAIN_BATCH,
        seed=0,
    )
    model, processor = load_vlm("tiny-qwen3-vl", device="cpu", cache=model_cache)
    model = prepare_model(model, cfg)
    losses: list[float] = []
    model, result = train(
        model,
        processor,
        train_set,
        cfg,
        out_dir=tmp / "jmasa",
        log=lambda metrics, step: losses.append(metrics["train.loss"]),
    )

    rows = predict(model, processor, examples, tweets, max_new_tokens=16, batch_size=16)
    gold_path, pred_path, oracle_path = tmp / "GOLD.jsonl", tmp / "PRED.jsonl", tmp / "ORACLE.jsonl"
    gold_path.write_text("".join(tw.dumps() + "\n" for tw in tweets), encoding="utf-8")
    pred_path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    # the targets as a model's raw text: ``iea eval`` parses them itself
    oracle_path.write_text(
        "".join(
            json.dumps({"id": tw.id, "output": ex.target}, ensure_ascii=False) + "\n"
            for tw, ex in zip(tweets, examples, strict=True)
        ),
        encoding="utf-8",
    )
    runner = CliRunner()
    outs = []
    for pred in (pred_path, oracle_path):
        res = runner.invoke(app, ["eval", "--gold", str(gold_path), "--pred", str(pred)])
        assert res.exit_code == 0, res.output
        outs.append(json.loads(res.stdout))
    return Run(
        tweets,
        dataset,
        inputs,
        whole,
        aligned,
        aligned_whole,
        built,
        failures,
        processor,
        result,
        losses,
        rows,
        outs[0],
        outs[1],
        score_predictions(rows, tweets),
    )


def _describe(run: Run, problems: dict[str, list[str]]) -> str:
    by_id = {t.id: t for t in run.tweets}
    lines = []
    for tid, what in list(problems.items())[:SHOWN]:
        head = f"[{run.dataset[tid]}] {by_id[tid].text}" if tid in by_id else ""
        lines.append(f"{tid} {head}\n    " + "\n    ".join(what))
    return f"{len(problems)} tweets:\n" + "\n".join(lines)


def test_every_selected_tweet_passes_interpretation(run):
    assert run.failures == {}, _describe(run, run.failures)
    for ds in DATASETS:
        n = sum(d == ds for d in run.dataset.values())
        assert n >= FIRST, f"{ds}: only {n} tweets"
    # the stand-ins are scenes of the world the tiny SAM learnt: it keeps regions in most
    with_regions = sum(bool(i.regions) for i in run.inputs)
    assert with_regions >= 0.8 * len(run.inputs), f"{with_regions} of {len(run.inputs)}"
    for item in run.inputs + run.whole:
        for r in item.regions:
            assert r.description.strip(), f"{item.tweet.id}: region {r.region_id} has no E"
            x, y, w, h = r.bbox
            assert w > 0 and h > 0 and x + w <= item.image.width and y + h <= item.image.height
    for item in run.whole:
        assert [r.region_id for r in item.regions] == [0]
        assert item.regions[0].crop.size == item.image.size


def test_alignments_are_spans_of_the_tweet(run):
    """Whatever the untrained aligner answers, what comes out are valid spans of kept regions."""
    asked = 0
    for items, aligned in ((run.inputs, run.aligned), (run.whole, run.aligned_whole)):
        assert len(aligned) == len(items)
        for item, regions in zip(items, aligned, strict=True):
            kept = {r.region_id for r in item.regions}
            asked += len(kept)
            n = len(item.tweet.tokens)
            for r in regions:
                assert r.region_id in kept
                assert 0 <= r.word_start < r.word_end <= n, (item.tweet.id, r)
    assert asked >= len(run.inputs)


def test_every_instruction_round_trips_to_its_gold_pairs(run):
    """Every tweet, every ablation, oracle and aligner regions: the target is the gold."""
    from iea.metrics import parse_prediction

    tok = run.processor.tokenizer
    problems: dict[str, list[str]] = {}
    for (ablation, how), (examples, instructions, aligned) in run.built.items():
        items = run.whole if ablation == "no_segmentation" else run.inputs
        assert len(examples) == len(instructions) == len(aligned) == len(run.tweets)
        for item, ex, ins, regions in zip(items, examples, instructions, aligned, strict=True):
            tweet, bad = item.tweet, []
            if ex.key != tweet.id or ins.tweet_id != tweet.id:
                bad.append(f"keys {ex.key} / {ins.tweet_id}")
            if not ex.target or ex.target != ins.target:
                bad.append(f"target {ex.target!r} / {ins.target!r}")
            p = parse_prediction(ex.target, tweet.tokens)
            if not p.parsed or p.unmatched or tuple(sorted(p.aspects)) != tweet.aspects:
                bad.append(f"{ex.target!r} -> {p.aspects} (unmatched {p.unmatched})")
            bad += _layout_problems(ablation, ins, tweet, regions)
            n_images = sum(c.get("type") == "image" for c in ex.content)
            want = 0 if ablation == "text_only" else 1 + len(ins.region_ids)
            if n_images != len(ex.images) or n_images != want:
                bad.append(f"{n_images} image entries, {len(ex.images)} images, {want} wanted")
            kept = sorted(r.region_id for r in item.regions)
            if how == "oracle" and ablation != "text_only" and sorted(ins.region_ids) != kept:
                bad.append(f"region images {ins.region_ids}, kept regions {kept}")
            if tok.decode(tok(ex.target, add_special_tokens=False)["input_ids"]) != ex.target:
                bad.append("the tokenizer does not write the target back")
            if bad:
                problems.setdefault(tweet.id, []).extend(f"{ablation}/{how}: {b}" for b in bad)
    assert problems == {}, _describe(run, problems)
    # the full instructions carry regions next to their phrases
    ids = [ins.region_ids for ins in run.built["full", "oracle"][1]]
    assert sum(bool(r) for r in ids) >= 0.8 * len(ids)


def test_the_hard_kinds_are_all_there(run):
    """The tweets above hold every kind of content the stages have to survive."""
    seen = {k: [t.id for t in run.tweets if k in _kinds(t)] for k in KINDS}
    missing = [k for k, ids in seen.items() if not ids]
    assert missing == [], f"no selected tweet has {missing}"
    assert max(len(t.tokens) for t in run.tweets) >= 35


def test_one_fine_tuning_and_iea_eval_count_every_tweet(run):
    res = run.train_result
    assert res.steps == math.ceil(N_TRAIN / TRAIN_BATCH) and res.epochs == 1
    assert res.train_examples_seen == N_TRAIN
    assert len(run.losses) == res.steps and all(math.isfinite(x) for x in run.losses)

    assert [r["id"] for r in run.rows] == [t.id for t in run.tweets]
    n_gold = sum(len(t.aspects) for t in run.tweets)
    for out in (run.eval_out, run.eval_oracle):
        assert {"jmasa", "mate", "masc", "masc_joint"} <= set(out)
        assert out["tweets"] == len(run.tweets)
        assert out["jmasa"]["gold"] == out["mate"]["gold"] == n_gold
    # the CLI scores the prediction file as the training run scores its rows
    for task in ("jmasa", "mate"):
        for k in ("p", "r", "f1"):
            assert run.eval_out[task][k] == pytest.approx(run.in_process[f"{task}_{k}"])
    # the targets as raw model text, parsed by ``iea eval``: oracle F1 1.0
    oracle = run.eval_oracle
    assert oracle["jmasa"]["f1"] == 1.0 and oracle["mate"]["f1"] == 1.0
    assert oracle["masc"]["acc"] == 1.0 and oracle["masc_joint"]["acc"] == 1.0
    assert oracle["unmatched"] == 0 and oracle["unparsed"] == 0
