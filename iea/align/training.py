"""Aligner data and evaluation: FGCA records -> engine examples with their images, span accuracy.

Each FGCA record becomes one example ``[I, R, E, T] -> "start-end: words"``
(:func:`iea.align.aligner.example_from_fgca`): the whole PASCAL-Context image, the masked crop of
the record's class region (pixels outside the class gray, as the interpreter crops regions),
the description and the text. Negatives teach "no phrase": with probability ``negatives`` a
record also yields its region paired with the text of another image of the same split that does
not mention the region's class, target :data:`iea.align.aligner.NO_PHRASE`
(:func:`negative_pairs`, seeded).

Dev selection scores the same two kinds of rows on the val split (its negatives drawn the same
seeded way from val texts): :func:`alignment_scores` counts a negative right only when the answer
names no phrase, so a model that aligns every region to some phrase is not selected for it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from iea.align.aligner import (
    NO_PHRASE,
    AlignedSpan,
    AlignerExample,
    decode_answer,
    example_for_region,
    example_from_fgca,
    span_accuracy,
)
from iea.align.records import FgcaRecord
from iea.data.images import load_rgb
from iea.data.regions import region_crop
from iea.models.finetune import Example, PromptCache, generate
from iea.nmi import ImagePart
from iea.vision.segment import Region


class PascalImages:
    """Whole images and class-region crops of a PASCAL-Context root, loaded once per image."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _load(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        if image_id not in self._cache:
            from iea.data.pascal_context import IMAGE_DIR, LABEL_DIR, load_label_map

            rgb = load_rgb(self.root / IMAGE_DIR / f"{image_id}.jpg")
            label_map = load_label_map(self.root / LABEL_DIR / f"{image_id}.mat")
            if isinstance(label_map, str):
                raise ValueError(label_map)
            self._cache[image_id] = (rgb, label_map)
        return self._cache[image_id]

    def image(self, image_id: str) -> Image.Image:
        return Image.fromarray(self._load(image_id)[0])

    def crop(self, image_id: str, class_id: int, bbox: Sequence[int]) -> Image.Image:
        rgb, label_map = self._load(image_id)
        x, y, w, h = (int(v) for v in bbox)
        region = Region(class_id, (x, y, w, h), w * h, 1.0, 1.0, False)
        return Image.fromarray(region_crop(rgb, label_map, region))


def _engine_example(ex: AlignerExample, whole: Image.Image, crop: Image.Image) -> Example:
    content, images = [], []
    for part in ex.parts:
        if isinstance(part, ImagePart):
            content.append({"type": "image"})
            images.append(whole if part.kind == "image" else crop)
        else:
            content.append({"type": "text", "text": part.text})
    return Example(ex.key, tuple(content), tuple(images), ex.target)


def negative_pairs(
    records: Sequence[FgcaRecord], negatives: float, seed: int
) -> list[tuple[int, str]]:
    """The seeded negatives of FGCA ``records`` (one split): ``(i, other_image_id)`` pairs.

    For each record ``i`` in order, with probability ``negatives``, the text of another image of
    ``records`` whose classes do not include the record's phrase (case-insensitive) is drawn,
    uniformly among such images in sorted id order. Records with no such image get none.
    Depends only on ``(records, negatives, seed)``: training rows and dev rows are built alike.

    Returns:
        At most one pair per record, in increasing ``i``.

    Raises:
        ValueError: ``negatives`` outside [0, 1].
    """
    if not 0.0 <= negatives <= 1.0:
        raise ValueError(f"negatives must be in [0, 1], got {negatives!r}")
    rng = random.Random(seed)
    classes: dict[str, set[str]] = {}
    for r in records:
        classes.setdefault(r.image_id, set()).add(r.phrase.lower())
    pairs = []
    for i, r in enumerate(records):
        if negatives and rng.random() < negatives:
            others = [o for o in classes if o != r.image_id and r.phrase.lower() not in classes[o]]
            if others:
                pairs.append((i, rng.choice(sorted(others))))
    return pairs


def _texts(records: Sequence[FgcaRecord]) -> dict[str, str]:
    return {r.image_id: r.text for r in records}


def _negative(record: FgcaRecord, other: str, text: str) -> AlignerExample:
    """``record``'s region with the text of image ``other``; target NO_PHRASE."""
    neg = example_for_region(text.split(), record.image_id, record.region_id, record.description)
    return replace(neg, target=NO_PHRASE, key=f"{neg.key}~{other}")


def fgca_examples(
    records: Sequence[FgcaRecord],
    images: PascalImages,
    *,
    negatives: float = 0.0,
    seed: int = 0,
) -> list[Example]:
    """Engine examples of FGCA ``records``, each followed by its negative when
    :func:`negative_pairs` draws one (see the module docstring).

    Raises:
        ValueError: a record whose span does not hold its phrase (named), an image whose
            label map cannot be read, or ``negatives`` outside [0, 1].
    """
    paired = dict(negative_pairs(records, negatives, seed))
    texts = _texts(records)
    out = []
    for i, r in enumerate(records):
        whole, crop = images.image(r.image_id), images.crop(r.image_id, r.class_id, r.bbox)
        out.append(_engine_example(example_from_fgca(r), whole, crop))
        if i in paired:
            other = paired[i]
            out.append(_engine_example(_negative(r, other, texts[other]), whole, crop))
    return out


def alignment_scores(
    predictions: Sequence[AlignedSpan | None], gold: Sequence[tuple[int, int] | None]
) -> dict[str, float]:
    """Scores of decoded aligner answers against gold word spans (None: a negative, whose only
    right answer is no phrase; an undecodable answer counts as no phrase, as downstream).

    Returns:
        ``{"exact_acc": share of all items right (spans equal, or both None),
        "span_acc": the same over positives only, "false_alignment_rate": share of negatives
        answered with a phrase, "positives": count, "negatives": count}``; a share over no
        items is 0.0.

    Raises:
        ValueError: the two sequences differ in length.
    """
    if len(predictions) != len(gold):
        raise ValueError(f"{len(predictions)} predictions for {len(gold)} gold spans")
    pos = [(p, g) for p, g in zip(predictions, gold, strict=True) if g is not None]
    neg = [p for p, g in zip(predictions, gold, strict=True) if g is None]
    return {
        "exact_acc": span_accuracy(predictions, gold),
        "span_acc": span_accuracy([p for p, _ in pos], [g for _, g in pos]),
        "false_alignment_rate": sum(p is not None for p in neg) / len(neg) if neg else 0.0,
        "positives": len(pos),
        "negatives": len(neg),
    }


def evaluate_aligner(
    model: Any,
    processor: Any,
    records: Sequence[FgcaRecord],
    images: PascalImages,
    *,
    negatives: float = 0.0,
    seed: int = 0,
    max_new_tokens: int = 24,
    batch_size: int = 8,
    cache: PromptCache | None = None,
) -> dict[str, Any]:
    """Score the aligner on FGCA ``records`` (positives) and on their seeded negatives
    (:func:`negative_pairs` with ``negatives`` and ``seed``, texts of the same records);
    ``cache`` keeps the prompts' encodings for the next call (:func:`dev_evaluator`).

    Returns:
        :func:`alignment_scores` plus ``"valid"`` (share of positives' answers that decode)
        and ``"answers"`` (the generated texts: positives in record order, then negatives).
    """
    texts = _texts(records)
    rows: list[tuple[AlignerExample, FgcaRecord, list[str], tuple[int, int] | None]] = [
        (example_from_fgca(r), r, r.text.split(), (r.word_start, r.word_end)) for r in records
    ]
    for i, other in negative_pairs(records, negatives, seed):
        r = records[i]
        rows.append((_negative(r, other, texts[other]), r, texts[other].split(), None))
    examples = [
        _engine_example(
            replace(ex, target=""),
            images.image(r.image_id),
            images.crop(r.image_id, r.class_id, r.bbox),
        )
        for ex, r, _, _ in rows
    ]
    answers = generate(
        model,
        processor,
        examples,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        cache=cache,
    )
    decoded = [decode_answer(a, toks) for a, (_, _, toks, _) in zip(answers, rows, strict=True)]
    gold = [g for *_, g in rows]
    positives = [d for d, g in zip(decoded, gold, strict=True) if g is not None]
    return {
        **alignment_scores(decoded, gold),
        "valid": sum(d is not None for d in positives) / max(1, len(positives)),
        "answers": answers,
    }


DEV_SELECT = "exact_acc"
"""The dev metric the aligner's best epoch is selected on (:func:`alignment_scores`)."""
DEV_METRICS: tuple[str, ...] = ("exact_acc", "span_acc", "false_alignment_rate", "valid")
"""The dev metrics reported per epoch."""


def dev_evaluator(
    processor: Any,
    splits: Mapping[str, Sequence[FgcaRecord]],
    images: PascalImages,
    *,
    negatives: float,
    seed: int,
    max_new_tokens: int = 24,
    batch_size: int = 8,
) -> Callable[[Any], dict[str, float]] | None:
    """The engine's per-epoch ``evaluate`` for aligner dev selection, or None.

    It scores the ``"val"`` split only: its positives plus its negatives drawn like training's
    (``negatives``, ``seed``, val texts), returning :data:`DEV_METRICS`; select on
    :data:`DEV_SELECT`. Without val rows there is no dev selection (None: train and keep the
    last epoch); the test split is never read here, so no selection sees it.
    """
    dev = list(splits.get("val") or [])
    if not dev:
        return None
    prompts = PromptCache()  # the same prompts every epoch: encoded once

    def evaluate(model: Any) -> dict[str, float]:
        r = evaluate_aligner(
            model,
            processor,
            dev,
            images,
            negatives=negatives,
            seed=seed,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            cache=prompts,
        )
        return {k: float(r[k]) for k in DEV_METRICS}

    return evaluate
