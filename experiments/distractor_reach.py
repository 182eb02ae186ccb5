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
        [--interpret] [key=value ...]

No aligner or JMASA model is involved. It loads only the SAM, and with ``--interpret`` also the
config's interpreter, which then describes every kept region's crop (cut from the pixels before
JPEG, so an answer may differ from the cached one of the JPEG image): per kind, how many
descriptions name the drawn class, how many name its colour (the look's polarity: a kept
distractor that does is the kind that misleads), and how many say background.
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
    import sys

    from _regions import split_args

    interpret = "--interpret" in sys.argv
    if interpret:
        sys.argv.remove("--interpret")
    args = split_args(__doc__)

    from iea.config import load_settings
    from iea.data.regions import region_crop
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
    crops: list[tuple[str, object, np.ndarray]] = []  # (kind, drawn thing, crop) per kept one
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
                if interpret:
                    crops.append((thing.kind, thing, region_crop(rgb, labels, kept[at])))
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
    if interpret:
        describe_kept(settings, crops)


def describe_kept(settings, crops: list) -> None:
    """Interpret each kept region's crop and print, per kind, what the descriptions name."""
    from iea.data.world import COLOUR_NAMES
    from iea.models.vlm import VisionLanguageModel
    from iea.vision.interpret import interpret_crops
    from iea.vision.prompts import INTERPRET_REGION

    rt, it = settings.runtime, settings.interpreter
    vlm = VisionLanguageModel.from_ref(
        it.model, device=rt.device, dtype=rt.dtype, trust_remote_code=rt.trust_remote_code,
        cache=rt.model_cache, seed=rt.seed,
    )  # fmt: skip
    answers = interpret_crops(
        vlm, [c for _, _, c in crops], INTERPRET_REGION, it.max_new_tokens, it.batch_size
    )
    tally: dict[str, dict[str, int]] = {}
    for (kind, thing, _), answer in zip(crops, answers, strict=True):
        t = tally.setdefault(kind, {"kept": 0, "class": 0, "colour": 0, "both": 0, "background": 0})
        words = answer.description.lower().split()
        named, colour = thing.name in words, COLOUR_NAMES[thing.polarity] in words
        t["kept"] += 1
        t["class"] += named
        t["colour"] += colour
        t["both"] += named and colour
        t["background"] += "background" in words
    print(f"\nwhat {it.model} says about the kept regions (crops before JPEG)")
    print("| kind | kept | names the class | names its colour | both | says background |")
    print("|---|---|---|---|---|---|")
    for kind, t in tally.items():
        print(
            f"| {kind} | {t['kept']} | {t['class']} | {t['colour']} | {t['both']}"
            f" | {t['background']} |"
        )


if __name__ == "__main__":
    main()
