"""Region filters: drop a region that is too small, too blurry or too uncertain.

The per-region features are computed once (:func:`laplacian_variances`, SAM's scores, the
bbox); a threshold trial is then a few vectorised comparisons over arrays
(:func:`keep_mask`), microseconds for any realistic number of regions.

Clarity is ``Var(Laplacian(gray))`` over one region, exactly:

* gray = OpenCV ``COLOR_RGB2GRAY`` of the whole image (uint8, 0..255);
* Laplacian = ``cv2.Laplacian(gray, CV_64F, ksize=1)`` (the 3x3 kernel
  ``[[0,1,0],[1,-4,1],[0,1,0]]``) computed on the whole image;
* the pixels that count are the region's *interior*: its pixels whose whole 3x3 neighbourhood
  lies in the region (the mask eroded by a 3x3 square), so the edge between two regions is
  not counted as texture of either. A region with no interior pixel (a line, a speck) uses all
  of its pixels;
* the variance is the population variance (``numpy.var``) of those Laplacian values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from iea.vision.segment import Region

REASONS: tuple[str, ...] = ("too_small", "blurry", "low_confidence")


@dataclass(frozen=True)
class Thresholds:
    """``t_size`` in pixels, ``t_clarity`` in Laplacian variance units, ``t_conf`` in [0, 1]."""

    t_size: float
    t_clarity: float
    t_conf: float


@dataclass(frozen=True)
class RegionFeatures:
    """Struct of arrays over R regions: bbox ``width``/``height`` (px), ``laplacian_var``,
    ``predicted_iou`` (each shape ``(R,)``)."""

    width: np.ndarray
    height: np.ndarray
    laplacian_var: np.ndarray
    predicted_iou: np.ndarray

    @classmethod
    def of(cls, regions: Sequence[Region]) -> RegionFeatures:
        return cls(
            np.array([r.bbox[2] for r in regions], dtype=np.float64),
            np.array([r.bbox[3] for r in regions], dtype=np.float64),
            np.array([r.laplacian_var for r in regions], dtype=np.float64),
            np.array([r.predicted_iou for r in regions], dtype=np.float64),
        )


def drop_flags(f: RegionFeatures, t: Thresholds) -> np.ndarray:
    """``(R, 3)`` bool: column k is True when the region fails check ``REASONS[k]``."""
    return np.stack(
        [
            np.minimum(f.width, f.height) < t.t_size,
            f.laplacian_var < t.t_clarity,
            f.predicted_iou < t.t_conf,
        ],
        axis=1,
    )


def keep_mask(f: RegionFeatures, t: Thresholds) -> np.ndarray:
    """``(R,)`` bool: the regions that pass every filter."""
    return ~drop_flags(f, t).any(axis=1)


def drop_reasons(f: RegionFeatures, t: Thresholds) -> list[list[str]]:
    """For each region, the names of the checks it fails (empty = kept)."""
    return [[REASONS[k] for k in np.flatnonzero(row)] for row in drop_flags(f, t)]


def laplacian_variances(
    rgb: np.ndarray, label_map: np.ndarray, regions: Sequence[Region]
) -> list[float]:
    """Clarity of each region (see the module docstring for which pixels count).

    Args:
        rgb: ``H x W x 3`` uint8 image.
        label_map: ``H x W`` int region ids.
        regions: the regions to score (their ``id`` and ``bbox`` are used).
    """
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    lap = cv2.Laplacian(gray, cv2.CV_64F, ksize=1)
    kernel = np.ones((3, 3), np.uint8)
    out = []
    for region in regions:
        # Work inside the bbox: the region has no pixel outside it, and a pixel on the bbox
        # edge whose neighbour lies outside is not interior either way.
        x, y, w, h = region.bbox
        mask = (label_map[y : y + h, x : x + w] == region.id).astype(np.uint8)
        window = lap[y : y + h, x : x + w]
        interior = cv2.erode(mask, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        # Pixels on the image border have no full neighbourhood in the image; OpenCV's Laplacian
        # reflects there, and the constant-0 erosion border leaves them out of the interior.
        pick = interior.astype(bool) if interior.any() else mask.astype(bool)
        values = window[pick]
        out.append(float(values.var()) if values.size else 0.0)
    return out
