"""FGCA building blocks: records from a synthesized text, splits by image, Table 1 statistics.

The order of work per image (see ``flows/fgca.py``): class regions from the label map -> the
interpreter's text ``E`` per region -> one LLM text ``T'`` per image -> each class phrase located
in ``T'`` -> one :class:`FgcaRecord` per region. Images are then split (never one image in two
splits) and validated before anything is stored.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence

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
