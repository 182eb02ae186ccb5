"""PASCAL-Context: read the real layout, turn label maps into regions, write a synthetic copy.

Layout under a root directory (the PASCAL-Context release next to the VOC2010 images)::

    root/labels.txt            one ``index: name`` line per class, 1-based (459 in the release)
    root/59_labels.txt         the 59-class subset, same format (optional, see read_subset)
    root/trainval/<id>.mat     MATLAB v5 file holding ``LabelMap``: H x W uint16 class indices,
                               0 = unlabeled, k = class k of labels.txt
    root/JPEGImages/<id>.jpg   the image, H x W; ids look like ``2008_000002``

Assumption: the indices in ``59_labels.txt`` are ``labels.txt`` indices (the values the label
maps hold), not 1..59 positions; :func:`read_subset` checks that each subset name equals the
``labels.txt`` name at its index and raises otherwise, so the other reading cannot pass silently.

:func:`read_dataset` never raises on one bad sample: a missing ``.mat``, a ``.mat`` without a
readable ``LabelMap``, a label index that ``labels.txt`` does not define, a label map whose size
differs from its image, or a missing/unreadable/truncated image gives a :class:`Quarantined`
record naming the file and the problem, and the run goes on.

:func:`generate_pascal_context` writes a small synthetic dataset in exactly this layout,
deterministic by seed (byte-identical files), so the reader is tested on the real format.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.io
from PIL import Image

from iea.data.images import ImageDecodeError, load_rgb
from iea.data.pascal_classes import PASCAL_CONTEXT_59
from iea.data.regions import Region
from iea.data.world import POLARITIES, WORLD_CLASSES, paint, place_boxes, shape_mask

LABELS_FILE = "labels.txt"
SUBSET_FILE = "59_labels.txt"
LABEL_DIR = "trainval"
IMAGE_DIR = "JPEGImages"
LABEL_VAR = "LabelMap"
UNLABELED = 0

PROBLEMS: tuple[str, ...] = (
    "missing_label_map",
    "bad_label_map",
    "unknown_class",
    "unreadable_image",
    "size_mismatch",
)
"""The values of :attr:`Quarantined.problem`."""

_LINE = re.compile(r"^\s*([+-]?\d+)\s*:(.*)$")


# --------------------------------------------------------------------------- class lists


def _label_lines(path: Path) -> list[tuple[int, int, str]]:
    """``(line number, index, name)`` of every class line; ValueError ``file:line: reason``."""
    path = Path(path)
    out: list[tuple[int, int, str]] = []
    first_line: dict[int, int] = {}
    with open(path, "rb") as fh:
        for no, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8").strip().lstrip("\ufeff")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{no}: invalid UTF-8 at byte {e.start}") from e
            if not line:
                continue
            match = _LINE.match(line)
            if match is None:
                raise ValueError(f"{path}:{no}: expected 'index: name', got {line!r}")
            index, name = int(match.group(1)), match.group(2).strip()
            if index < 1:
                raise ValueError(f"{path}:{no}: class index {index} must be >= 1 (0 = unlabeled)")
            if not name:
                raise ValueError(f"{path}:{no}: class {index} has an empty name")
            if index in first_line:
                raise ValueError(
                    f"{path}:{no}: class index {index} repeated (first on line {first_line[index]})"
                )
            first_line[index] = no
            out.append((no, index, name))
    if not out:
        raise ValueError(f"{path}: no 'index: name' lines")
    return out


def read_labels(path: Path) -> dict[int, str]:
    """Read a ``labels.txt``-style file: one ``index: name`` line per class.

    Indices are 1-based integers (0 is reserved for unlabeled pixels); names are stripped and
    may contain spaces (``air conditioner``). Blank lines are skipped.

    Returns:
        ``{index: name}`` in file order.

    Raises:
        ValueError: ``file:line: reason`` for a malformed line, an index < 1, an empty name,
            a repeated index, invalid UTF-8, or a file without any class line.
        OSError: the file cannot be opened.
    """
    return {index: name for _, index, name in _label_lines(path)}


def _norm(name: str) -> str:
    return name.strip().lower()


def read_subset(root: Path, labels: dict[int, str]) -> dict[int, str]:
    """The 59-class subset as ``{labels.txt index: name}``, sorted by index.

    From ``root/59_labels.txt`` when it exists: its indices must be ``labels.txt`` indices
    (see the module docstring) and each name must equal (case-insensitively) the ``labels.txt``
    name at that index. Otherwise the subset is every ``labels.txt`` entry whose name is one of
    :data:`~iea.data.pascal_classes.PASCAL_CONTEXT_59` (fewer than 59 when ``labels.txt`` lacks
    some).

    Raises:
        ValueError: ``file:line: reason`` for a malformed line, an index absent from
            ``labels`` or a name that differs from ``labels.txt``.
    """
    path = Path(root) / SUBSET_FILE
    if not path.is_file():
        wanted = set(PASCAL_CONTEXT_59)
        return {i: n for i, n in sorted(labels.items()) if _norm(n) in wanted}
    subset: dict[int, str] = {}
    for no, index, name in _label_lines(path):
        if index not in labels:
            raise ValueError(f"{path}:{no}: class index {index} ({name!r}) is not in labels.txt")
        if _norm(labels[index]) != _norm(name):
            raise ValueError(
                f"{path}:{no}: class {index} is {name!r} here but {labels[index]!r} in labels.txt"
                " (the subset file's indices must be labels.txt indices)"
            )
        subset[index] = labels[index]
    return dict(sorted(subset.items()))


# --------------------------------------------------------------------------- samples


@dataclass(frozen=True, eq=False)
class PascalSample:
    """One readable image with its label map (equality is identity: it holds an array).

    ``label_map`` is ``height x width`` int32 of ``labels.txt`` class indices, 0 = unlabeled;
    with the 59-class subset, classes outside it are 0 as well.
    """

    image_id: str
    image_path: Path
    label_map: np.ndarray
    width: int
    height: int


@dataclass(frozen=True)
class Quarantined:
    """A sample that cannot be used: ``reason`` names the file and what is wrong with it;
    ``problem`` is one of :data:`PROBLEMS`."""

    image_id: str
    reason: str
    problem: str = ""

    def to_json(self) -> dict[str, str]:
        return {"image_id": self.image_id, "reason": self.reason, "problem": self.problem}


def read_dataset(
    root: Path,
    *,
    subset: Literal["59", "all"] = "59",
    image_ids: Iterable[str] | None = None,
) -> Iterator[PascalSample | Quarantined]:
    """Read every sample under ``root`` (layout in the module docstring), in sorted id order.

    The ids are the union of ``trainval/*.mat`` and ``JPEGImages/*.jpg`` stems, or
    ``image_ids`` when given (the real ``JPEGImages`` holds all of VOC2010, many more images
    than PASCAL-Context labels, each of which would be quarantined as ``missing_label_map``:
    pass the ids of a split list to read only those).

    With ``subset="59"`` the pixels of classes outside :func:`read_subset` become 0
    (unlabeled); the kept pixels keep their ``labels.txt`` index. With ``"all"`` the label map is
    as stored. Every image is fully decoded, so truncated files are caught (a 500 x 375 sample
    takes about 6 ms). The class files are read (and their errors raised) when this is called;
    the samples are read lazily while iterating.

    Yields:
        :class:`PascalSample` or :class:`Quarantined` per id; never raises on a bad sample.

    Raises:
        ValueError: unknown ``subset``; malformed ``labels.txt`` / ``59_labels.txt``
            (``file:line: reason``).
        FileNotFoundError: ``root`` has no ``labels.txt``, or neither ``trainval/`` nor
            ``JPEGImages/``.
    """
    if subset not in ("59", "all"):
        raise ValueError(f"subset must be '59' or 'all', got {subset!r}")
    root = Path(root)
    labels_path = root / LABELS_FILE
    if not labels_path.is_file():
        raise FileNotFoundError(f"{labels_path}: no such file")
    labels = read_labels(labels_path)
    keep = read_subset(root, labels) if subset == "59" else labels
    mat_dir, image_dir = root / LABEL_DIR, root / IMAGE_DIR
    if image_ids is None:
        if not mat_dir.is_dir() and not image_dir.is_dir():
            raise FileNotFoundError(f"{root}: neither {LABEL_DIR}/ nor {IMAGE_DIR}/ exists")
        ids = {p.stem for p in mat_dir.glob("*.mat")} | {p.stem for p in image_dir.glob("*.jpg")}
    else:
        ids = set(image_ids)
    top = max(labels)
    known = np.zeros(top + 1, dtype=bool)
    known[list(labels)] = True
    known[UNLABELED] = True
    lut = np.zeros(top + 1, dtype=np.int32)  # stored index -> output index (0 outside `keep`)
    lut[list(keep)] = list(keep)
    context = _Context(labels_path, known, lut)
    return (_read_sample(root, image_id, context) for image_id in sorted(ids))


@dataclass(frozen=True)
class _Context:
    labels_path: Path
    known: np.ndarray  # (max index + 1,) bool: index defined by labels.txt (or 0)
    lut: np.ndarray  # (max index + 1,) int32: stored index -> index in the output map


def _read_sample(root: Path, image_id: str, ctx: _Context) -> PascalSample | Quarantined:
    mat_path = root / LABEL_DIR / f"{image_id}.mat"
    image_path = root / IMAGE_DIR / f"{image_id}.jpg"
    if not mat_path.is_file():
        return Quarantined(
            image_id, f"{mat_path}: no such file (image without label map)", "missing_label_map"
        )
    stored = load_label_map(mat_path)
    if isinstance(stored, str):
        return Quarantined(image_id, stored, "bad_label_map")
    unknown = _unknown_indices(stored, ctx.known)
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
        return Quarantined(
            image_id,
            f"{mat_path}: label index {shown} not in {ctx.labels_path}",
            "unknown_class",
        )
    try:
        rgb = load_rgb(image_path)
    except ImageDecodeError as e:
        return Quarantined(image_id, str(e), "unreadable_image")
    height, width = rgb.shape[:2]
    if stored.shape != (height, width):
        return Quarantined(
            image_id,
            f"{mat_path}: {LABEL_VAR} is {stored.shape[0]}x{stored.shape[1]} (H x W) but "
            f"{image_path} is {height}x{width}",
            "size_mismatch",
        )
    label_map = np.ascontiguousarray(ctx.lut[stored])
    return PascalSample(image_id, image_path, label_map, width, height)


def load_label_map(path: Path) -> np.ndarray | str:
    """The stored ``LabelMap`` as an ``H x W`` int64 array, or the reason it is unusable."""
    try:
        data = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises many types (MatReadError, ValueError, zlib.error...)
        return f"{path}: cannot load MATLAB file: {type(e).__name__}: {e}"
    if LABEL_VAR not in data:
        names = sorted(k for k in data if not k.startswith("__"))
        return f"{path}: no variable {LABEL_VAR!r} (variables: {', '.join(names) or 'none'})"
    arr = np.asarray(data[LABEL_VAR])
    if arr.ndim != 2 or arr.size == 0:
        return f"{path}: {LABEL_VAR} must be a non-empty H x W array, got shape {arr.shape}"
    if arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all():
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "biu":
        return f"{path}: {LABEL_VAR} must hold integer class indices, got dtype {arr.dtype}"
    return arr.astype(np.int64)


def _unknown_indices(label_map: np.ndarray, known: np.ndarray) -> list[int]:
    """Sorted indices present in ``label_map`` that ``known`` does not mark."""
    flat = label_map.ravel()
    low, high = int(flat.min()), int(flat.max())
    if low < 0 or high >= len(known):  # out of the table: find them without a huge bincount
        outside = np.unique(flat[(flat < 0) | (flat >= len(known))]).tolist()
        inside = flat[(flat >= 0) & (flat < len(known))]
    else:
        outside, inside = [], flat
    present = np.flatnonzero(np.bincount(inside, minlength=len(known)))
    return sorted(present[~known[present]].tolist() + outside)


# --------------------------------------------------------------------------- regions


def class_regions(
    label_map: np.ndarray, class_names: dict[int, str], *, min_area: int
) -> list[tuple[Region, str]]:
    """One ground-truth :class:`~iea.vision.segment.Region` per class present in ``label_map``.

    ``Region.id`` is the class index, so ``label_map`` itself is the region-id map for
    :func:`iea.vision.interpret.region_crop`. ``bbox`` is ``(x, y, w, h)`` in pixels and
    ``area`` the pixel count of the class's (possibly disconnected) mask; ``predicted_iou`` and
    ``stability_score`` are 1.0 (ground truth), ``is_background`` False, ``laplacian_var`` 0.0
    (fill it with :func:`iea.vision.filters.laplacian_variances`). Class 0 (unlabeled) is no
    region. A class with fewer than ``min_area`` pixels is simply not a region: it is not
    returned (its pixels keep their index in ``label_map``).

    Args:
        label_map: ``H x W`` non-negative integer class indices.
        class_names: ``{index: name}``; must name every class present (index > 0).
        min_area: smallest area kept, in pixels.

    Returns:
        ``[(region, class name), ...]`` sorted by class index.

    Raises:
        ValueError: ``label_map`` not a 2-D integer array, negative indices, or a present
            class missing from ``class_names``.
    """
    lm = np.asarray(label_map)
    if lm.ndim != 2 or lm.dtype.kind not in "biu":
        raise ValueError(f"label_map must be an H x W integer array, got {lm.dtype} {lm.shape}")
    if lm.size == 0:
        return []
    if int(lm.min()) < 0:
        raise ValueError(f"label_map has negative class index {int(lm.min())}")
    flat = lm.ravel().astype(np.intp, copy=False)
    areas = np.bincount(flat)
    present = np.flatnonzero(areas)
    present = present[present != UNLABELED]
    missing = [int(c) for c in present if int(c) not in class_names]
    if missing:
        raise ValueError(f"class_names has no name for class index {missing}")
    kept = present[areas[present] >= min_area]
    if kept.size == 0:
        return []
    height, width = lm.shape
    count = len(kept)
    compact = np.full(len(areas), count, dtype=np.intp)  # column `count` collects the rest
    compact[kept] = np.arange(count)
    cols = compact[flat].reshape(height, width)
    # in_row[r, k]: class kept[k] has a pixel in row r (one pass over the pixels).
    in_row = np.zeros((height, count + 1), dtype=bool)
    in_row[np.arange(height)[:, None], cols] = True
    in_col = np.zeros((width, count + 1), dtype=bool)
    in_col[np.arange(width)[None, :], cols] = True
    in_row, in_col = in_row[:, :count], in_col[:, :count]
    top = in_row.argmax(axis=0)
    bottom = height - 1 - in_row[::-1].argmax(axis=0)
    left = in_col.argmax(axis=0)
    right = width - 1 - in_col[::-1].argmax(axis=0)
    out = []
    for k, cls in enumerate(kept.tolist()):
        bbox = (int(left[k]), int(top[k]), int(right[k] - left[k]) + 1, int(bottom[k] - top[k]) + 1)
        region = Region(cls, bbox, int(areas[cls]), 1.0, 1.0, False, 0.0)
        out.append((region, class_names[cls]))
    return out


# --------------------------------------------------------------------------- synthetic data

EXTRA_CLASSES: tuple[str, ...] = ("accordion", "air conditioner", "baby carriage", "kite", "ladder")
"""Classes of the synthetic ``labels.txt`` outside the 59 subset (they become 0 with "59")."""
SYNTHETIC_LABELS: dict[int, str] = {
    i: name for i, name in enumerate(sorted({*PASCAL_CONTEXT_59, *EXTRA_CLASSES}), start=1)
}
"""The synthetic ``labels.txt``: the 59 subset plus :data:`EXTRA_CLASSES`, alphabetical and
1-based like the release, so subset indices are not contiguous."""
BACKGROUND_CLASSES: tuple[str, ...] = ("sky", "grass", "wall", "ground", "road", "water")
OBJECT_CLASSES: tuple[str, ...] = WORLD_CLASSES
"""The object classes drawn: the controlled world's vocabulary (:mod:`iea.data.world`)."""
EXTRA_PROBABILITY = 0.1
"""Chance that an object slot holds a class of :data:`EXTRA_CLASSES`."""
NOISE_SIGMA = 9.0
"""Gray-level noise (std, 0..255 units) on background pixels: Laplacian variance ~20 sigma^2
before JPEG, well above 100 after it, so clarity filters keep every region."""
EXTRA_COLOUR = (150, 150, 150)
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by iea.data.pascal_context".ljust(116, b" ")
_INDEX = {name: i for i, name in SYNTHETIC_LABELS.items()}
_BACKGROUND_COLOURS = {
    "sky": (170, 200, 235),
    "grass": (120, 150, 105),
    "wall": (200, 190, 170),
    "ground": (160, 135, 110),
    "road": (110, 110, 115),
    "water": (110, 140, 180),
}


def class_colour(index: int) -> tuple[int, int, int]:
    """The RGB colour (0..255) a synthetic background class is painted with (muted, so the
    world's polarity colours stand out); objects are painted by :func:`iea.data.world.paint`
    in a polarity colour instead, extra classes in :data:`EXTRA_COLOUR`."""
    name = SYNTHETIC_LABELS.get(index, "")
    return _BACKGROUND_COLOURS.get(name, EXTRA_COLOUR)


def draw_synthetic_sample(
    index: int,
    *,
    seed: int = 0,
    image_size: tuple[int, int] = (320, 240),
    classes_per_image: tuple[int, int] = (2, 4),
) -> tuple[np.ndarray, np.ndarray]:
    """Draw synthetic image ``index``: its label map and the image painted from it.

    A background class of :data:`BACKGROUND_CLASSES` fills the frame (its colour plus gray
    noise); ``n - 1`` object classes of the world (``n`` uniform in ``classes_per_image``,
    inclusive) are drawn one per vertical strip, each with its class's shape and texture in a
    random polarity colour (:func:`iea.data.world.paint`); an object slot holds an
    :data:`EXTRA_CLASSES` class (a plain gray ellipse) with :data:`EXTRA_PROBABILITY`. Image
    and label map agree pixel for pixel (before JPEG). Depends only on ``(seed, index)``.

    Args:
        image_size: ``(W, H)`` in pixels.

    Returns:
        ``(label_map, rgb)``: ``H x W`` uint16 :data:`SYNTHETIC_LABELS` indices (no 0) and
        ``H x W x 3`` uint8.
    """
    width, height = image_size
    lo, hi = classes_per_image
    rng = np.random.default_rng([seed, index])
    n_objects = int(rng.integers(lo, hi + 1)) - 1
    bg = BACKGROUND_CLASSES[int(rng.integers(len(BACKGROUND_CLASSES)))]
    names = [str(n) for n in rng.choice(OBJECT_CLASSES, size=n_objects, replace=False)]
    extras = list(EXTRA_CLASSES)
    for k in range(n_objects):
        if rng.random() < EXTRA_PROBABILITY and extras:
            names[k] = extras.pop(int(rng.integers(len(extras))))
    label_map = np.full((height, width), _INDEX[bg], dtype=np.uint16)
    colour = np.array(_BACKGROUND_COLOURS[bg], dtype=np.float64)
    canvas = colour[None, None, :] + rng.normal(0.0, NOISE_SIGMA, size=(height, width, 1))
    canvas = np.broadcast_to(canvas, (height, width, 3)).copy()
    min_side = max(2, min(44, width // max(1, n_objects) - 6, height // 2))
    boxes = place_boxes(rng, n_objects, image_size, min_side=min_side) if n_objects else []
    for name, box in zip(names, boxes, strict=True):
        x, y, w, h = box
        box = (x, y, max(1, min(w, width - x)), max(1, min(h, height - y)))
        if name in WORLD_CLASSES:
            mask = paint(canvas, rng, name, str(rng.choice(POLARITIES)), box)
        else:
            mask = shape_mask("ellipse", box, image_size)
            canvas[mask] = np.array(EXTRA_COLOUR, dtype=np.float64) + rng.normal(
                0.0, NOISE_SIGMA, size=(int(mask.sum()), 1)
            )
        label_map[mask] = _INDEX[name]
    rgb = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return label_map, rgb


def write_label_map(path: Path, label_map: np.ndarray) -> None:
    """Write ``label_map`` (``H x W``, values 0..65535) as ``LabelMap`` uint16 in a compressed
    MATLAB v5 file. scipy's ``savemat`` stamps the creation time into the 116-byte header
    text; it is replaced by a fixed text so the same map always gives the same bytes."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, {LABEL_VAR: np.asarray(label_map).astype(np.uint16)}, do_compression=True)
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER
    Path(path).write_bytes(bytes(data))


def _write_label_file(path: Path, labels: dict[int, str]) -> None:
    path.write_text("".join(f"{i}: {name}\n" for i, name in labels.items()), encoding="utf-8")


def generate_pascal_context(
    out: Path,
    *,
    n_images: int = 12,
    seed: int = 0,
    image_size: tuple[int, int] = (320, 240),
    classes_per_image: tuple[int, int] = (2, 4),
) -> Path:
    """Write a synthetic PASCAL-Context dataset under ``out`` in the real layout.

    Writes ``labels.txt`` (:data:`SYNTHETIC_LABELS`), ``59_labels.txt`` (the subset with its
    ``labels.txt`` indices), and for ``k < n_images`` the id ``2008_{k:06d}``:
    ``trainval/<id>.mat`` (``LabelMap`` uint16, see :func:`write_label_map`) and
    ``JPEGImages/<id>.jpg`` (quality 90), drawn by :func:`draw_synthetic_sample`. The same
    arguments give byte-identical files. Existing files of the same names are overwritten;
    other files under ``out`` are left alone.

    Args:
        image_size: ``(W, H)`` in pixels, each >= 8.
        classes_per_image: inclusive ``(min, max)`` classes per image, background included
            (``(2, 4)`` = a background and 1-3 objects); ``1 <= min <= max``.

    Returns:
        ``out`` as a Path (the dataset root).
    """
    width, height = image_size
    lo, hi = classes_per_image
    if n_images < 0 or seed < 0:
        raise ValueError(f"n_images and seed must be >= 0, got {n_images} and {seed}")
    if min(width, height) < 8:
        raise ValueError(f"image_size must be at least 8 x 8 pixels, got {image_size}")
    if not 1 <= lo <= hi <= len(OBJECT_CLASSES) + 1:
        raise ValueError(f"classes_per_image must satisfy 1 <= min <= max, got {classes_per_image}")
    root = Path(out)
    (root / LABEL_DIR).mkdir(parents=True, exist_ok=True)
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    _write_label_file(root / LABELS_FILE, SYNTHETIC_LABELS)
    wanted = set(PASCAL_CONTEXT_59)
    _write_label_file(
        root / SUBSET_FILE, {i: n for i, n in SYNTHETIC_LABELS.items() if n in wanted}
    )
    for k in range(n_images):
        image_id = synthetic_image_id(k)
        label_map, rgb = draw_synthetic_sample(
            k, seed=seed, image_size=image_size, classes_per_image=classes_per_image
        )
        write_label_map(root / LABEL_DIR / f"{image_id}.mat", label_map)
        Image.fromarray(rgb, "RGB").save(root / IMAGE_DIR / f"{image_id}.jpg", "JPEG", quality=90)
    return root


def synthetic_image_id(k: int) -> str:
    """The id of synthetic image ``k``: ``2008_{k:06d}``."""
    return f"2008_{k:06d}"


def classes_present(label_map: np.ndarray) -> list[int]:
    """Sorted class indices (> 0) present in an ``H x W`` non-negative integer map."""
    counts = np.bincount(np.asarray(label_map).ravel().astype(np.intp))
    return [int(c) for c in np.flatnonzero(counts) if c != UNLABELED]
