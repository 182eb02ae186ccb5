"""Segmentation and interpretation throughput and peak memory, and the fast mask generator's
agreement with the stock one.

    .venv/bin/python benchmarks/interpret.py [--images 8] [--config configs/demo.yaml] [k=v ...]

On the same images and the config's SAM, measures the segmentation stage
(``iea.vision.segment.segment_image``: resize, generate, postprocess to <= L regions, plus the
region features) with

* stock: segment-anything's ``SamAutomaticMaskGenerator`` (``segment.generator=stock``);
* fast: :class:`iea.vision.masks.FastMaskGenerator` (``segment.generator=fast``);

and interpretation: the config's VLM over every kept region (greedy, bounded) three ways, on
the same crops in one process: one crop per ``generate`` call (a plain HF loop), one image's
crops in batches of ``interpreter.batch_size`` (what the flow did before
``ImageInterpreter.run_many``), and every image's crops in one call batched across images
(what the flow and ``tweet_inputs`` do now, ``interpreter.image_batch`` images at a time); it
checks that the three give the same answers.

Each measurement runs in a fresh process (so its peak memory is its own) after one warm-up
image; the median per-image time is reported with the throughput. Timed images are the
config's synthetic tweet images; the agreement (per image: the same number of regions, and the
mean IoU of region k of stock's label map with region k of fast's) also covers three awkward
images (1600 x 1200, 48 x 36, grayscale), which are not timed. A fourth process runs both
segmentation paths on the same SAM, alternating which goes first image by image, so that the
machine's load falls on both: its ratio is the side-by-side one (the separate processes' ratio
moves with the load between them).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty

import numpy as np


def _images(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    from iea.data.synthetic import draw_image, make_tweet

    rng = random.Random(0)
    return [np.asarray(draw_image(make_tweet(rng, i), size, 100 + i)) for i in range(n + 1)]


def _awkward() -> list[np.ndarray]:
    import cv2

    from iea.data.synthetic import draw_image, make_tweet

    rng = random.Random(1)
    color = np.asarray(draw_image(make_tweet(rng, 2), (320, 240), 8))
    gray = cv2.cvtColor(color, cv2.COLOR_RGB2GRAY)
    return [
        np.asarray(draw_image(make_tweet(rng, 1), (1600, 1200), 7)),
        np.asarray(draw_image(make_tweet(rng, 3), (48, 36), 9)),
        cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB),
    ]


def _agreement(a: np.ndarray, b: np.ndarray) -> tuple[bool, float]:
    """(same region count, mean IoU of region k in ``a`` and in ``b`` over the ids of either)."""
    ids = sorted(set(np.unique(a).tolist()) | set(np.unique(b).tolist()))
    ious = []
    for k in ids:
        x, y = a == k, b == k
        ious.append(float((x & y).sum() / max(1, (x | y).sum())))
    return len(np.unique(a)) == len(np.unique(b)), float(np.mean(ious))


def _peak_mib() -> float:
    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else rss


def _measure(kind: str, config: str | None, overrides: list[str], n: int, queue) -> None:
    import torch

    from iea.config import load_settings
    from iea.models.sam import load_sam
    from iea.vision.filters import RegionFeatures, Thresholds, keep_mask
    from iea.vision.interpret import interpret_crops, region_crop
    from iea.vision.interpreter import segment_regions
    from iea.vision.prompts import INTERPRET_REGION
    from iea.vision.segment import build_mask_generator

    s = load_settings(config, overrides)
    rt, seg = s.runtime, s.segment
    if kind in ("stock", "fast"):
        seg = seg.model_copy(update={"generator": kind})
    torch.set_grad_enabled(False)
    images = _images(n, s.data.synthetic.image_size)
    generator = build_mask_generator(
        load_sam(seg.sam, seg.sam_checkpoint, device=rt.device, cache=rt.model_cache), seg
    )

    def segment(img):  # the stage's work on a cache miss: masks, postprocess, features
        return segment_regions(img, generator.generate, seg)

    times, counts, extra = [], [], {}
    if kind == "side by side":  # both generators in one process, alternating image by image
        sam = generator.predictor.model
        both = {
            name: build_mask_generator(sam, seg.model_copy(update={"generator": name}))
            for name in ("stock", "fast")
        }
        spent = {name: [] for name in both}
        for g in both.values():
            segment_regions(images[0], g.generate, seg)  # warm-up
        for i, img in enumerate(images[1:]):
            for name in ("stock", "fast") if i % 2 == 0 else ("fast", "stock"):
                t0 = time.perf_counter()
                segment_regions(img, both[name].generate, seg)
                spent[name].append(time.perf_counter() - t0)
        queue.put({"kind": kind, **spent, "device": str(generator.predictor.device)})
        return
    if kind == "interpret":
        from iea.models.vlm import VisionLanguageModel

        vlm = VisionLanguageModel.from_ref(
            s.interpreter.model, device=rt.device, dtype=rt.dtype, cache=rt.model_cache
        )
        f = s.filters
        work = []
        for img in images:
            labels, regions = segment(img)
            keep = keep_mask(
                RegionFeatures.of(regions), Thresholds(f.t_size, f.t_clarity, f.t_conf)
            )
            work.append(
                [region_crop(img, labels, r) for r, k in zip(regions, keep, strict=True) if k]
            )

        it = s.interpreter

        def run(crops, batch_size):
            return interpret_crops(vlm, crops, INTERPRET_REGION, it.max_new_tokens, batch_size)

        # three ways over the same crops, alternating image by image so that machine noise
        # falls on all three: one crop per generate call (the plain HF loop), one image's
        # crops in batches of interpreter.batch_size (the flow before run_many), and (below)
        # every image's crops in one call, batched across images (run_many, the flow now)
        modes = {"one-by-one": 1, "per image": it.batch_size}
        for batch_size in modes.values():
            run(work[0], batch_size)  # warm-up
        spent = dict.fromkeys([*modes, "across images"], 0.0)
        raw = {m: [] for m in spent}
        for crops in work[1:]:
            for mode, batch_size in modes.items():
                t0 = time.perf_counter()
                raw[mode] += [a.raw for a in run(crops, batch_size)]
                spent[mode] += time.perf_counter() - t0
            times.append(spent["per image"])
            counts.append(len(crops))
        every = [c for crops in work[1:] for c in crops]
        t0 = time.perf_counter()
        raw["across images"] = [a.raw for a in run(every, it.batch_size)]
        spent["across images"] = time.perf_counter() - t0
        times = [spent["per image"] / len(work[1:])] * len(work[1:])
        extra = {
            "modes": spent,
            "regions": len(every),
            "same": len({tuple(v) for v in raw.values()}) == 1,
        }
    else:
        labels = []
        segment(images[0])
        for img in images[1:]:
            t0 = time.perf_counter()
            label_map, regions = segment(img)
            times.append(time.perf_counter() - t0)
            counts.append(len(regions))
            labels.append(label_map)
        peak = _peak_mib()  # the awkward images below are not part of the timing
        labels += [segment(img)[0] for img in _awkward()]
    queue.put(
        {
            "kind": kind,
            "times": times,
            "counts": counts,
            "peak_mib": peak if kind != "interpret" else _peak_mib(),
            "device": str(generator.predictor.device),
            "labels": labels if kind != "interpret" else [],
            **extra,
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    overrides = list(args.overrides)
    if not any(o.startswith("runtime.model_cache=") for o in overrides):
        overrides.append(f"runtime.model_cache={Path(tempfile.gettempdir()) / 'iea-bench-models'}")
    ctx = mp.get_context("spawn")
    results = {}
    for kind in ("stock", "fast", "side by side", "interpret"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_measure, args=(kind, args.config, overrides, args.images, queue))
        proc.start()
        while True:  # a child that dies before it reports must not leave us waiting forever
            try:
                results[kind] = queue.get(timeout=5)
                break
            except Empty:
                if not proc.is_alive():
                    sys.exit(f"{kind} measurement died before reporting (exit {proc.exitcode})")
        proc.join()
        if proc.exitcode:
            sys.exit(f"{kind} measurement failed (exit {proc.exitcode})")
    device = results["stock"]["device"]
    print(f"config {args.config} {' '.join(args.overrides)}; {args.images} images; device {device}")
    print("| stage | images/s | median s/image | units/s | peak MiB |\n|---|---|---|---|---|")
    units = dict.fromkeys(results, "regions")
    pair = results.pop("side by side")
    for kind, r in results.items():
        total = sum(r["times"])
        print(
            f"| {kind} | {len(r['times']) / total:.2f} | {statistics.median(r['times']):.3f} | "
            f"{sum(r['counts']) / total:.1f} {units[kind]} | {r['peak_mib']:.0f} |"
        )
    names = [f"image {i + 1}" for i in range(args.images)] + ["1600x1200", "48x36", "grayscale"]
    for kind in ("fast",):
        ratio = sum(results["stock"]["times"]) / sum(results[kind]["times"])
        print(f"segmentation throughput ratio {kind}/stock, each in its own process: {ratio:.2f}x")
        rates = {k: len(pair[k]) / sum(pair[k]) for k in ("stock", kind)}
        print(
            f"segmentation throughput ratio {kind}/stock, side by side in one process (alternating"
            f" image by image): {rates[kind] / rates['stock']:.2f}x (stock {rates['stock']:.2f},"
            f" {kind} {rates[kind]:.2f} images/s)"
        )
        agree = [
            _agreement(a, b)
            for a, b in zip(results["stock"]["labels"], results[kind]["labels"], strict=True)
        ]
        same = sum(ok for ok, _ in agree)
        mious = [m for _, m in agree]
        print(
            f"agreement {kind} vs stock over {len(agree)} images: same region count on {same}"
            f" ({same / len(agree):.0%}); mIoU min {min(mious):.4f}, mean {np.mean(mious):.4f}"
        )
        for name, (ok, miou) in zip(names, agree, strict=True):
            if not ok or miou < 0.98:
                print(f"  differs: {name}: same count {ok}, mIoU {miou:.4f}")
    r = results["interpret"]
    base = r["regions"] / r["modes"]["one-by-one"]
    print(
        f"interpretation of the same {r['regions']} regions (greedy, the same answers: {r['same']})"
    )
    print("| way | regions/s | ratio to one-by-one |\n|---|---|---|")
    for mode, seconds in r["modes"].items():
        rate = r["regions"] / seconds
        print(f"| {mode} | {rate:.1f} | {rate / base:.2f}x |")
    print(
        json.dumps({k: {"times": v["times"], "counts": v["counts"]} for k, v in results.items()}),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
