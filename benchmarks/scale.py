"""Cost that grows with the work: the LoRA training stage on 1x, 4x and 16x the demo's training
tweets (synthetic, the tiny Qwen3-VL, CPU here), time and peak memory of each.

Each size runs one epoch in a fresh process (its peak RSS is its own) over NMI examples of
synthetic tweets (whole 320x240 image, 0 to 3 region crops; ``benchmarks/train.py``'s items),
given to the engine two ways:

* ``lazy``: a sequence that draws each example when the engine reads it (the engine keeps
  none: encoded examples wait on disk, a step loads its own);
* ``list``: every example built up front into a list, images and all (how ``iea/jmasa.py``
  hands the flows' examples over today).

    .venv/bin/python benchmarks/scale.py            # the numbers in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train import synthetic_item  # noqa: E402


class LazyExamples:
    """``n`` NMI examples of synthetic tweets, each built when read."""

    def __init__(self, n: int, regions: int):
        self.n, self.regions = n, regions

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        from iea.jmasa import jmasa_examples

        if not 0 <= i < self.n:
            raise IndexError(i)
        item, aligned = synthetic_item(i, self.regions)
        return jmasa_examples([item], [aligned])[0][0]


def _measure(n: int, inputs: str, args: argparse.Namespace, queue) -> None:
    import torch

    from iea.models.finetune import FinetuneConfig, prepare_model, train
    from iea.models.refs import load_vlm

    model, processor = load_vlm(args.model, device="cpu")
    cfg = FinetuneConfig(
        epochs=1,
        learning_rate=5e-3,
        batch_size=8,
        lora_dropout=0.0,
        modules_to_save=("embed_tokens",),
    )
    model = prepare_model(model, cfg)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    examples = LazyExamples(n, args.regions)
    if inputs == "list":
        examples = [examples[i] for i in range(n)]
    with tempfile.TemporaryDirectory() as out:
        _, result = train(model, processor, examples, cfg, out_dir=out)
    queue.put(
        {
            "tweets": n,
            "inputs": inputs,
            "seconds": round(time.perf_counter() - t0, 2),
            "steps": result.steps,
            "rss_after_load_MiB": round(base_rss),
            "peak_rss_MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "threads": torch.get_num_threads(),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="tiny-qwen3-vl")
    ap.add_argument("--base", type=int, default=200, help="1x: the demo's training tweets")
    ap.add_argument("--scales", default="1,4,16")
    ap.add_argument("--regions", type=int, default=3)
    ap.add_argument("--inputs", default="lazy,list")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for inputs in args.inputs.split(","):
        for scale in (int(x) for x in args.scales.split(",")):
            queue = ctx.Queue()
            proc = ctx.Process(target=_measure, args=(args.base * scale, inputs, args, queue))
            proc.start()
            rows.append({"scale": scale, **queue.get()})
            proc.join()
            if proc.exitcode:
                sys.exit(f"{inputs} x{scale} failed (exit {proc.exitcode})")
            print(json.dumps(rows[-1]), flush=True)
    print(f"model {args.model}, one epoch, batch 8, CPU {rows[0]['threads']} threads")
    print("| inputs | scale | tweets | s | s per tweet | peak RSS MiB | peak / 1x |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        first = next(x for x in rows if x["inputs"] == r["inputs"])
        print(
            f"| {r['inputs']} | {r['scale']}x | {r['tweets']} | {r['seconds']} | "
            f"{r['seconds'] / r['tweets']:.4f} | {r['peak_rss_MiB']:,} | "
            f"{r['peak_rss_MiB'] / first['peak_rss_MiB']:.2f}x |"
        )


if __name__ == "__main__":
    main()
