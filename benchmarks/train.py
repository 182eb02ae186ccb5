"""Training and inference throughput of the LoRA engine on the demo's tiny Qwen3-VL (CPU here):
the naive path and ours side by side.

Builds NMI examples from synthetic tweets and their images (whole image plus 0 to
``--regions`` crops of it, as many as the tweet has aligned regions, each with a description,
placed after its aspect phrase as the full method does), then, in a fresh process per run,
alternating over ``--paths`` (``--repeats`` rounds):

* training: ``--steps`` optimizer steps of ``--batch-size`` examples with the demo's LoRA
  settings, the same examples in both paths:
  - naive: shuffled batches padded to their longest, the whole ``(batch, length, vocab)``
    logits in fp32, the vision tower at every step (the HF way; every switch below off);
  - target-logits, split, vision-cache: each adds one switch of ``FinetuneConfig`` to the
    one before (``target_logits``, ``split_by_length``, ``cache_vision``; vision-cache is the
    engine's default, and each gives naive's gradients);
  - ours: the defaults plus ``group_by_length`` (the demo's JMASA setting; off in the
    engine by default: it changes the batches);
  reports the median samples/s and non-padding target tokens/s over the steps after the first
  (warm-up), the median step time, the padding share of the batches, and the process's peak
  memory (max RSS on CPU, ``max_memory_allocated`` on CUDA);
* inference: greedy generation of the pairs for ``--infer`` tweets in batches; tweets/s
  (the same code in both paths).

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


def synthetic_item(i: int, regions: int, seed: int = 0) -> tuple[TweetInput, list[AlignedRegion]]:
    """Tweet ``i`` of the benchmark: its input (whole image, 0 to ``regions`` region crops with
    descriptions) and its aligned regions; a pure function of ``(i, regions, seed)``."""
    import random

    rng = random.Random(seed * 1_000_003 + i)
    tweet = make_tweet(rng, i)
    image = draw_image(tweet, (320, 240), seed + i)
    views, al = [], []
    for k, a in enumerate(tweet.aspects[: rng.randint(0, regions)]):
        box = (k * 80, 20, 80, 160)
        crop = image.crop((box[0], box[1], box[0] + box[2], box[1] + box[3]))
        desc = "a bright green shape, looks happy (sentiment: positive, score +0.60)"
        views.append(RegionView(k + 1, box, crop, desc))
        al.append(AlignedRegion(k + 1, a.start, a.end, desc, box))
    return TweetInput(tweet, image, tuple(views)), al


def _inputs(n: int, regions: int, seed: int = 0):
    pairs = [synthetic_item(i, regions, seed) for i in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


PATHS = {
    # name: (group_by_length, split_by_length, target_logits, cache_vision); each adds one
    "naive": (False, False, False, False),
    "target-logits": (False, False, True, False),
    "split": (False, True, True, False),
    "vision-cache": (False, True, True, True),
    "ours": (True, True, True, True),
}


def _run(args: argparse.Namespace, path: str) -> dict:
    from iea.models.finetune import collate, epoch_steps, micro_batches

    items, aligned = _inputs(args.steps * args.batch_size, args.regions)
    examples, _ = jmasa_examples(items, aligned)
    model, processor = load_vlm(args.model, device=args.device)
    cfg = FinetuneConfig(
        epochs=1,
        learning_rate=5e-3,
        batch_size=args.batch_size,
        lora_dropout=0.0,
        modules_to_save=("embed_tokens",),
        group_by_length=PATHS[path][0],
        split_by_length=PATHS[path][1],
        target_logits=PATHS[path][2],
        cache_vision=PATHS[path][3],
    )
    model = prepare_model(model, cfg)
    per_step: list[dict[str, float]] = []
    cuda = torch.cuda.is_available() and args.device != "cpu"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    stamps: list[float] = []

    def log(m: dict, step: int) -> None:
        per_step.append(m)
        stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        _, result = train(model, processor, examples, cfg, out_dir=out, log=log)
    warm = per_step[1:] or per_step
    # before the first step: encoding (and with cache_vision the vision tower, once each)
    encode_s = stamps[0] - t0 - 1 / per_step[0]["train.samples_per_s"] * args.batch_size
    samples = statistics.median(m["train.samples_per_s"] for m in warm)
    tokens = statistics.median(m["train.tokens_per_s"] for m in warm)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    enc = [encode(processor, e) for e in examples]
    lengths = [len(e.input_ids) for e in enc]
    steps = epoch_steps(lengths, args.batch_size, 0, 0, group=cfg.group_by_length)
    passes = [
        b
        for s in steps
        for b in micro_batches(s, lengths, args.batch_size, split=cfg.split_by_length)
    ]
    padded = sum(collate([enc[i] for i in b], 0)["input_ids"].numel() for b in passes)
    infer = examples[: args.infer]
    t0 = time.perf_counter()
    generate(model, processor, infer, max_new_tokens=32, batch_size=args.batch_size)
    infer_s = time.perf_counter() - t0
    return {
        "path": path,
        "passes_per_step": round(len(passes) / len(steps), 2),
        "steps": result.steps,
        "train_samples_per_s_median": round(samples, 2),
        "train_target_tokens_per_s_median": round(tokens, 1),
        "train_step_s_median": round(args.batch_size / samples, 4),
        "padding_share": round(1 - sum(lengths) / padded, 3),
        "encode_s": round(encode_s, 2),
        "loop_s": round(stamps[-1] - stamps[0], 2),
        ("cuda_max_allocated_MiB" if cuda else "max_rss_MiB"): round(peak, 1),
        "infer_tweets_per_s": round(len(infer) / infer_s, 2),
        "sequence_tokens_median": statistics.median(lengths),
        "first_loss": round(per_step[0]["train.loss"], 4),
    }


def _child(args: argparse.Namespace, path: str, queue) -> None:
    queue.put(_run(args, path))


def main() -> None:
    import multiprocessing as mp

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="tiny-qwen3-vl")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--regions", type=int, default=3)
    ap.add_argument("--infer", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2, help="rounds over --paths, alternating")
    ap.add_argument("--paths", default=",".join(PATHS), help=f"of {', '.join(PATHS)}")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    runs = []
    paths = args.paths.split(",")
    unknown = sorted(set(paths) - set(PATHS))
    if unknown or "naive" not in paths:
        sys.exit(f"--paths: unknown {unknown} (of {', '.join(PATHS)}; naive is required)")
    for _ in range(args.repeats):
        for path in paths:
            queue = ctx.Queue()
            proc = ctx.Process(target=_child, args=(args, path, queue))
            proc.start()
            runs.append(queue.get())
            proc.join()
            if proc.exitcode:
                sys.exit(f"{path} run failed (exit {proc.exitcode})")
            print(json.dumps(runs[-1]), flush=True)
    mem = "cuda_max_allocated_MiB" if "cuda_max_allocated_MiB" in runs[0] else "max_rss_MiB"
    print(
        f"model {args.model}, device {args.device}, {torch.get_num_threads()} torch threads, "
        f"{platform.processor() or platform.machine()}; {args.steps} steps of {args.batch_size}"
    )
    print(
        "| path | samples/s | target tokens/s | s/step | padding | encode s | steps 2.. s |"
        " peak MiB | infer tweets/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(
            f"| {r['path']} | {r['train_samples_per_s_median']} | "
            f"{r['train_target_tokens_per_s_median']:,} | {r['train_step_s_median']} | "
            f"{r['padding_share']:.0%} | {r['encode_s']} | {r['loop_s']} | {r[mem]:,.0f} | "
            f"{r['infer_tweets_per_s']} |"
        )
    naive = [r for r in runs if r["path"] == "naive"]
    for path in paths[1:]:
        mine = [r for r in runs if r["path"] == path]
        for a, b in zip(naive, mine, strict=True):  # each with the naive run of its round
            tok = "train_target_tokens_per_s_median"
            smp = "train_samples_per_s_median"
            print(
                f"{path}/naive: target tokens/s {b[tok] / a[tok]:.2f}x,"
                f" samples/s {b[smp] / a[smp]:.2f}x,"
                f" peak memory {b[mem] / a[mem]:.2f}x; first-step loss {a['first_loss']} vs"
                f" {b['first_loss']}"
            )


if __name__ == "__main__":
    main()
