"""FGCA building blocks: records from a synthesized text, splits by image, Table 1 statistics.

The order of work per image (see ``flows/fgca.py``): class regions from the label map -> the
interpreter's text ``E`` per region -> one LLM text ``T'`` per image -> each class phrase located
in ``T'`` -> one :class:`FgcaRecord` per region. Images are then split (never one image in two
splits) and validated before anything is stored; the dataset helpers at the end (the synthesis
gate, the split, the files and their version, the quarantine rows) are what the flow calls.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from iea.align.records import FGCA_SPLITS, FgcaRecord
from iea.vision.segment import Region


def image_records(
    image_id: str,
    text: str,
    regions: Sequence[tuple[Region, str, str]],
    spans: dict[str, tuple[int, int, int, int]],
    split: str = "",
) -> list[FgcaRecord]:
    """One record per region of an image.

    Args:
        regions: ``(region, class_name, description E)``; ``region.id`` is the class index.
        spans: class phrase -> ``(start, end, word_start, word_end)`` in ``text``.
    """
    from iea.data.pascal_classes import class_phrase

    class_ids = tuple(sorted(r.id for r, _, _ in regions))
    out = []
    for region, name, description in regions:
        start, end, w0, w1 = spans[class_phrase(name)]
        out.append(
            FgcaRecord(
                image_id=image_id,
                region_id=region.id,
                bbox=region.bbox,
                description=description,
                text=text,
                phrase=text[start:end],
                start=start,
                end=end,
                word_start=w0,
                word_end=w1,
                class_id=region.id,
                class_name=name,
                image_class_ids=class_ids,
                split=split,
            )
        )
    return out


def split_images(
    classes_by_image: dict[str, Iterable[int]], sizes: dict[str, int], seed: int
) -> dict[str, str]:
    """Assign each image to train/val/test.

    Images are shuffled with ``seed`` and dealt out in the proportions of ``sizes`` (exact sizes
    when there are enough images; scaled down, train first, when there are fewer). An image of
    val/test holding a class that no train image has is then moved to train, so every evaluated
    class was seen in training.

    Returns:
        image id -> split name.
    """
    ids = sorted(classes_by_image)
    random.Random(seed).shuffle(ids)
    total = sum(sizes.values())
    want = {s: sizes[s] for s in FGCA_SPLITS}
    if len(ids) < total:
        want = {s: (len(ids) * sizes[s]) // total for s in FGCA_SPLITS}
        want["train"] += len(ids) - sum(want.values())
    assign: dict[str, str] = {}
    pos = 0
    for split in FGCA_SPLITS:
        for image_id in ids[pos : pos + want[split]]:
            assign[image_id] = split
        pos += want[split]
    seen = {c for i, s in assign.items() if s == "train" for c in classes_by_image[i]}
    for image_id in ids:  # deterministic order
        if assign.get(image_id) in ("val", "test") and not set(classes_by_image[image_id]) <= seen:
            assign[image_id] = "train"
            seen |= set(classes_by_image[image_id])
    return assign


def table1_stats(records: Iterable[FgcaRecord]) -> dict[str, dict[str, float]]:
    """The paper's Table 1 columns per split: ``samples`` (texts = images), ``regions``
    (records), ``classes`` (distinct), ``regions_per_image`` (mean)."""
    by_split: dict[str, list[FgcaRecord]] = {s: [] for s in FGCA_SPLITS}
    for r in records:
        by_split.setdefault(r.split, []).append(r)
    out = {}
    for split, rows in by_split.items():
        images = Counter(r.image_id for r in rows)
        out[split] = {
            "samples": len(images),
            "regions": len(rows),
            "classes": len({r.class_id for r in rows}),
            "regions_per_image": round(len(rows) / len(images), 3) if images else 0.0,
        }
    return out


# ----------------------------------------------------------------------------- the dataset
# What turns the per-image outcomes of ``iea.align.build`` into a versioned dataset: the
# synthesis gate, the split, the files and their version, and the quarantine rows. Pure: the
# flow (``flows/fgca.py``) runs the validation suite and stores what these return.


class FgcaGateFailed(RuntimeError):
    """Too few images survived synthesis; the message says how many and why."""


@dataclass(frozen=True)
class SynthesisGate:
    """The gate on synthesis: the images that gave records, and why the others did not.

    ``lost`` counts readable images that gave no records; unreadable samples (on the real
    dataset, VOC JPEGs that PASCAL-Context never labelled) are quarantined and counted in
    ``stats`` but not gated.
    """

    good: list  # ImageOutcome with records
    readable: int
    lost: int
    max_fraction: float
    reasons: Counter
    stats: dict[str, Any]

    @property
    def ok(self) -> bool:
        return bool(self.good) and self.lost <= self.max_fraction * self.readable

    def failure(self, details: str) -> FgcaGateFailed:
        """The error to raise when not :attr:`ok`, naming counts, reasons and ``details``."""
        return FgcaGateFailed(
            f"FGCA gate failed: {self.lost} of {self.readable} readable images quarantined "
            f"(allowed {self.max_fraction:.0%}): "
            + ", ".join(f"{n} {why}" for why, n in self.reasons.most_common())
            + f"; details in {details}"
        )


def synthesis_gate(outcomes: Sequence, readable: int, max_fraction: float) -> SynthesisGate:
    """Judge the per-image outcomes (``iea.align.build.ImageOutcome``) of ``readable``
    readable images (the rest of ``outcomes`` were quarantined while reading)."""
    good = [o for o in outcomes if o.reason is None]
    reasons = Counter(o.reason for o in outcomes if o.reason is not None)
    stats = {
        "images": len(outcomes),
        "readable_images": readable,
        "images_from_cache": sum(o.cached for o in outcomes),
        "quarantined_images": len(outcomes) - len(good),
        "quarantine_reasons": dict(reasons),
    }
    return SynthesisGate(good, readable, readable - len(good), max_fraction, reasons, stats)


def split_records(good: Sequence, sizes: dict[str, int], seed: int) -> list[FgcaRecord]:
    """The records of the good images with their split (:func:`split_images`; images the
    sizes leave out are not in any split)."""
    assign = split_images({o.image_id: [r.class_id for r in o.records] for o in good}, sizes, seed)
    return [
        replace(r, split=assign[o.image_id])
        for o in good
        for r in o.records
        if o.image_id in assign
    ]


def failed_rows(failures: Sequence[dict], rows: Sequence, records: Sequence[FgcaRecord]) -> list:
    """Quarantine rows for the validation failures: ``failures`` are the suite's
    ``{"check", "severity", "ids"}``, ``rows`` the validated frame's row ids, in the order of
    ``records`` (no rows: the frame was empty)."""
    by_row = dict(zip(rows, records, strict=True)) if len(rows) else {}
    out = []
    for failure in failures:
        for row_id in failure["ids"]:
            rec = by_row.get(row_id)
            out.append(
                {
                    "image_id": rec.image_id if rec else None,
                    "row": row_id,
                    "reason": f"failed check: {failure['check']}",
                    "severity": failure["severity"],
                    "record": rec.to_json() if rec else None,
                }
            )
    return out


def quarantine_rows(outcomes: Sequence, failed: Sequence[dict]) -> list[dict]:
    """Every quarantined image (with its reason and detail), then every failed row."""
    rows = [
        {"image_id": o.image_id, "reason": o.reason, "detail": o.detail}
        for o in outcomes
        if o.reason is not None
    ]
    return rows + list(failed)


def drop_failed_images(
    records: Sequence[FgcaRecord], failed: Sequence[dict]
) -> tuple[list[FgcaRecord], set[str]]:
    """The records without any image a failed row belongs to (a warning check drops whole
    images: an image's regions share one text), and those images' ids."""
    dropped = {row["image_id"] for row in failed}
    return [r for r in records if r.image_id not in dropped], dropped


def dataset_files(records: Sequence[FgcaRecord]) -> tuple[dict[str, str], str]:
    """``({split: its JSON lines}, version)``: the version is the first 16 hex digits of the
    SHA-256 of the splits' lines in :data:`FGCA_SPLITS` order (the content, nothing else)."""
    files = {
        split: "".join(r.dumps() + "\n" for r in records if r.split == split)
        for split in FGCA_SPLITS
    }
    version = hashlib.sha256("".join(files[s] for s in FGCA_SPLITS).encode()).hexdigest()[:16]
    return files, version
