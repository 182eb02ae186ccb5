"""Training and inference throughput of the LoRA engine on the demo's tiny Qwen3-VL (CPU here).

Builds NMI examples from synthetic tweets and their images (whole image plus ``--regions`` crops
of it, each with a description, placed after the aspect phrases as the full method does), then:

* training: ``--steps`` optimizer steps of ``--batch-size`` examples with the demo's LoRA
  settings; reports the median samples/s and target tokens/s over the steps after the first
  (warm-up), the median step time, and the process's peak memory (max RSS on CPU,
  ``max_memory_allocated`` on CUDA);
* inference: greedy generation of the pairs for ``--infer`` tweets in batches; tweets/s.

    .venv/bin/python benchmarks/train.py            # the numbers in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iea.data.synthetic import draw_image, make_tweet  # noqa: E402
from iea.jmasa import RegionView, TweetInput, jmasa_examples  # noqa: E402
from iea.models.finetune import FinetuneConfig, encode, generate, prepare_model, train  # noqa: E402
from iea.models.refs import load_vlm  # noqa: E402
from iea.nmi import AlignedRegion  # noqa: E402


def _inputs(n: int, regions: int, seed: int = 0):
    import random

    rng = random.Random(seed)
    items, aligned = [], []
    for i in range(n):
        tweet = make_tweet(rng, i)
        image = draw_image(tweet, (320, 240), seed + i)
        views, al = [], []
        for k, a in enumerate(tweet.aspects[:regions]):
            box = (k * 80, 20, 80, 160)
            crop = image.crop((box[0], box[1], box[0] + box[2], box[1] + box[3]))
            desc = "a bright green shape, looks happy (sentiment: positive, score +0.60)"
            views.append(RegionView(k + 1, box, crop, desc))
            al.append(AlignedRegion(k + 1, a.start, a.end, desc, box))
        items.append(TweetInput(tweet, image, tuple(views)))
        aligned.append(al)
    return items, aligned


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="tiny-qwen3-vl")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--regions", type=int, default=2)
    ap.add_argument("--infer", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    items, aligned = _inputs(args.steps * args.batch_size, args.regions)
    examples, _ = jmasa_examples(items, aligned)
    model, processor = load_vlm(args.model, device=args.device)
    cfg = FinetuneConfig(
        epochs=1,
        learning_rate=5e-3,
        batch_size=args.batch_size,
        lora_dropout=0.0,
        modules_to_save=("embed_tokens",),
    )
    model = prepare_model(model, cfg)
    per_step: list[dict[str, float]] = []
    if torch.cuda.is_available() and args.device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as out:
        _, result = train(
            model, processor, examples, cfg, out_dir=out, log=lambda m, s: per_step.append(m)
        )
    warm = per_step[1:] or per_step
    samples = statistics.median(m["train.samples_per_s"] for m in warm)
    tokens = statistics.median(m["train.tokens_per_s"] for m in warm)
    if torch.cuda.is_available() and args.device != "cpu":
        peak = torch.cuda.max_memory_allocated() / 2**20
        peak_what = "cuda_max_allocated_MiB"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak_what = "max_rss_MiB"
    infer = examples[: args.infer]
    t0 = time.perf_counter()
    generate(model, processor, infer, max_new_tokens=32, batch_size=args.batch_size)
    infer_s = time.perf_counter() - t0
    seq = statistics.median(len(encode(processor, e).input_ids) for e in examples[:32])
    report = {
        "model": args.model,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "steps": result.steps,
        "batch_size": args.batch_size,
        "regions_per_tweet": args.regions,
        "train_samples_per_s_median": round(samples, 2),
        "train_target_tokens_per_s_median": round(tokens, 1),
        "train_step_s_median": round(args.batch_size / samples, 4),
        peak_what: round(peak, 1),
        "infer_tweets_per_s": round(len(infer) / infer_s, 2),
        "infer_tweets": len(infer),
        "sequence_tokens_median": seq,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
