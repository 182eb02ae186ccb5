import cv2
import numpy as np

from iea.vision.filters import RegionFeatures, Thresholds, drop_reasons, keep_mask
from iea.vision.filters import laplacian_variances as _lapvar
from iea.vision.segment import Region, regions_from_labels


def laplacian_variances(rgb, labels, ids):
    regions = {r.id: r for r in regions_from_labels(labels, {})}
    return _lapvar(rgb, labels, [regions[i] for i in ids])


def _sharp_image(seed=0, size=64):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_blurred_copy_scores_lower():
    sharp = _sharp_image()
    blurred = cv2.GaussianBlur(sharp, (7, 7), 3)
    labels = np.zeros((64, 64), np.int32)
    labels[8:40, 8:40] = 1
    s = laplacian_variances(sharp, labels, [0, 1])
    b = laplacian_variances(blurred, labels, [0, 1])
    assert b[0] < s[0] / 10 and b[1] < s[1] / 10


def test_region_edges_do_not_count_as_texture():
    # Two flat regions with a hard edge between them: no texture inside either.
    img = np.zeros((40, 40, 3), np.uint8)
    img[:, 20:] = 255
    labels = np.zeros((40, 40), np.int32)
    labels[:, 20:] = 1
    assert laplacian_variances(img, labels, [0, 1]) == [0.0, 0.0]


def test_thin_region_uses_all_its_pixels():
    img = _sharp_image(1, 16)
    labels = np.zeros((16, 16), np.int32)
    labels[5, :] = 1  # a one-pixel line has no interior
    assert laplacian_variances(img, labels, [1])[0] > 0


def test_thresholds_and_reasons():
    regions = [
        Region(0, (0, 0, 100, 100), 10000, 1.0, 1.0, True, 500.0),  # kept
        Region(1, (0, 0, 10, 100), 1000, 0.9, 0.9, False, 500.0),  # too small
        Region(2, (0, 0, 50, 50), 2500, 0.5, 0.9, False, 20.0),  # blurry + unsure
    ]
    f = RegionFeatures.of(regions)
    t = Thresholds(25, 100, 0.7)
    assert keep_mask(f, t).tolist() == [True, False, False]
    assert drop_reasons(f, t) == [[], ["too_small"], ["blurry", "low_confidence"]]
    # boundaries: equal to the threshold is kept
    assert keep_mask(f, Thresholds(10, 20, 0.5)).tolist() == [True, True, True]
