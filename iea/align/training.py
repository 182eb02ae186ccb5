"""Aligner data and evaluation: FGCA records -> engine examples with their images, span accuracy.

Each FGCA record becomes one example ``[I, R, E, T] -> "start-end: words"``
(:func:`iea.align.aligner.example_from_fgca`): the whole PASCAL-Context image, the masked crop of
the record's class region (pixels outside the class gray, as the interpreter crops regions),
the description and the text. Negatives teach "no phrase": with probability ``negatives`` a
record also yields its region paired with the text of another image of the same split that does
not mention the region's class, target :data:`iea.align.aligner.NO_PHRASE`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from iea.align.aligner import (
    NO_PHRASE,
    AlignerExample,
    decode_answer,
    example_for_region,
    example_from_fgca,
    span_accuracy,
)
from iea.align.records import FgcaRecord
from iea.data.images import load_rgb
from iea.models.finetune import Example, generate
from iea.nmi import ImagePart
from iea.vision.interpret import region_crop
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


def fgca_examples(
    records: Sequence[FgcaRecord],
    images: PascalImages,
    *,
    negatives: float = 0.0,
    seed: int = 0,
) -> list[Example]:
    """Engine examples of FGCA ``records`` (plus seeded negatives, see the module docstring).

    Raises:
        ValueError: a record whose span does not hold its phrase (named), or an image whose
            label map cannot be read.
    """
    if not 0.0 <= negatives <= 1.0:
        raise ValueError(f"negatives must be in [0, 1], got {negatives!r}")
    rng = random.Random(seed)
    texts: dict[str, str] = {}
    classes: dict[str, set[str]] = {}
    for r in records:
        texts[r.image_id] = r.text
        classes.setdefault(r.image_id, set()).add(r.phrase.lower())
    out = []
    for r in records:
        whole, crop = images.image(r.image_id), images.crop(r.image_id, r.class_id, r.bbox)
        out.append(_engine_example(example_from_fgca(r), whole, crop))
        if negatives and rng.random() < negatives:
            others = [i for i in texts if i != r.image_id and r.phrase.lower() not in classes[i]]
            if others:
                other = rng.choice(sorted(others))
                neg = example_for_region(
                    texts[other].split(), r.image_id, r.region_id, r.description
                )
                neg = replace(neg, target=NO_PHRASE, key=f"{neg.key}~{other}")
                out.append(_engine_example(neg, whole, crop))
    return out


def evaluate_aligner(
    model: Any,
    processor: Any,
    records: Sequence[FgcaRecord],
    images: PascalImages,
    *,
    max_new_tokens: int = 24,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Exact word-span accuracy of the aligner on FGCA ``records`` (and the answers).

    Returns:
        ``{"span_acc": float, "valid": share of answers that decode, "answers": [str]}``.
    """
    examples = [
        _engine_example(
            replace(example_from_fgca(r), target=""),
            images.image(r.image_id),
            images.crop(r.image_id, r.class_id, r.bbox),
        )
        for r in records
    ]
    answers = generate(
        model, processor, examples, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    decoded = [decode_answer(a, r.text.split()) for a, r in zip(answers, records, strict=True)]
    gold = [(r.word_start, r.word_end) for r in records]
    return {
        "span_acc": span_accuracy(decoded, gold),
        "valid": sum(d is not None for d in decoded) / max(1, len(decoded)),
        "answers": answers,
    }
