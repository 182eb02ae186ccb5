"""Where the synthetic world's distractors go before any filter: drawn, found by the mask
generator, kept by the postprocess as a region.

For each image of a split of the config's synthetic world, the scene is drawn again from its
seed (:func:`iea.data.synthetic.draw_scene_of`: the pixels before JPEG, and the instance map
of every drawn thing), segmented with the config's ``segment`` settings (SAM, the generator's
own cuts, ``num_regions``, ``min_own_share``), and each visible drawn thing counts as

* *found* when one of the generator's masks covers it at IoU >= 0.5, and
* *kept* when one of the image's non-background regions does,

per kind (``object`` and the distractor kinds), with the mean predicted IoU of its best found
mask and how many kept ones fall below ``filters.t_conf``. A filter can only act on what is
kept, so this bounds what the region filters can change (``experiments/filter_reach.py``
counts the regions they drop and how many of those the aligner maps to a phrase)::

    .venv/bin/python experiments/distractor_reach.py --config configs/demo.yaml [--split test] \\
        [key=value ...]

No aligner, interpreter or JMASA model is involved; it loads only the SAM.
"""

from __future__ import annotations

import random

import numpy as np


def best_iou(masks: list[np.ndarray], target: np.ndarray) -> tuple[float, int]:
    """The best IoU of ``masks`` (each ``H x W`` bool) with ``target`` and its index (-1: none)."""
    best, at = 0.0, -1
    for k, m in enumerate(masks):
        union = int((m | target).sum())
        iou = int((m & target).sum()) / union if union else 0.0
        if iou > best:
            best, at = iou, k
    return best, at


def main() -> None:
    from _regions import split_args

    args = split_args(__doc__)

    from iea.config import load_settings
    from iea.data.synthetic import WorldSettings, draw_scene_of, make_tweet
    from iea.models.sam import load_sam
    from iea.vision.segment import build_mask_generator, segment_image

    settings = load_settings(args.config, args.overrides)
    syn, seg = settings.data.synthetic, settings.segment
    if settings.data.source != "synthetic":
        raise SystemExit(f"{args.config}: data.source is {settings.data.source!r}, not synthetic")
    world = WorldSettings(syn.text_polarity_rate, dict(syn.distractors), syn.mention_order_rate)
    rt = settings.runtime
    sam = load_sam(
        seg.sam, seg.sam_checkpoint, device=rt.device, cache=rt.model_cache, seed=rt.seed
    )
    generator = build_mask_generator(sam, seg)
    first = {"train": 0, "dev": syn.n_train, "test": syn.n_train + syn.n_dev}[args.split]
    count = {"train": syn.n_train, "dev": syn.n_dev, "test": syn.n_test}[args.split]
    rng = random.Random(syn.seed)  # the tweets are drawn in order over the three splits
    stats: dict[str, dict] = {}
    n_regions = 0
    for index in range(first + count):
        tweet = make_tweet(rng, index, world)
        if index < first:
            continue
        rgb, instances, drawn = draw_scene_of(tweet, (320, 240), syn.seed * 100_003 + index, world)
        anns = generator.generate(rgb)
        labels, regions = segment_image(
            rgb, generator.generate, seg.num_regions, max_side=seg.max_side,
            min_side=seg.min_side, min_own_share=seg.min_own_share,
        )  # fmt: skip
        n_regions += len(regions)
        kept = [r for r in regions if not r.is_background]
        kept_masks = [labels == r.id for r in kept]
        for k, thing in enumerate(drawn):
            target = instances == k + 1
            if not target.any():
                continue  # covered whole by later drawings
            s = stats.setdefault(
                thing.kind, {"drawn": 0, "found": 0, "kept": 0, "iou": [], "low": 0}
            )
            s["drawn"] += 1
            iou, at = best_iou([a["segmentation"] for a in anns], target)
            if iou >= 0.5:
                s["found"] += 1
                s["iou"].append(anns[at]["predicted_iou"])
            iou, at = best_iou(kept_masks, target)
            if iou >= 0.5:
                s["kept"] += 1
                s["low"] += kept[at].predicted_iou < settings.filters.t_conf
    print(
        f"{args.split}: {count} images, {n_regions} regions (segment: points_per_side"
        f" {seg.points_per_side}, stability {seg.stability_score_thresh}, num_regions"
        f" {seg.num_regions}, min_own_share {seg.min_own_share})"
    )
    print(
        "| kind | drawn (visible) | found by the generator | kept as a region"
        " | of those below t_conf | mean predicted IoU when found |"
    )
    print("|---|---|---|---|---|---|")
    for kind, s in stats.items():
        mean = f"{np.mean(s['iou']):.2f}" if s["iou"] else "-"
        print(f"| {kind} | {s['drawn']} | {s['found']} | {s['kept']} | {s['low']} | {mean} |")


if __name__ == "__main__":
    main()
