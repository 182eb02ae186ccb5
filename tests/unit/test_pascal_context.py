"""PASCAL-Context reader, label-map regions and the synthetic dataset in the real layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from iea.data.images import load_rgb
from iea.data.pascal_classes import PASCAL_CONTEXT_59
from iea.data.pascal_context import (
    BACKGROUND_CLASSES,
    EXTRA_CLASSES,
    PROBLEMS,
    SYNTHETIC_LABELS,
    PascalSample,
    Quarantined,
    class_colour,
    class_regions,
    classes_present,
    draw_synthetic_sample,
    generate_pascal_context,
    read_dataset,
    read_labels,
    read_subset,
    synthetic_image_id,
    write_label_map,
)
from iea.data.regions import region_crop
from iea.data.world import PATTERN_DARKEN, POLARITY_COLOURS
from iea.vision.filters import laplacian_variances

N_IMAGES = 12
SUBSET = {i for i, n in SYNTHETIC_LABELS.items() if n in set(PASCAL_CONTEXT_59)}


@pytest.fixture(scope="module")
def pascal_root(tmp_path_factory) -> Path:
    """A synthetic dataset written once for the module (tests copy it before changing it)."""
    return generate_pascal_context(tmp_path_factory.mktemp("pascal") / "ctx", n_images=N_IMAGES)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# --------------------------------------------------------------------------- generator


def test_generator_is_byte_deterministic(pascal_root, tmp_path):
    again = generate_pascal_context(tmp_path / "again", n_images=N_IMAGES)
    first, second = _files(pascal_root), _files(again)
    assert len(first) == 2 + 2 * N_IMAGES  # labels.txt, 59_labels.txt, one .mat + .jpg each
    assert first == second
    # savemat's header carries a creation time; the fixed header must have replaced it.
    mat = first[f"trainval/{synthetic_image_id(0)}.mat"]
    assert b"Created on" not in mat[:116] and mat.startswith(b"MATLAB 5.0 MAT-file")
    other = _files(generate_pascal_context(tmp_path / "other", n_images=N_IMAGES, seed=1))
    assert other.keys() == first.keys()
    assert other["trainval/2008_000000.mat"] != first["trainval/2008_000000.mat"]


def test_generated_class_files_have_the_real_format(pascal_root):
    labels = read_labels(pascal_root / "labels.txt")
    assert labels == SYNTHETIC_LABELS
    assert min(labels) == 1 and sorted(labels) == list(range(1, len(labels) + 1))
    assert {"accordion", "kite", "air conditioner"} <= set(labels.values())
    subset = read_labels(pascal_root / "59_labels.txt")
    assert sorted(subset.values()) == sorted(PASCAL_CONTEXT_59)
    assert all(labels[i] == n for i, n in subset.items())  # labels.txt indices
    assert list(subset) != list(range(1, 60))  # not contiguous, like the release
    assert read_subset(pascal_root, labels) == subset


def test_generator_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="classes_per_image"):
        generate_pascal_context(tmp_path, classes_per_image=(3, 2))
    with pytest.raises(ValueError, match="image_size"):
        generate_pascal_context(tmp_path, image_size=(4, 100))


def test_generator_handles_tiny_images_and_background_only(tmp_path):
    root = generate_pascal_context(
        tmp_path, n_images=3, image_size=(8, 10), classes_per_image=(1, 3)
    )
    items = list(read_dataset(root, subset="all"))
    assert [(s.width, s.height) for s in items] == [(8, 10)] * 3
    only_bg = draw_synthetic_sample(0, classes_per_image=(1, 1))[0]
    assert len(classes_present(only_bg)) == 1


# --------------------------------------------------------------------------- reading


def test_round_trip_all_classes(pascal_root):
    items = list(read_dataset(pascal_root, subset="all"))
    assert [s.image_id for s in items] == [synthetic_image_id(k) for k in range(N_IMAGES)]
    assert all(isinstance(s, PascalSample) for s in items)
    for k, sample in enumerate(items):
        drawn, _ = draw_synthetic_sample(k)
        assert sample.label_map.dtype == np.int32
        assert (sample.width, sample.height) == (320, 240)
        assert sample.image_path == pascal_root / "JPEGImages" / f"{sample.image_id}.jpg"
        np.testing.assert_array_equal(sample.label_map, drawn)
        present = classes_present(sample.label_map)
        assert 2 <= len(present) <= 4  # classes_per_image=(2, 4), background included
        assert sum(SYNTHETIC_LABELS[c] in BACKGROUND_CLASSES for c in present) == 1


def test_subset_59_maps_other_classes_to_unlabeled(pascal_root):
    full = {s.image_id: s.label_map for s in read_dataset(pascal_root, subset="all")}
    sub = {s.image_id: s.label_map for s in read_dataset(pascal_root, subset="59")}
    assert full.keys() == sub.keys()
    extras = {i for i, n in SYNTHETIC_LABELS.items() if n in EXTRA_CLASSES}
    with_extra = [k for k, m in full.items() if extras & set(classes_present(m))]
    assert with_extra, "seed 0 must draw at least one class outside the subset"
    for image_id, lm in full.items():
        expected = np.where(np.isin(lm, list(SUBSET)), lm, 0)
        np.testing.assert_array_equal(sub[image_id], expected)
    lm = sub[with_extra[0]]
    assert (lm == 0).any() and not extras & set(classes_present(lm))


def test_subset_without_59_labels_file_uses_names(pascal_root, tmp_path):
    labels = {3: "accordion", 7: "Dog", 9: "sky", 12: "kite"}
    assert read_subset(tmp_path, labels) == {7: "Dog", 9: "sky"}


def test_subset_file_with_positions_instead_of_indices_is_rejected(tmp_path):
    labels = {1: "accordion", 2: "aeroplane", 3: "bag"}
    (tmp_path / "59_labels.txt").write_text("1: aeroplane\n2: bag\n")
    with pytest.raises(ValueError, match=r"59_labels.txt:1: class 1 is 'aeroplane' here"):
        read_subset(tmp_path, labels)
    (tmp_path / "59_labels.txt").write_text("2: aeroplane\n5: bag\n")
    with pytest.raises(ValueError, match=r"59_labels.txt:2: class index 5"):
        read_subset(tmp_path, labels)


@pytest.mark.parametrize(
    "text, line, reason",
    [
        ("1: accordion\n2 aeroplane\n", 2, "expected 'index: name'"),
        ("1: accordion\n\nx: bag\n", 3, "expected 'index: name'"),
        ("0: unlabeled\n", 1, "must be >= 1"),
        ("1: accordion\n2:   \n", 2, "empty name"),
        ("1: accordion\n1: aeroplane\n", 2, "repeated"),
        ("1: accordion\n2: caf\xe9\n".encode("latin-1"), 2, "invalid UTF-8"),
    ],
)
def test_malformed_labels_line_raises_with_file_and_line(tmp_path, text, line, reason):
    path = tmp_path / "labels.txt"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=rf"labels\.txt:{line}: .*{reason}"):
        read_labels(path)


def test_read_labels_accepts_spaces_and_blank_lines(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("\ufeff1: accordion\n\n2:aeroplane\r\n  8 : baby carriage  \n")
    assert read_labels(path) == {1: "accordion", 2: "aeroplane", 8: "baby carriage"}


def test_read_dataset_rejects_unknown_subset_and_missing_labels(pascal_root, tmp_path):
    with pytest.raises(ValueError, match="subset"):
        read_dataset(pascal_root, subset="459")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="labels.txt"):
        read_dataset(tmp_path)


def test_image_ids_restricts_the_read(pascal_root):
    items = list(read_dataset(pascal_root, image_ids=["2008_000003", "2008_000001"]))
    assert [s.image_id for s in items] == ["2008_000001", "2008_000003"]


def test_bad_samples_are_quarantined_and_the_rest_read(pascal_root, tmp_path):
    root = Path(shutil.copytree(pascal_root, tmp_path / "ctx"))
    mats, jpgs = root / "trainval", root / "JPEGImages"
    ids = [synthetic_image_id(k) for k in range(N_IMAGES)]
    (mats / f"{ids[0]}.mat").unlink()  # image without label map
    unknown, _ = draw_synthetic_sample(1)
    unknown[5:9, 5:9] = 999
    write_label_map(mats / f"{ids[1]}.mat", unknown)
    write_label_map(mats / f"{ids[2]}.mat", draw_synthetic_sample(2)[0][:200])  # 200 x 320
    (jpgs / f"{ids[3]}.jpg").write_bytes(b"this is not a jpeg")
    data = (jpgs / f"{ids[4]}.jpg").read_bytes()
    (jpgs / f"{ids[4]}.jpg").write_bytes(data[: len(data) // 2])
    scipy.io.savemat(mats / f"{ids[5]}.mat", {"Segmentation": draw_synthetic_sample(5)[0]})
    (jpgs / f"{ids[6]}.jpg").unlink()  # label map without image
    (mats / f"{ids[7]}.mat").write_bytes(b"MATLAB garbage")
    scipy.io.savemat(mats / "2009_000001.mat", {"LabelMap": np.zeros((4, 4, 2), np.uint16)})

    items = {s.image_id: s for s in read_dataset(root)}
    assert sorted(items) == sorted(ids + ["2009_000001"])
    expected = {
        ids[0]: ("missing_label_map", [f"{ids[0]}.mat", "no such file"]),
        ids[1]: ("unknown_class", [f"{ids[1]}.mat", "label index 999 ", "labels.txt"]),
        ids[2]: ("size_mismatch", [f"{ids[2]}.mat", "200x320", f"{ids[2]}.jpg", "240x320"]),
        ids[3]: ("unreadable_image", [f"{ids[3]}.jpg", "not a recognised image format"]),
        ids[4]: ("unreadable_image", [f"{ids[4]}.jpg", "truncated"]),
        ids[5]: ("bad_label_map", [f"{ids[5]}.mat", "no variable 'LabelMap'", "Segmentation"]),
        ids[6]: ("unreadable_image", [f"{ids[6]}.jpg", "no such file"]),
        ids[7]: ("bad_label_map", [f"{ids[7]}.mat", "cannot load MATLAB file"]),
        "2009_000001": ("bad_label_map", ["2009_000001.mat", "(4, 4, 2)"]),
    }
    for image_id, (problem, words) in expected.items():
        item = items[image_id]
        assert isinstance(item, Quarantined), image_id
        assert item.problem == problem and problem in PROBLEMS
        for word in words:
            assert word in item.reason, (image_id, word, item.reason)
        assert item.to_json() == {"image_id": image_id, "reason": item.reason, "problem": problem}
    good = [items[i] for i in ids[8:]]
    assert all(isinstance(s, PascalSample) for s in good)
    for k, sample in zip(range(8, N_IMAGES), good, strict=True):
        drawn = draw_synthetic_sample(k)[0]
        np.testing.assert_array_equal(
            sample.label_map, np.where(np.isin(drawn, list(SUBSET)), drawn, 0)
        )


# --------------------------------------------------------------------------- regions


def test_class_regions_exact_on_hand_made_map():
    lm = np.zeros((6, 8), dtype=np.uint16)
    lm[1:3, 2:6] = 5  # 2 x 4 rectangle
    lm[4, 0:3] = 12  # an L: row of 3 ...
    lm[3:6, 7] = 12  # ... plus a disconnected column of 3 -> one region, bbox spans both
    lm[0, 0] = 30  # a single pixel
    names = {5: "dog", 12: "air conditioner", 30: "kite", 44: "unused"}
    out = class_regions(lm, names, min_area=1)
    assert [(r.id, n) for r, n in out] == [(5, "dog"), (12, "air conditioner"), (30, "kite")]
    dog, ac, kite = (r for r, _ in out)
    assert dog.bbox == (2, 1, 4, 2) and dog.area == 8
    assert ac.bbox == (0, 3, 8, 3) and ac.area == 6
    assert kite.bbox == (0, 0, 1, 1) and kite.area == 1
    assert all(
        r.predicted_iou == r.stability_score == 1.0 and not r.is_background and r.laplacian_var == 0
        for r, _ in out
    )
    assert [r.id for r, _ in class_regions(lm, names, min_area=6)] == [5, 12]
    assert [r.id for r, _ in class_regions(lm, names, min_area=7)] == [5]
    assert class_regions(lm, names, min_area=9) == []
    assert class_regions(np.zeros((3, 3), np.int32), {}, min_area=0) == []


def test_class_regions_match_masks_on_large_random_map():
    lm = np.random.default_rng(1).integers(0, 40, size=(375, 500)) * 3
    names = {i: f"c{i}" for i in range(1, 200)}
    for region, _ in class_regions(lm, names, min_area=0):
        ys, xs = np.nonzero(lm == region.id)
        assert region.area == len(ys)
        assert region.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def test_class_regions_rejects_bad_input():
    with pytest.raises(ValueError, match="no name for class index \\[7\\]"):
        class_regions(np.array([[0, 7]]), {}, min_area=0)
    with pytest.raises(ValueError, match="negative"):
        class_regions(np.array([[-1, 7]]), {7: "x"}, min_area=0)
    with pytest.raises(ValueError, match="H x W integer"):
        class_regions(np.zeros((2, 2), np.float32), {}, min_area=0)


def test_generated_regions_agree_with_the_image_and_pass_clarity(pascal_root):
    sample = next(s for s in read_dataset(pascal_root, subset="all") if s.image_id.endswith("05"))
    rgb = load_rgb(sample.image_path)
    regions = class_regions(sample.label_map, SYNTHETIC_LABELS, min_area=50)
    assert [r.id for r, _ in regions] == classes_present(sample.label_map)
    clarity = laplacian_variances(rgb, sample.label_map, [r for r, _ in regions])
    assert min(clarity) > 100
    for region, _ in regions:
        # Interior pixels (away from JPEG edge ringing) carry the class colour.
        mask = (sample.label_map == region.id).astype(np.uint8)
        inner = cv2.erode(mask, np.ones((5, 5), np.uint8)).astype(bool)
        name = SYNTHETIC_LABELS[region.id]
        if name in BACKGROUND_CLASSES or name in EXTRA_CLASSES:
            mean = rgb[inner].mean(axis=0)
            assert np.abs(mean - class_colour(region.id)).max() < 6, (region.id, mean)
        else:  # a world object: its pixels are one polarity colour or its darker pattern
            pixels = rgb[inner].astype(float)
            dist = {
                p: np.minimum(
                    np.abs(pixels - np.array(c)).max(axis=1),
                    np.abs(pixels - PATTERN_DARKEN * np.array(c)).max(axis=1),
                )
                for p, c in POLARITY_COLOURS.items()
            }
            best = min(dist, key=lambda p: np.median(dist[p]))
            assert np.median(dist[best]) < 20, (name, {p: np.median(d) for p, d in dist.items()})
        crop = region_crop(rgb, sample.label_map, region)  # the label map is the id map
        assert crop.ndim == 3 and crop.shape[2] == 3


def test_index_in_a_gap_of_labels_txt_is_unknown_and_double_maps_are_read(tmp_path):
    (tmp_path / "labels.txt").write_text("1: sky\n2: dog\n5: cat\n")
    (tmp_path / "trainval").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    gap = np.ones((10, 12), np.uint16)
    gap[2:4, 2:4] = 3
    as_double = np.ones((10, 12), np.float64)
    as_double[5:8, 5:9] = 5
    write_label_map(tmp_path / "trainval" / "a.mat", gap)
    scipy.io.savemat(tmp_path / "trainval" / "b.mat", {"LabelMap": as_double})
    for image_id in "ab":
        cv2.imwrite(
            str(tmp_path / "JPEGImages" / f"{image_id}.jpg"), np.zeros((10, 12, 3), np.uint8)
        )
    a, b = read_dataset(tmp_path, subset="all")
    assert isinstance(a, Quarantined) and a.problem == "unknown_class"
    assert "label index 3 not in" in a.reason
    assert isinstance(b, PascalSample)
    np.testing.assert_array_equal(b.label_map, as_double.astype(np.int32))
    # No 59_labels.txt: the subset is found by name (sky, dog, cat are all in it).
    (b59,) = [s for s in read_dataset(tmp_path) if s.image_id == "b"]
    np.testing.assert_array_equal(b59.label_map, b.label_map)
