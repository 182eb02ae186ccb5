"""Batch prediction: the requests of an input, and the summary of the answers.

Inputs (:func:`read_requests`):

* a JSONL file, one tweet a line: ``{"text": "...", "image": "path"}`` (``id`` optional; a
  relative ``image`` is relative to the file's folder). Read line by line: a file of any
  length needs the memory of one chunk.
* a public-format annotation file or folder (``tombert``, ``tombert_txt``, ``vlp``,
  ``conll``; :mod:`iea.data.twitter`) with ``images`` the folder of its ``image_id``\\ s. Read
  one split file at a time.

A line or record that cannot be read becomes a :class:`Failed` with its place and reason, like
an image that cannot be read or a prediction that raises: written to ``failures.jsonl``,
counted, never dropped.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from iea.data.records import base_id


@dataclass(frozen=True)
class Request:
    """One tweet to answer: ``where`` is its place in the input (``file:line``)."""

    id: str
    text: str
    image: str
    where: str


@dataclass(frozen=True)
class Failed:
    """A tweet with no answer: where it came from and why."""

    where: str
    reason: str
    id: str | None = None
    image: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def read_requests(
    path: str | Path, images: str | Path | None = None, fmt: str | None = None
) -> Iterator[Request | Failed]:
    """The requests of ``path`` in input order (module doc); ``fmt`` None: a JSONL file.

    Raises:
        FileNotFoundError: ``path`` does not exist. ValueError: a format input without
            ``images``, or an unknown format.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if fmt is None:
        yield from _read_jsonl(path)
        return
    from iea.data.twitter import FORMATS, read_file, split_file

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if images is None:
        raise ValueError(f"{path}: a {fmt} input needs --images, the folder of its image ids")
    if path.is_dir():
        files = [split_file(fmt, path, s) for s in ("train", "dev", "test")]
        files = [f for f in files if f.is_file()]
        if not files:
            raise FileNotFoundError(f"{path}: no {fmt} split file (train, dev, test)")
    else:
        files = [path]
    for f in files:
        for item in read_file(fmt, f):
            if hasattr(item, "tokens"):
                yield Request(
                    item.id, " ".join(item.tokens), str(Path(images) / item.image_id), f"{f}"
                )
            else:
                yield Failed(item.where, f"unreadable record: {item.reason}")


def _read_jsonl(path: Path) -> Iterator[Request | Failed]:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            where = f"{path}:{n}"
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield Failed(where, f"not JSON: {e.msg}")
                continue
            if not isinstance(row, dict):
                yield Failed(where, "not a JSON object")
                continue
            text, image = row.get("text"), row.get("image")
            if not isinstance(text, str) or not text.split():
                yield Failed(where, "no text", row.get("id"), image)
                continue
            if not isinstance(image, str) or not image:
                yield Failed(where, "no image path", row.get("id"))
                continue
            img = Path(image) if Path(image).is_absolute() else path.parent / image
            rid = str(row.get("id") or base_id(img.name, tuple(text.split())))
            yield Request(rid, text, str(img), where)


@dataclass
class Summary:
    """Counts of a batch: tweets read, answered and failed, pairs per polarity, failure
    reasons (their first words: ``image``, ``no text``...)."""

    requests: int = 0
    answered: int = 0
    failed: int = 0
    pairs: int = 0
    polarity: Counter = field(default_factory=Counter)
    failure_reasons: Counter = field(default_factory=Counter)
    with_pairs: int = 0

    def add_answer(self, answer: dict) -> None:
        self.requests += 1
        self.answered += 1
        self.pairs += len(answer["pairs"])
        self.with_pairs += bool(answer["pairs"])
        self.polarity.update(p["polarity"] for p in answer["pairs"])

    def add_failure(self, failure: Failed) -> None:
        self.requests += 1
        self.failed += 1
        self.failure_reasons[failure.reason.split(":")[0]] += 1

    def to_json(self) -> dict:
        return {
            "requests": self.requests,
            "answered": self.answered,
            "failed": self.failed,
            "pairs": self.pairs,
            "tweets_with_pairs": self.with_pairs,
            "polarity": dict(sorted(self.polarity.items())),
            "failure_reasons": dict(sorted(self.failure_reasons.items())),
        }
