"""``tiny-qwen3-vl-interp``: the tiny Qwen3-VL trained to interpret one region of the world.

It answers the interpreter's own prompt (:data:`iea.vision.prompts.INTERPRET_REGION`, as the
interpreter sends it: the masked region crop, then the text) in the interpreter's answer
format::

    Description: a green dog with dots
    Sentiment: positive
    Score: 0.80

Data: world scenes (:func:`iea.recipes.sam.scene`, with distractors at ``TRAIN["distractors"]``),
each drawn thing's crop as the interpreter cuts it (bbox crop, pixels outside the region gray,
:func:`iea.data.regions.region_crop`), and the background region (everything no object covers)
described as ``a plain background``, neutral. The masks are spoiled the ways a SAM's are, so
the model names an object from an imperfect mask: grown or shrunk by a few pixels
(``jitter_px``), cut by a random line to between half and all of the object
(``partial_share``), or joined by a far-away blob of the scene (``blob_share``). A share of the
background crops (``pascal_background_share``) come from the world's PASCAL-Context side
(:func:`iea.data.pascal_context.draw_synthetic_sample`: coloured sky, grass, road...), whose
backgrounds, holed where the objects were, would otherwise read as spotted objects. A
distractor (speck, blurred or faint copy) is described by its look like any object, ``a red dog
with dots`` with the look's sentiment, as a real VLM names a small or blurry red dog: so a
distractor the filters keep brings its misleading polarity next to its phrase. (A model never
shown distractors named the class of 5 of 39 kept ones in the demo's test split, so the aligner
left them unaligned and the filters had little to remove; EXPERIMENTS.md, session 20.)

Training: the whole model (``mode="full"``) through the project's engine
(:func:`iea.models.finetune.train`). Held-out quality: class word and polarity accuracy over
object crops of unseen scenes, and the parse rate of all answers.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from iea.data.regions import Region, region_crop
from iea.data.world import COLOUR_NAMES, WORLD_CLASSES, describe
from iea.recipes import timed, write_report

BACKGROUND_DESCRIPTION = "a plain background"
SCORES = {"POS": 0.8, "NEU": 0.0, "NEG": -0.8}
SENTIMENT_WORDS = {"POS": "positive", "NEU": "neutral", "NEG": "negative"}
TRAIN = {
    "scenes": 700,
    "epochs": 8,
    "learning_rate": 3e-3,
    "batch_size": 16,
    "warmup_steps": 20,
    "jitter_px": 3,
    "partial_share": 0.25,
    "blob_share": 0.15,
    "background_share": 0.25,
    "pascal_background_share": 0.25,
    "distractors": {"speck": 0.3, "blurred": 0.3, "faint": 0.3},
}
EVAL = {"scenes": 60, "max_new_tokens": 24}


def answer(name: str | None, polarity: str) -> str:
    """The target answer for an object of class ``name`` (None: the background region)."""
    description = BACKGROUND_DESCRIPTION if name is None else describe(name, polarity)
    return (
        f"Description: {description}\nSentiment: {SENTIMENT_WORDS[polarity]}\n"
        f"Score: {SCORES[polarity]:.2f}"
    )


def _jitter(mask: np.ndarray, rng: np.random.Generator, px: int) -> np.ndarray:
    k = int(rng.integers(-px, px + 1))
    if k == 0:
        return mask
    kernel = np.ones((2 * abs(k) + 1, 2 * abs(k) + 1), np.uint8)
    op = cv2.dilate if k > 0 else cv2.erode
    out = op(mask.astype(np.uint8), kernel).astype(bool)
    return out if out.any() else mask


def _partial(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The part of ``mask`` on one side of a random line, keeping 50-100% of its pixels."""
    ys, xs = np.nonzero(mask)
    angle = rng.uniform(0, 2 * np.pi)
    proj = xs * np.cos(angle) + ys * np.sin(angle)
    cut = np.quantile(proj, rng.uniform(0.0, 0.5))
    out = np.zeros_like(mask)
    keep = proj >= cut
    out[ys[keep], xs[keep]] = True
    return out


def _blob(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``mask`` joined by a small square blob somewhere else in the frame."""
    h, w = mask.shape
    side = int(rng.integers(4, 12))
    y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
    out = mask.copy()
    out[y : y + side, x : x + side] = True
    return out


def _spoil(mask: np.ndarray, rng: np.random.Generator, jitter: int) -> np.ndarray:
    mask = _jitter(mask, rng, jitter)
    if rng.random() < TRAIN["partial_share"]:
        mask = _partial(mask, rng)
    if rng.random() < TRAIN["blob_share"]:
        mask = _blob(mask, rng)
    return mask


def _pascal_background(seed: int, k: int) -> np.ndarray:
    """The background-class crop of synthetic PASCAL-Context image ``k`` (objects holed out)."""
    from iea.data.pascal_context import BACKGROUND_CLASSES, SYNTHETIC_LABELS, draw_synthetic_sample
    from iea.recipes.sam import _jpeg

    label_map, rgb = draw_synthetic_sample(k, seed=seed + 50_000)
    ids = [i for i, name in SYNTHETIC_LABELS.items() if name in BACKGROUND_CLASSES]
    return _crop(_jpeg(rgb), np.isin(label_map, ids))


def _crop(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    bbox = (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))
    region = Region(1, bbox, int(mask.sum()), 1.0, 1.0, False)
    return region_crop(rgb, mask.astype(np.int32), region)


def crops(seed: int, n_scenes: int, *, offset: int = 0, jitter: int = 0):
    """``[(crop H x W x 3 uint8, class name or None, polarity, kind)]`` of ``n_scenes`` scenes:
    every drawn thing with at least 50 visible pixels (``kind``: ``object`` or a distractor
    kind; its mask spoiled when ``jitter``, see the module docstring), and the background
    region (kind ``background``) of a share of the scenes."""
    from iea.recipes.sam import _jpeg, scene

    rng = np.random.default_rng([seed, offset, 7])
    out = []
    for k in range(n_scenes):
        rgb, inst, drawn = scene(seed + offset, k, TRAIN["distractors"])
        rgb = _jpeg(rgb)
        for i, thing in enumerate(drawn):
            mask = inst == i + 1
            if mask.sum() < 50:
                continue
            mask = _spoil(mask, rng, jitter) if jitter else mask
            out.append((_crop(rgb, mask), thing.name, thing.polarity, thing.kind))
        if rng.random() < TRAIN["background_share"] and (inst == 0).any():
            out.append((_crop(rgb, inst == 0), None, "NEU", "background"))
        if rng.random() < TRAIN["pascal_background_share"]:
            out.append((_pascal_background(seed + offset, k), None, "NEU", "background"))
    return out


def _examples(items, prompt: str, with_target: bool = True):
    from iea.models.finetune import Example

    return [
        Example(
            f"crop-{k}",
            ({"type": "image"}, {"type": "text", "text": prompt}),
            (Image.fromarray(c),),
            answer(name, pol) if with_target else "",
        )
        for k, (c, name, pol, _) in enumerate(items)
    ]


def evaluate_interpreter(
    model: Any, processor: Any, seed: int, scenes: int | None = None, *, spoiled: bool = False
) -> dict[str, Any]:
    """Held-out class-word and polarity accuracy of object crops (top level) and of distractor
    crops (``distractors``: what a kept distractor would bring), and the parse rate of all
    crops, on scenes the training never drew (``seed + 20_000``), answered through
    :class:`iea.models.vlm.VisionLanguageModel` exactly as the interpreter asks. With
    ``spoiled`` the masks are spoiled as in training (the masks a SAM gives), else exact."""
    from iea.models.vlm import VisionLanguageModel
    from iea.vision.interpret import parse_answer
    from iea.vision.prompts import INTERPRET_REGION

    n = EVAL["scenes"] if scenes is None else scenes
    items = crops(seed, n, offset=20_000, jitter=TRAIN["jitter_px"] if spoiled else 0)
    vlm = VisionLanguageModel(model, processor)
    answers = vlm.generate(
        [Image.fromarray(c) for c, _, _, _ in items],
        [INTERPRET_REGION] * len(items),
        max_new_tokens=EVAL["max_new_tokens"],
        batch_size=16,
    )
    parsed = [parse_answer(a) for a in answers]

    def accuracy(kinds: set[str]) -> dict[str, Any]:
        things = [
            (p, name, pol)
            for p, (_, name, pol, kind) in zip(parsed, items, strict=True)
            if kind in kinds
        ]
        words = [set(p.description.lower().split()) for p, _, _ in things]
        n = max(1, len(things))
        return {
            "class_acc": sum(
                name in w and not (w & set(WORLD_CLASSES)) - {name}
                for w, (_, name, _) in zip(words, things, strict=True)
            )
            / n,
            "polarity_acc": sum(p.polarity == pol for p, _, pol in things) / n,
            "colour_word_acc": sum(
                COLOUR_NAMES[pol] in w for w, (_, _, pol) in zip(words, things, strict=True)
            )
            / n,
            "count": len(things),
        }

    objects = accuracy({"object"})
    return {
        "crops": len(items),
        "objects": objects.pop("count"),
        "parse_rate": sum(p.parsed for p in parsed) / max(1, len(parsed)),
        **objects,
        "distractors": accuracy({"speck", "blurred", "faint"}),
        "examples": answers[:3],
    }


def build(path: str | Path, seed: int, log=None) -> Path:
    """Build ``tiny-qwen3-vl`` for ``seed``, train it fully on region crops, save it (weights,
    processor) into ``path`` with ``train_report.json``."""
    from iea.models.finetune import FinetuneConfig, prepare_model, train
    from iea.models.refs import load_vlm
    from iea.models.tiny import build_tiny_qwen3_vl
    from iea.vision.prompts import INTERPRET_REGION

    path = Path(path)
    base = Path(tempfile.mkdtemp(prefix="interp-base-"))
    work = Path(tempfile.mkdtemp(prefix="interp-train-"))
    try:
        build_tiny_qwen3_vl(base, seed)
        model, processor = load_vlm(str(base), device="cpu", dtype="float32")
        items, data_s = timed(lambda: crops(seed, TRAIN["scenes"], jitter=TRAIN["jitter_px"]))
        examples = _examples(items, INTERPRET_REGION)
        cfg = FinetuneConfig(
            epochs=TRAIN["epochs"],
            learning_rate=TRAIN["learning_rate"],
            batch_size=TRAIN["batch_size"],
            mode="full",
            warmup_steps=TRAIN["warmup_steps"],
            seed=seed,
        )
        model = prepare_model(model, cfg)

        def progress(metrics: dict[str, float], step: int) -> None:
            if log is not None and step % 50 == 0 and "train.loss" in metrics:
                log(f"tiny-qwen3-vl-interp: step {step} loss {metrics['train.loss']:.3f}")

        (model, result), train_s = timed(
            lambda: train(model, processor, examples, cfg, out_dir=work, log=progress)
        )
        model.eval()
        heldout, eval_s = timed(lambda: evaluate_interpreter(model, processor, seed))
        spoiled = evaluate_interpreter(model, processor, seed, spoiled=True)
        heldout["spoiled_masks"] = {k: v for k, v in spoiled.items() if k != "examples"}
        path.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(path)
        processor.save_pretrained(path)
        write_report(
            path,
            {
                "model": "tiny-qwen3-vl-interp",
                "seed": seed,
                "train": {
                    **TRAIN,
                    "examples": len(examples),
                    "steps": result.steps,
                    "data_seconds": round(data_s, 1),
                    "train_seconds": round(train_s, 1),
                    "final_loss": result.history[-1]["loss"] if result.history else None,
                },
                "heldout": {**heldout, "seconds": round(eval_s, 1)},
            },
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return path
