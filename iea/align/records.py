"""FGCA records: one per (image, region) of the synthetic fine-grained alignment dataset.

FGCA is built backwards from a semantic-segmentation dataset: each region is one class present
in an image, the interpreter gives the region's text ``E``, an LLM writes a text ``T'`` that
mentions every class phrase of the image, and the phrase's span in ``T'`` is the label.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

FGCA_SCHEMA_VERSION = 1
FGCA_SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class FgcaRecord:
    """One FGCA sample.

    ``start``/``end`` are character offsets into ``text`` (end exclusive) with
    ``text[start:end] == phrase`` (the phrase exactly as written in the text: its case may differ
    from the class name). ``word_start``/``word_end`` index ``text.split()`` (end exclusive).
    ``bbox`` is ``[x, y, w, h]`` in image pixels. ``class_id`` indexes the dataset's labels file;
    ``image_class_ids`` are all the classes of the image (each must have exactly one record).
    """

    image_id: str
    region_id: int
    bbox: tuple[int, int, int, int]
    description: str
    text: str
    phrase: str
    start: int
    end: int
    word_start: int
    word_end: int
    class_id: int
    class_name: str
    image_class_ids: tuple[int, ...]
    split: str

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["bbox"] = list(self.bbox)
        d["image_class_ids"] = list(self.image_class_ids)
        return d

    def dumps(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FgcaRecord:
        return cls(
            **{**d, "bbox": tuple(d["bbox"]), "image_class_ids": tuple(d["image_class_ids"])}
        )
