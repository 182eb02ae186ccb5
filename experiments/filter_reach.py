"""How much of a split the region filters can touch: regions per reason they fail, and how many
of those the aligner maps to a phrase (only those reach an instruction).

Trains (or reuses, by content key) the config's aligner, gathers the split's regions with every
filter off on the cached stages (:func:`flows.thresholds.gather_regions`: SAM, the generator's
own cuts and ``segment.num_regions`` still apply), then counts, at the config's thresholds,
the regions failing each check (:func:`iea.vision.filters.drop_flags`) and the aligned ones
among them. No JMASA model is involved: all of this is upstream of it::

    .venv/bin/python experiments/filter_reach.py --config configs/demo.yaml [--split test] \\
        [key=value ...]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def main() -> None:
    from _regions import split_args

    args = split_args(__doc__)

    from flows import set_offline_defaults

    set_offline_defaults()
    from flows.preprocess import prepare_source, split_tweets, twitter_preprocessing
    from flows.thresholds import gather_regions
    from flows.train import aligner_training
    from iea.config import load_settings
    from iea.vision.filters import REASONS, Thresholds, drop_flags

    settings = load_settings(args.config, args.overrides)
    aligner = aligner_training(args.config, args.overrides, register=False)
    data = twitter_preprocessing(args.config, args.overrides)
    tweets = split_tweets(settings.store, data["store_prefix"], args.split)
    _, images = prepare_source(settings)
    split = gather_regions(settings, {args.split: tweets}, Path(images), aligner)[args.split]
    f = settings.filters
    flags = drop_flags(split.features, Thresholds(f.t_size, f.t_clarity, f.t_conf))
    aligned = {
        (tw.image_id, r.region_id)
        for tw, rs in zip(split.tweets, split.aligned, strict=True)
        for r in rs
    }
    is_aligned = np.array([owner in aligned for owner in split.owner], dtype=bool)
    n_images = len({image for image, _ in split.owner})
    n, n_aligned = len(split.owner), int(is_aligned.sum())
    print(f"{args.split}: {n} regions over {n_images} images, {n_aligned} aligned")
    for k, reason in enumerate(REASONS):
        col = flags[:, k]
        print(f"  fail {reason}: {col.sum()} ({(col & is_aligned).sum()} aligned)")
    drop = flags.any(axis=1)
    print(
        f"  dropped at the config's thresholds: {drop.sum()} ({(drop & is_aligned).sum()} aligned)"
    )


if __name__ == "__main__":
    main()
