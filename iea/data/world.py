"""The controlled synthetic world: one visual vocabulary for tweets and PASCAL-Context images.

Every object class has an appearance that its region alone identifies: a **shape** (the mask)
and a **texture** (a pattern drawn darker inside the mask), both unique to the class. The class
name (a PASCAL-Context name) is the phrase that names it. On tweet images an object's
**polarity is its colour** (:data:`POLARITY_COLOURS`: POS green, NEU blue, NEG red), and one
image holds objects of different polarities, so the whole image does not say which polarity
belongs to which phrase; only the region does.

Distractors are degraded copies of a class, each a kind the region filters exist for:

* ``speck``: a tiny copy (both sides below the paper's ``t_size`` = 25 px);
* ``blurred``: a normal-size copy, Gaussian-blurred (Laplacian variance far below
  ``t_clarity`` = 100 after JPEG);
* ``faint``: a normal-size, sharp copy at low contrast against the background (the SAM trained
  on this world learns it as an unsure instance, so its predicted IoU is low and ``t_conf``
  drops it: :data:`iea.recipes.sam.FAINT_IOU_SCALE`).

On tweets a distractor copies a class that the tweet mentions, with another polarity, so a kept
distractor next to its phrase misleads the model. A distractor stands free of the objects and
of the other distractors where the image has room (:func:`distractor_box`), so the mask
generator meets it whole: a distractor hidden under an object gives the filters nothing to do.

Everything is deterministic by its seed; pixels are ``H x W x 3`` uint8 RGB, boxes
``(x, y, w, h)`` in pixels. This module depends on nothing else of ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

WORLD_VERSION = "world-v3"
"""Names the drawing and text recipe: part of every generated dataset's folder name."""
WORLD_CLASSES: tuple[str, ...] = ("dog", "cat", "bus", "car", "bird", "horse", "sofa", "boat")
"""The object classes of the world (PASCAL-Context names; each is its own phrase)."""
SHAPES: dict[str, str] = {
    "dog": "ellipse",
    "cat": "triangle",
    "bus": "rectangle",
    "car": "hexagon",
    "bird": "diamond",
    "horse": "star",
    "sofa": "trapezoid",
    "boat": "cross",
}
TEXTURES: dict[str, str] = {
    "dog": "dots",
    "cat": "horizontal stripes",
    "bus": "vertical stripes",
    "car": "checks",
    "bird": "diagonal stripes",
    "horse": "rings",
    "sofa": "a grid",
    "boat": "large spots",
}
POLARITIES: tuple[str, ...] = ("POS", "NEU", "NEG")
POLARITY_COLOURS: dict[str, tuple[int, int, int]] = {
    "POS": (40, 185, 60),
    "NEU": (60, 100, 205),
    "NEG": (215, 40, 40),
}
COLOUR_NAMES: dict[str, str] = {"POS": "green", "NEU": "blue", "NEG": "red"}
DISTRACTOR_KINDS: tuple[str, ...] = ("speck", "blurred", "faint")

OBJECT_NOISE = 5.0
"""Gray noise std (0..255) inside objects; the background gets :data:`BACKGROUND_NOISE`."""
BACKGROUND_NOISE = 9.0
PATTERN_DARKEN = 0.5
"""Pattern pixels are the object colour times this."""
FAINT_CONTRAST = 0.18
"""A faint distractor's colour: background + this x (object colour - background)."""
BLUR_SIGMA = 4.5
SPECK_SIDE = (12, 22)
"""Inclusive range of a speck's sides in pixels (below the paper's t_size of 25; at 12 px and
up the tiny SAM's 64 x 64 low-resolution masks, 5 px a cell at 320 x 240, can outline one)."""
DISTRACTOR_SIDE = (40, 72)
"""Inclusive range of a blurred or faint distractor's sides in pixels."""
DISTRACTOR_TRIES = 40
"""Random boxes tried for a distractor before it may overlap an object (:func:`distractor_box`)."""
DISTRACTOR_MARGIN = 6
"""Pixels kept between a distractor's box and any other drawn thing's box."""


@dataclass(frozen=True)
class WorldObject:
    """One drawn thing: its class, polarity look, bbox ``(x, y, w, h)`` px, and ``kind``
    (``object`` or a :data:`DISTRACTOR_KINDS` name). ``mask`` is its ``H x W`` bool mask
    as drawn (before later objects covered parts of it)."""

    name: str
    polarity: str
    bbox: tuple[int, int, int, int]
    kind: str = "object"

    @property
    def is_distractor(self) -> bool:
        return self.kind != "object"


def describe(name: str, polarity: str) -> str:
    """The one-sentence description of an object of the world, e.g. ``a green dog with dots``
    (what a good interpreter says about its region)."""
    return f"a {COLOUR_NAMES[polarity]} {name} with {TEXTURES[name]}"


def shape_mask(shape: str, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """The ``H x W`` bool mask of ``shape`` filling ``box`` = (x, y, w, h) in an image of
    ``size`` = (W, H) pixels."""
    width, height = size
    x, y, w, h = box
    canvas = np.zeros((height, width), dtype=np.uint8)
    if shape == "ellipse":
        cv2.ellipse(
            canvas, (x + w // 2, y + h // 2), (max(1, w // 2), max(1, h // 2)), 0, 0, 360, 1, -1
        )
        return canvas.astype(bool)
    if shape == "rectangle":
        canvas[y : y + h, x : x + w] = 1
        return canvas.astype(bool)
    u = np.array(
        {
            "triangle": [(0.0, 1.0), (0.5, 0.0), (1.0, 1.0)],
            "diamond": [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)],
            "hexagon": [(0.25, 0.0), (0.75, 0.0), (1.0, 0.5), (0.75, 1.0), (0.25, 1.0), (0.0, 0.5)],
            "trapezoid": [(0.0, 1.0), (0.22, 0.0), (0.78, 0.0), (1.0, 1.0)],
            "cross": [
                (0.33, 0.0), (0.67, 0.0), (0.67, 0.33), (1.0, 0.33), (1.0, 0.67), (0.67, 0.67),
                (0.67, 1.0), (0.33, 1.0), (0.33, 0.67), (0.0, 0.67), (0.0, 0.33), (0.33, 0.33),
            ],
            "star": [
                (0.5 + 0.5 * r * np.sin(a), 0.5 - 0.5 * r * np.cos(a))
                for k in range(10)
                for a, r in [(k * np.pi / 5, 1.0 if k % 2 == 0 else 0.45)]
            ],
        }[shape]
    )  # fmt: skip
    points = np.round(np.stack([x + u[:, 0] * (w - 1), y + u[:, 1] * (h - 1)], axis=1))
    cv2.fillPoly(canvas, [points.astype(np.int32)], 1, lineType=cv2.LINE_8)
    return canvas.astype(bool)


def texture_pattern(name: str, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """``H x W`` bool: where class ``name``'s pattern is drawn (coordinates relative to the
    object's box, so the pattern moves with the object; periods 8-16 px)."""
    width, height = size
    x, y, _, _ = box
    yy, xx = np.mgrid[0:height, 0:width]
    u, v = xx - x, yy - y
    kind = TEXTURES[name]
    if kind == "dots":
        return ((u % 10 - 5) ** 2 + (v % 10 - 5) ** 2) <= 6
    if kind == "horizontal stripes":
        return v % 10 < 4
    if kind == "vertical stripes":
        return u % 10 < 4
    if kind == "checks":
        return ((u // 8) + (v // 8)) % 2 == 0
    if kind == "diagonal stripes":
        return (u + v) % 12 < 5
    if kind == "a grid":
        return (u % 10 < 2) | (v % 10 < 2)
    if kind == "large spots":
        return ((u % 18 - 9) ** 2 + (v % 18 - 9) ** 2) <= 20
    if kind == "rings":
        _, _, w, h = box
        return np.hypot(u - w / 2, v - h / 2) % 10 < 4
    return np.zeros((height, width), dtype=bool)


def background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A muted, low-saturation textured background: ``H x W x 3`` float64 (0..255 scale)."""
    width, height = size
    base = rng.integers(130, 200) + rng.integers(-12, 13, size=3)
    gradient = np.linspace(-12, 12, height)[:, None, None] * rng.choice([-1, 1])
    noise = rng.normal(0.0, BACKGROUND_NOISE, size=(height, width, 1))
    return np.broadcast_to(base[None, None, :] + gradient, (height, width, 3)) + noise


def paint(
    canvas: np.ndarray,
    rng: np.random.Generator,
    name: str,
    polarity: str,
    box: tuple[int, int, int, int],
    kind: str = "object",
) -> np.ndarray:
    """Paint one object (or distractor ``kind``) of class ``name`` into ``canvas`` (``H x W x 3``
    float64, modified in place); returns its ``H x W`` bool mask."""
    height, width = canvas.shape[:2]
    size = (width, height)
    mask = shape_mask(SHAPES[name], box, size)
    if not mask.any():
        return mask
    colour = np.array(POLARITY_COLOURS[polarity], dtype=np.float64)
    layer = np.broadcast_to(colour, canvas.shape).copy()
    pattern = texture_pattern(name, box, size)
    layer[pattern] *= PATTERN_DARKEN
    if kind == "faint":  # low contrast, but as noisy (as sharp) as any object
        under = canvas[mask].mean(axis=0)
        layer = under + FAINT_CONTRAST * (layer - under)
    layer += rng.normal(0.0, OBJECT_NOISE, size=(height, width, 1))
    if kind == "blurred":
        x, y, w, h = box
        pad = int(4 * BLUR_SIGMA)
        x0, y0 = max(0, x - pad), max(0, y - pad)
        x1, y1 = min(width, x + w + pad), min(height, y + h + pad)
        merged = canvas.copy()
        merged[mask] = layer[mask]
        window = cv2.GaussianBlur(merged[y0:y1, x0:x1], (0, 0), BLUR_SIGMA)
        soft = cv2.GaussianBlur(mask[y0:y1, x0:x1].astype(np.float64), (0, 0), BLUR_SIGMA)
        region = soft > 0.5
        # The whole out-of-focus patch is blurred, its surroundings too (a defocused spot), so
        # a mask that spills over the object's edge is still blurry; the object is soft > 0.5.
        canvas[y0:y1, x0:x1] = window
        full = np.zeros_like(mask)
        full[y0:y1, x0:x1] = region
        return full
    canvas[mask] = layer[mask]
    return mask


def place_boxes(
    rng: np.random.Generator,
    n: int,
    size: tuple[int, int],
    *,
    min_side: int = 44,
) -> list[tuple[int, int, int, int]]:
    """``n`` object boxes, one per vertical strip of the image (so none hides another), each
    at least ``min_side`` px on both sides (when the strip allows)."""
    width, height = size
    boxes = []
    for k in range(n):
        x0, x1 = k * width // n, (k + 1) * width // n
        cell = x1 - x0
        w_lo = max(1, min(min_side, cell - 4))
        w = int(rng.integers(w_lo, max(w_lo + 1, cell - 6)))
        h_lo = max(1, min(max(min_side, height * 30 // 100), height - 1))
        h = int(rng.integers(h_lo, max(h_lo + 1, height * 75 // 100)))
        x = x0 + int(rng.integers(0, max(1, cell - w)))
        y = int(rng.integers(0, max(1, height - h)))
        boxes.append((x, y, w, h))
    return boxes


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int], margin: int) -> bool:
    """Whether boxes ``a`` and ``b`` (x, y, w, h) come closer than ``margin`` px."""
    return not (
        a[0] + a[2] + margin <= b[0]
        or b[0] + b[2] + margin <= a[0]
        or a[1] + a[3] + margin <= b[1]
        or b[1] + b[3] + margin <= a[1]
    )


def distractor_box(
    rng: np.random.Generator,
    kind: str,
    size: tuple[int, int],
    avoid: list[tuple[int, int, int, int]] | None = None,
) -> tuple[int, int, int, int]:
    """A box for a distractor of ``kind`` that stands free of the boxes in ``avoid`` (at least
    :data:`DISTRACTOR_MARGIN` px away): up to :data:`DISTRACTOR_TRIES` random boxes are drawn,
    and when none is free (a crowded or small image) the last one is used, which may sit on an
    object (drawn first, the object then covers part of it)."""
    width, height = size
    box = (0, 0, 1, 1)
    for _ in range(DISTRACTOR_TRIES):
        side = SPECK_SIDE if kind == "speck" else DISTRACTOR_SIDE
        w = int(rng.integers(side[0], side[1] + 1))
        h = int(rng.integers(side[0], side[1] + 1))
        w, h = min(w, max(1, width - 1)), min(h, max(1, height - 1))  # small images: fit inside
        x, y = int(rng.integers(0, max(1, width - w))), int(rng.integers(0, max(1, height - h)))
        box = (x, y, w, h)
        if not any(_overlaps(box, other, DISTRACTOR_MARGIN) for other in avoid or ()):
            break
    return box


def draw_scene(
    rng: np.random.Generator,
    objects: list[tuple[str, str]],
    distractors: list[tuple[str, str, str]],
    size: tuple[int, int] = (320, 240),
    canvas: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[WorldObject]]:
    """Draw a scene: distractors first, then the objects on top.

    Args:
        objects: ``(class name, polarity)`` per object, left to right.
        distractors: ``(kind, class name, polarity)`` per distractor.
        canvas: the background (``H x W x 3`` float64); default :func:`background`.

    Returns:
        ``(rgb, instances, drawn)``: ``H x W x 3`` uint8; ``H x W`` int32 instance map
        (0 = background, ``k + 1`` = ``drawn[k]``, later drawings over earlier ones; a thing
        left with no visible pixel keeps its entry but no pixel); the drawn things in
        drawing order (distractors, then objects).
    """
    width, height = size
    canvas = background(rng, size) if canvas is None else canvas
    instances = np.zeros((height, width), dtype=np.int32)
    drawn: list[WorldObject] = []
    boxes = place_boxes(rng, len(objects), size) if objects else []
    taken = list(boxes)
    todo = []
    for kind, name, pol in distractors:  # each free of the objects and the distractors before
        taken.append(distractor_box(rng, kind, size, taken))
        todo.append((kind, name, pol, taken[-1]))
    todo += [("object", name, pol, box) for (name, pol), box in zip(objects, boxes, strict=True)]
    for kind, name, pol, box in todo:
        mask = paint(canvas, rng, name, pol, box, kind)
        drawn.append(WorldObject(name, pol, box, kind))
        instances[mask] = len(drawn)
    rgb = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return rgb, instances, drawn


def sample_distractors(
    rng: np.random.Generator,
    rates: dict[str, float],
    names: list[str],
    polarities: list[str],
) -> list[tuple[str, str, str]]:
    """Each distractor kind appears with probability ``rates[kind]``; it copies a random class
    of ``names`` with a polarity other than that class's in ``polarities`` (same index)."""
    out = []
    for kind in DISTRACTOR_KINDS:
        if rates.get(kind, 0.0) > 0 and rng.random() < rates[kind]:
            k = int(rng.integers(len(names)))
            others = [p for p in POLARITIES if p != polarities[k]]
            out.append((kind, names[k], str(rng.choice(others))))
    return out
