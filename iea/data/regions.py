"""The region record shared by segmentation (:mod:`iea.vision.segment`) and the PASCAL-Context
reader (:mod:`iea.data.pascal_context`): a plain record, so ``iea.data`` depends on nothing of
ours."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

OUTSIDE_GRAY = 128
"""Pixel value (all channels) of a region crop outside its region."""
MAX_ASPECT = 20
"""Crops longer than this times their width (or vice versa) are padded with gray: VLM image
processors reject extreme aspect ratios (Qwen3-VL's above 200)."""


@dataclass(frozen=True)
class Region:
    """One region of an image (pixel units of the original, EXIF-upright image).

    ``bbox`` is ``[x, y, w, h]`` (XYWH, top-left origin, inclusive extent ``w x h``);
    ``area`` is the number of pixels; ``laplacian_var`` is filled in by
    :func:`iea.vision.filters.laplacian_variances`.
    """

    id: int
    bbox: tuple[int, int, int, int]
    area: int
    predicted_iou: float
    stability_score: float
    is_background: bool
    laplacian_var: float = 0.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["bbox"] = list(self.bbox)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Region:
        return cls(**{**d, "bbox": tuple(d["bbox"])})


def region_crop(rgb: np.ndarray, label_map: np.ndarray, region: Region) -> np.ndarray:
    """The ``h x w x 3`` uint8 bbox crop of ``region`` with outside pixels set to gray."""
    x, y, w, h = region.bbox
    crop = rgb[y : y + h, x : x + w].copy()
    crop[label_map[y : y + h, x : x + w] != region.id] = OUTSIDE_GRAY
    return pad_to_aspect(crop, MAX_ASPECT)


def pad_to_aspect(crop: np.ndarray, max_aspect: float) -> np.ndarray:
    """Pad the short side of an ``h x w x 3`` crop with gray (centred) so that
    ``max(h, w) / min(h, w) <= max_aspect``."""
    h, w = crop.shape[:2]
    if max(h, w) <= max_aspect * min(h, w):
        return crop
    if h < w:
        new_h = int(np.ceil(w / max_aspect))
        top = (new_h - h) // 2
        return np.pad(crop, ((top, new_h - h - top), (0, 0), (0, 0)), constant_values=OUTSIDE_GRAY)
    new_w = int(np.ceil(h / max_aspect))
    left = (new_w - w) // 2
    return np.pad(crop, ((0, 0), (left, new_w - w - left), (0, 0)), constant_values=OUTSIDE_GRAY)
