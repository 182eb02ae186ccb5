"""Segmentation ``M = Postprocess(SAM(I))``: at most L regions that partition the image.

Postprocess (the paper's rule): rank SAM's masks by predicted IoU (ties: generator order), keep
the top ``L-1``; a pixel claimed by several kept masks goes to the highest-ranked one; every pixel
no kept mask covers belongs to the background region. A kept mask left with no pixel of its own
(all claimed by higher-ranked masks) is dropped rather than emitted empty, so every region has at
least one pixel. An image with no mask is one background region.

Duplicates (``min_own_share`` > 0, not in the paper): going down the ranking, a mask is skipped
when less than ``min_own_share`` of its pixels are still unclaimed by the masks kept before it,
and the next mask takes its place. SAM's generator returns several overlapping masks of one
object (NMS keeps pairs below its IoU cut); without this, such a near-copy keeps a scatter of
leftover pixels that passes the size filter on its bounding box and is interpreted as junk,
while it pushes a real object out of the L-1. ``0`` is the paper's rule.

Region ids: the background is 0 (when it has pixels); kept masks are 1, 2, ... in rank order.
The label map holds the region id of every pixel.

The background region is not a SAM prediction: its ``predicted_iou`` and ``stability_score``
are defined as 1.0, which exempts it from the confidence filter (``t_conf``); the size and
clarity filters apply to it as to any region.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from iea.data.regions import Region
from iea.vision.masks import FastMaskGenerator

BACKGROUND_ID = 0
BACKGROUND_SCORE = 1.0
POSTPROCESS_VERSION = 2


def postprocess(
    masks: np.ndarray,
    predicted_iou: Sequence[float],
    stability_score: Sequence[float],
    num_regions: int,
    min_own_share: float = 0.0,
) -> tuple[np.ndarray, list[Region]]:
    """Apply the paper's postprocess to SAM masks.

    Args:
        masks: ``N x H x W`` bool, one binary mask per SAM proposal (N may be 0).
        predicted_iou, stability_score: length-N scores of the masks.
        num_regions: L >= 1; at most L regions come out (L-1 masks + background).
        min_own_share: in [0, 1]; skip a mask with less than this share of its pixels left
            unclaimed by better-ranked kept masks (see the module docstring; 0 = the paper).

    Returns:
        ``(label_map, regions)``: ``H x W`` int32 region ids, and the regions sorted by id.
    """
    if num_regions < 1:
        raise ValueError(f"num_regions must be >= 1, got {num_regions}")
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be N x H x W, got shape {masks.shape}")
    iou = np.asarray(predicted_iou, dtype=np.float64)
    stab = np.asarray(stability_score, dtype=np.float64)
    if len(iou) != len(masks) or len(stab) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(iou)} IoU and {len(stab)} stability scores")
    if not 0.0 <= min_own_share <= 1.0:
        raise ValueError(f"min_own_share must be in [0, 1], got {min_own_share}")
    height, width = masks.shape[1:]
    ranking = np.argsort(-iou, kind="stable")
    if min_own_share > 0:
        claimed = np.zeros((height, width), dtype=bool)
        chosen = []
        for k in ranking:
            if len(chosen) == num_regions - 1:
                break
            area = int(masks[k].sum())
            own = int((masks[k] & ~claimed).sum())
            if area and own >= min_own_share * area:
                chosen.append(k)
                claimed |= masks[k]
        order = np.array(chosen, dtype=np.int64)
    else:
        order = ranking[: num_regions - 1]
    ranked = np.zeros((height, width), dtype=np.int32)  # rank + 1 of the owning mask, 0 = none
    for rank in range(len(order) - 1, -1, -1):  # lower ranks first, higher ranks overwrite
        ranked[masks[order[rank]]] = rank + 1
    present = np.unique(ranked)
    remap = np.zeros(len(order) + 1, dtype=np.int32)
    kept_ranks = [r for r in present if r > 0]
    for new_id, rank in enumerate(kept_ranks, start=1):
        remap[rank] = new_id
    label_map = remap[ranked]
    scores = {new_id: order[rank - 1] for new_id, rank in enumerate(kept_ranks, start=1)}
    regions = regions_from_labels(
        label_map,
        {i: (float(iou[k]), float(stab[k])) for i, k in scores.items()},
    )
    return label_map, regions


def regions_from_labels(
    label_map: np.ndarray, scores: dict[int, tuple[float, float]]
) -> list[Region]:
    """Region records (bbox, area) for every id present in ``label_map``.

    ``scores`` maps a mask region id to ``(predicted_iou, stability_score)``; id 0 is the
    background with :data:`BACKGROUND_SCORE`.
    """
    regions = []
    areas = np.bincount(label_map.ravel())  # ids are small non-negative ints
    for rid in np.flatnonzero(areas).tolist():
        mask = label_map == rid
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        bbox = (
            int(cols[0]),
            int(rows[0]),
            int(cols[-1] - cols[0]) + 1,
            int(rows[-1] - rows[0]) + 1,
        )
        iou, stab = scores.get(rid, (BACKGROUND_SCORE, BACKGROUND_SCORE))
        regions.append(Region(rid, bbox, int(areas[rid]), iou, stab, rid == BACKGROUND_ID))
    return regions


def resize_for_sam(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale so the longer side is at most ``max_side`` pixels (area interpolation)."""
    height, width = rgb.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return rgb
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def segment_image(
    rgb: np.ndarray,
    generate: Callable[[np.ndarray], list[dict]],
    num_regions: int,
    *,
    max_side: int = 1024,
    min_side: int = 32,
    min_own_share: float = 0.0,
) -> tuple[np.ndarray, list[Region]]:
    """Segment an ``H x W x 3`` uint8 image into at most ``num_regions`` regions
    (``min_own_share``: see :func:`postprocess`).

    Images whose longer side exceeds ``max_side`` are downscaled for SAM and the label map is
    mapped back to full size (nearest neighbour). Images whose shorter side is below
    ``min_side`` pixels are too small for SAM's point grid: they are one background region.

    Args:
        generate: ``SamAutomaticMaskGenerator.generate`` (or any function of an ``h x w x 3``
            uint8 image returning its list of ``{"segmentation": h x w bool, "predicted_iou",
            "stability_score"}`` dicts); not called for images below ``min_side``.
    """
    height, width = rgb.shape[:2]
    if min(height, width) < min_side:
        return postprocess(np.zeros((0, height, width), bool), [], [], num_regions)
    small = resize_for_sam(rgb, max_side)
    anns = generate(small)
    masks = (
        np.stack([a["segmentation"] for a in anns])
        if anns
        else np.zeros((0, *small.shape[:2]), bool)
    )
    label_map, regions = postprocess(
        masks,
        [a["predicted_iou"] for a in anns],
        [a["stability_score"] for a in anns],
        num_regions,
        min_own_share,
    )
    if small.shape[:2] == (height, width):
        return label_map, regions
    # Upscaling with nearest neighbour keeps every id (each small pixel covers >= 1 big pixel).
    label_map = cv2.resize(
        label_map.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST
    ).astype(np.int32)
    scores = {r.id: (r.predicted_iou, r.stability_score) for r in regions}
    return label_map, regions_from_labels(label_map, scores)


def build_mask_generator(sam, settings) -> Any:
    """The mask generator ``settings.generator`` names (:class:`SegmentSettings` values):
    segment-anything's ``SamAutomaticMaskGenerator`` or :class:`FastMaskGenerator`."""
    from segment_anything import SamAutomaticMaskGenerator

    common = {
        "points_per_side": settings.points_per_side,
        "points_per_batch": settings.points_per_batch,
        "pred_iou_thresh": settings.pred_iou_thresh,
        "stability_score_thresh": settings.stability_score_thresh,
        "box_nms_thresh": settings.box_nms_thresh,
    }
    if settings.generator == "fast":
        return FastMaskGenerator(sam, **common)
    return SamAutomaticMaskGenerator(
        sam, min_mask_region_area=settings.min_mask_region_area, **common
    )
