"""Convert a public-format Twitter dataset into canonical JSONL with a manifest.

Output layout (``out``): ``{train,dev,test}.jsonl`` (one :class:`Tweet` per line),
``rejects.jsonl`` (one :class:`Reject` per line, empty when none) and ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from iea.data.images import check_images
from iea.data.records import POLARITIES, SCHEMA_VERSION, SPLITS, Tweet, base_id
from iea.data.twitter import Reject, read_file, split_file

MAX_LISTED = 20


class DataFormatError(ValueError):
    """Input that cannot be converted; ``rejects`` holds every bad record found."""

    def __init__(self, rejects: Sequence[Reject]):
        self.rejects = list(rejects)
        lines = [f"{r.where}: {r.reason}" for r in self.rejects[:MAX_LISTED]]
        more = len(self.rejects) - MAX_LISTED
        if more > 0:
            lines.append(f"... and {more} more")
        super().__init__(
            "\n".join(lines) + "\n(use --skip-bad to quarantine them to rejects.jsonl)"
        )


class MissingImagesError(ValueError):
    """Some records' images are missing or unusable (``--require-images``)."""

    def __init__(self, report: dict):
        self.report = report
        lines = [
            f"{kind}: {item['detail']}"
            for kind, items in sorted(report["bad"].items())
            for item in items
        ]
        shown = lines[:MAX_LISTED] + (
            [f"... and {len(lines) - MAX_LISTED} more"] if len(lines) > MAX_LISTED else []
        )
        super().__init__(
            f"{len(lines)} of {report['checked']} images are unusable:\n" + "\n".join(shown)
        )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def split_stats(tweets: Iterable[Tweet]) -> dict[str, int]:
    """``{"tweets", "aspects", "POS", "NEU", "NEG"}`` for one split."""
    tweets = list(tweets)
    pols = Counter(a.polarity for t in tweets for a in t.aspects)
    return {
        "tweets": len(tweets),
        "aspects": sum(pols.values()),
        **{p: pols[p] for p in POLARITIES},
    }


def read_split(fmt: str, src: Path, split: str) -> tuple[list[Tweet], list[Reject]]:
    """Read one split of a public-format dataset."""
    path = split_file(fmt, src, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing {split} file for format {fmt!r}")
    items = read_file(fmt, path)
    return [i for i in items if isinstance(i, Tweet)], [i for i in items if isinstance(i, Reject)]


def convert(
    fmt: str,
    src: Path,
    out: Path,
    *,
    images: Path | None = None,
    require_images: bool = False,
    skip_bad: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Convert all three splits and write them to ``out``; returns the manifest.

    Raises:
        FileNotFoundError: a split file is missing.
        DataFormatError: bad records were found and ``skip_bad`` is off (nothing is written).
        MissingImagesError: ``require_images`` is on and some images are unusable (the outputs
            and the manifest are still written, so the report is kept).
    """
    log = log or (lambda _msg: None)
    src, out = Path(src), Path(out)
    splits: dict[str, list[Tweet]] = {}
    rejects: list[Reject] = []
    inputs: dict[str, dict[str, str]] = {}
    for split in SPLITS:
        path = split_file(fmt, src, split)
        tweets, bad = read_split(fmt, src, split)
        inputs[split] = {"path": str(path), "sha256": sha256_file(path)}
        splits[split] = tweets
        rejects.extend(bad)
        log(
            f"{split}: {len(tweets)} tweets read from {path}" + (f", {len(bad)} bad" if bad else "")
        )
    if rejects and not skip_bad:
        raise DataFormatError(rejects)

    image_report = None
    if images is not None:
        ids = [t.image_id for tweets in splits.values() for t in tweets]
        image_report = check_images(images, ids)
        log(f"images: {image_report['ok']} of {image_report['checked']} usable in {images}")

    out.mkdir(parents=True, exist_ok=True)
    for split, tweets in splits.items():
        _write_atomic(out / f"{split}.jsonl", "".join(t.dumps() + "\n" for t in tweets))
    _write_atomic(
        out / "rejects.jsonl",
        "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in rejects),
    )
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "format": fmt,
        "source": str(src),
        "inputs": inputs,
        "counts": {split: split_stats(tweets) for split, tweets in splits.items()},
        "version": dataset_version(out, image_report["sha256"] if image_report else None),
        "rejects": {
            "count": len(rejects),
            "file": "rejects.jsonl",
            "reasons": dict(Counter(r.reason.split(":")[0] for r in rejects)),
        },
        "duplicates": find_duplicates(splits),
        "images": image_report,
    }
    _write_atomic(out / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    if require_images and image_report and image_report["bad"]:
        raise MissingImagesError(image_report)
    return manifest


def find_duplicates(splits: dict[str, list[Tweet]]) -> list[dict[str, object]]:
    """Tweets that occur more than once in a split (same image and text): all kept, listed here."""
    dups = []
    for split, tweets in splits.items():
        by_base: dict[str, list[str]] = {}
        for t in tweets:
            by_base.setdefault(base_id(t.image_id, t.tokens), []).append(t.id)
        for ids in by_base.values():
            if len(ids) > 1:
                image = next(t.image_id for t in tweets if t.id == ids[0])
                dups.append({"split": split, "ids": ids, "image_id": image})
    return dups


def dataset_version(out: Path, images_sha256: str | None = None) -> str:
    """Content address of a converted dataset: sha256 over the schema, the split files and,
    when the dataset has images, their digest (:func:`iea.data.images.check_images`): a
    changed image is a new version."""
    h = hashlib.sha256(f"schema={SCHEMA_VERSION}\n".encode())
    if images_sha256:
        h.update(f"images={images_sha256}\n".encode())
    for split in SPLITS:
        h.update(f"{split}\n".encode())
        h.update(bytes.fromhex(sha256_file(Path(out) / f"{split}.jsonl")))
    return h.hexdigest()[:16]


def load_split(path: Path) -> list[Tweet]:
    """Read a canonical ``SPLIT.jsonl``.

    Raises:
        ValueError: ``file:line: reason`` for a line that is not a canonical record.
    """
    tweets = []
    with open(path, encoding="utf-8") as fh:
        for no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                tweets.append(Tweet.from_json(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{no}: not a canonical tweet record: {e}") from e
    return tweets


def dataset_stats(out: Path) -> dict[str, dict[str, int]]:
    """Per-split stats of a converted dataset directory."""
    return {split: split_stats(load_split(Path(out) / f"{split}.jsonl")) for split in SPLITS}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
