"""Property tests of the paper's postprocess over random masks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from iea.vision.segment import BACKGROUND_SCORE, postprocess, resize_for_sam


@st.composite
def mask_sets(draw):
    n = draw(st.integers(0, 8))
    h = draw(st.integers(1, 12))
    w = draw(st.integers(1, 12))
    masks = draw(arrays(np.bool_, (n, h, w)))
    iou = draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
    stab = draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
    num_regions = draw(st.integers(1, 7))
    return masks, iou, stab, num_regions


@settings(max_examples=300, deadline=None)
@given(mask_sets())
def test_regions_partition_the_image(case):
    masks, iou, stab, num_regions = case
    label_map, regions = postprocess(masks, iou, stab, num_regions)
    assert label_map.shape == masks.shape[1:]
    ids = [r.id for r in regions]
    assert sorted(ids) == sorted(np.unique(label_map).tolist())  # every pixel in exactly one region
    assert len(regions) <= num_regions
    assert sum(r.area for r in regions) == label_map.size
    for r in regions:
        ys, xs = np.nonzero(label_map == r.id)
        assert r.area == len(xs) > 0
        assert r.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


@settings(max_examples=300, deadline=None)
@given(mask_sets())
def test_ranking_rule(case):
    masks, iou, stab, num_regions = case
    label_map, regions = postprocess(masks, iou, stab, num_regions)
    order = list(np.argsort(-np.asarray(iou, dtype=float), kind="stable")[: num_regions - 1])
    # Recompute the owner of each pixel: the highest-ranked kept mask covering it, else background.
    expected_owner = np.full(label_map.shape, -1)
    for k in reversed(order):
        expected_owner[masks[k]] = k
    owners = sorted({int(k) for k in np.unique(expected_owner) if k >= 0}, key=order.index)
    for new_id, k in enumerate(owners, start=1):
        assert ((expected_owner == k) == (label_map == new_id)).all()
        region = next(r for r in regions if r.id == new_id)
        assert region.predicted_iou == iou[k] and not region.is_background
    assert ((expected_owner == -1) == (label_map == 0)).all()
    background = [r for r in regions if r.is_background]
    assert all(r.id == 0 and r.predicted_iou == BACKGROUND_SCORE for r in background)


def test_hand_made_example():
    masks = np.zeros((3, 4, 4), bool)
    masks[0, :2, :] = True  # iou 0.5
    masks[1, :, :2] = True  # iou 0.9 -> rank 1, wins the overlap
    masks[2, 3, 3] = True  # iou 0.1 -> beyond L-1 = 2 masks, its pixel goes to background
    label_map, regions = postprocess(masks, [0.5, 0.9, 0.1], [1, 1, 1], num_regions=3)
    assert label_map.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [1, 1, 0, 0], [1, 1, 0, 0]]
    assert [(r.id, r.area, r.predicted_iou) for r in regions] == [
        (0, 4, 1.0),
        (1, 8, 0.9),
        (2, 4, 0.5),
    ]


def test_near_copies_give_their_place_to_the_next_mask():
    masks = np.zeros((3, 4, 4), bool)
    masks[0, :, :2] = True  # iou 0.9 -> kept first
    masks[1, :, :3] = True  # iou 0.8: 4 of its 12 pixels unclaimed (1/3) -> a near-copy
    masks[2, 3, 3] = True  # iou 0.1 -> takes the near-copy's place
    label_map, regions = postprocess(masks, [0.9, 0.8, 0.1], [1, 1, 1], 3, min_own_share=0.5)
    assert label_map.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 2]]
    assert [(r.id, r.area, r.predicted_iou) for r in regions] == [
        (0, 7, 1.0),
        (1, 8, 0.9),
        (2, 1, 0.1),
    ]
    # the paper's rule (0) keeps the near-copy with its leftover column
    label_map, _ = postprocess(masks, [0.9, 0.8, 0.1], [1, 1, 1], 3)
    assert label_map[:, 2].tolist() == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="min_own_share"):
        postprocess(masks, [0.9, 0.8, 0.1], [1, 1, 1], 3, min_own_share=1.5)


def test_no_masks_is_one_background_region():
    label_map, regions = postprocess(np.zeros((0, 3, 5), bool), [], [], 5)
    assert (label_map == 0).all() and len(regions) == 1 and regions[0].bbox == (0, 0, 5, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_regions"):
        postprocess(np.zeros((0, 2, 2), bool), [], [], 0)
    with pytest.raises(ValueError, match="2 masks but 1 IoU"):
        postprocess(np.zeros((2, 2, 2), bool), [0.1], [0.1, 0.2], 3)


def test_resize_for_sam_keeps_aspect():
    small = resize_for_sam(np.zeros((4000, 6000, 3), np.uint8), 1024)
    assert small.shape == (683, 1024, 3)
    same = np.zeros((10, 20, 3), np.uint8)
    assert resize_for_sam(same, 1024) is same
