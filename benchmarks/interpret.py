"""Interpreter throughput and peak memory: the stock SAM mask generator vs our segmentation.

    .venv/bin/python benchmarks/interpret.py [--images 8] [--config configs/demo.yaml] [k=v ...]

On the same images and the config's SAM, measures

* stock: ``SamAutomaticMaskGenerator.generate(image)`` as segment-anything ships it;
* ours: ``iea.vision.segment.segment_image`` (resize, generate, postprocess to <= L regions)
  plus the region features (Laplacian variances);
* interpretation: the config's VLM over every kept region (batched, greedy, bounded).

Each measurement runs in a fresh process (so its peak memory is its own) after one warm-up
image; the median per-image time is reported with the throughput.
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

import numpy as np


def _images(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    from iea.data.synthetic import draw_image, make_tweet

    rng = random.Random(0)
    return [np.asarray(draw_image(make_tweet(rng, i), size, 100 + i)) for i in range(n + 1)]


def _peak_mib() -> float:
    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else rss


def _measure(kind: str, config: str | None, overrides: list[str], n: int, queue) -> None:
    import torch

    from iea.config import load_settings
    from iea.models.sam import load_sam
    from iea.vision.filters import RegionFeatures, Thresholds, keep_mask, laplacian_variances
    from iea.vision.interpret import interpret_crops, region_crop
    from iea.vision.prompts import INTERPRET_REGION
    from iea.vision.segment import build_mask_generator, segment_image

    s = load_settings(config, overrides)
    rt, seg = s.runtime, s.segment
    torch.set_grad_enabled(False)
    images = _images(n, s.data.synthetic.image_size)
    generator = build_mask_generator(
        load_sam(seg.sam, seg.sam_checkpoint, device=rt.device, cache=rt.model_cache), seg
    )

    def ours(img):
        labels, regions = segment_image(
            img, generator.generate, seg.num_regions, max_side=seg.max_side, min_side=seg.min_side
        )
        laplacian_variances(img, labels, regions)
        return labels, regions

    times, counts = [], []
    if kind == "interpret":
        from iea.models.vlm import VisionLanguageModel

        vlm = VisionLanguageModel.from_ref(
            s.interpreter.model, device=rt.device, dtype=rt.dtype, cache=rt.model_cache
        )
        f = s.filters
        work = []
        for img in images:
            labels, regions = segment_image(
                img,
                generator.generate,
                seg.num_regions,
                max_side=seg.max_side,
                min_side=seg.min_side,
            )
            var = laplacian_variances(img, labels, regions)
            regions = [
                r.__class__(**{**r.to_json(), "bbox": r.bbox, "laplacian_var": v})
                for r, v in zip(regions, var, strict=True)
            ]
            keep = keep_mask(
                RegionFeatures.of(regions), Thresholds(f.t_size, f.t_clarity, f.t_conf)
            )
            work.append(
                [region_crop(img, labels, r) for r, k in zip(regions, keep, strict=True) if k]
            )

        def step(crops):
            it = s.interpreter
            return interpret_crops(vlm, crops, INTERPRET_REGION, it.max_new_tokens, it.batch_size)

        step(work[0])
        for crops in work[1:]:
            t0 = time.perf_counter()
            step(crops)
            times.append(time.perf_counter() - t0)
            counts.append(len(crops))
    else:
        step = generator.generate if kind == "stock" else ours
        step(images[0])
        for img in images[1:]:
            t0 = time.perf_counter()
            out = step(img)
            times.append(time.perf_counter() - t0)
            counts.append(len(out) if kind == "stock" else len(out[1]))
    queue.put(
        {
            "kind": kind,
            "times": times,
            "counts": counts,
            "peak_mib": _peak_mib(),
            "device": str(generator.predictor.device),
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
    for kind in ("stock", "ours", "interpret"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_measure, args=(kind, args.config, overrides, args.images, queue))
        proc.start()
        results[kind] = queue.get()
        proc.join()
        if proc.exitcode:
            sys.exit(f"{kind} measurement failed (exit {proc.exitcode})")
    device = results["stock"]["device"]
    print(f"config {args.config} {' '.join(args.overrides)}; {args.images} images; device {device}")
    print("| stage | images/s | median s/image | units/s | peak MiB |\n|---|---|---|---|---|")
    units = {"stock": "masks", "ours": "regions", "interpret": "regions"}
    for kind, r in results.items():
        total = sum(r["times"])
        print(
            f"| {kind} | {len(r['times']) / total:.2f} | {statistics.median(r['times']):.3f} | "
            f"{sum(r['counts']) / total:.1f} {units[kind]} | {r['peak_mib']:.0f} |"
        )
    ratio = sum(results["stock"]["times"]) / sum(results["ours"]["times"])
    print(f"segmentation throughput ratio ours/stock: {ratio:.2f}x")
    print(
        json.dumps({k: {"times": v["times"], "counts": v["counts"]} for k, v in results.items()}),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
