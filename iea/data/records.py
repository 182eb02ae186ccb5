"""Canonical Twitter records: one per tweet, the same whatever public format it came from."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

SCHEMA_VERSION = 1
POLARITIES: tuple[str, ...] = ("POS", "NEU", "NEG")
Polarity = Literal["POS", "NEU", "NEG"]
SPLITS: tuple[str, ...] = ("train", "dev", "test")


class Aspect(NamedTuple):
    """A gold (or predicted) aspect: word span ``tokens[start:end]`` (end exclusive) + polarity.

    A plain tuple ``(start, end, polarity)``, so :mod:`iea.metrics` needs no import of it.
    """

    start: int
    end: int
    polarity: str

    def to_json(self) -> dict[str, Any]:
        return {"from": self.start, "to": self.end, "polarity": self.polarity}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Aspect:
        return cls(int(obj["from"]), int(obj["to"]), str(obj["polarity"]))


@dataclass(frozen=True)
class Tweet:
    """One canonical tweet.

    ``id`` is ``<image stem>-<8 hex of sha1(text)>`` (plus ``-<n>`` for the n-th repeat, n >= 2,
    of the same tweet within one file), so a tweet gets the same id from every format.
    ``aspects`` are sorted by span.
    """

    id: str
    tokens: tuple[str, ...]
    image_id: str
    aspects: tuple[Aspect, ...] = field(default_factory=tuple)

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tokens": list(self.tokens),
            "image_id": self.image_id,
            "aspects": [a.to_json() for a in self.aspects],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Tweet:
        return cls(
            id=str(obj["id"]),
            tokens=tuple(obj["tokens"]),
            image_id=str(obj["image_id"]),
            aspects=tuple(sorted(Aspect.from_json(a) for a in obj.get("aspects", []))),
        )


def base_id(image_id: str, tokens: tuple[str, ...] | list[str]) -> str:
    """The format-independent part of a tweet id (image stem + hash of the text)."""
    stem = image_id.rsplit(".", 1)[0] if "." in image_id else image_id
    digest = hashlib.sha1(" ".join(tokens).encode("utf-8")).hexdigest()[:8]
    return f"{stem}-{digest}"


def normalize_image_id(image_id: str, default_ext: str = ".jpg") -> str:
    """Image ids always carry an extension (CoNLL's ``IMGID:123`` becomes ``123.jpg``)."""
    image_id = image_id.strip()
    return image_id if "." in image_id.rsplit("/", 1)[-1] else image_id + default_ext
