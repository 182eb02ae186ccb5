"""The PASCAL-Context 59-class subset and the phrase a text uses for each class."""

from __future__ import annotations

PASCAL_CONTEXT_59: tuple[str, ...] = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow",
    "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground",
    "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate", "platform",
    "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa",
    "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
)  # fmt: skip

_PHRASES = {"pottedplant": "potted plant", "tvmonitor": "tv monitor", "aeroplane": "airplane"}


def class_phrase(name: str) -> str:
    """The words a text uses for a class: ``pottedplant`` -> ``potted plant``; most names are
    their own phrase. Names from ``labels.txt`` may carry spaces or slashes: the first
    alternative of ``a/b`` is used."""
    name = name.strip().split("/")[0].strip()
    return _PHRASES.get(name, name.replace("_", " "))
