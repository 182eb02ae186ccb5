"""The JMASA flow's inputs held as a list or lazily: peak memory and time at 1x, 4x, ... the
demo's training tweets.

    .venv/bin/python benchmarks/inputs.py [--scales 1,4] [--config configs/demo.yaml] [k=v ...]

A synthetic world of the config's kind with ``--base`` x the largest scale training tweets is
drawn and every image interpreted once (SAM, the filters, the interpreter: the config's models,
their answers cached in a store of the run's own). Then, in a fresh process per (way, scale),
the first ``--base`` x scale tweets go through what the JMASA flow does before the engine:
:func:`iea.jmasa.tweet_inputs` (every answer from the cache), each kept region aligned to the
tweet's first aspect (a stand-in for the aligner's answers: memory, not quality, is measured
here), :func:`iea.jmasa.jmasa_examples`, and every example read once with its pixels run
through the processor, as the engine's encoding reads them:

* ``list``: ``lazy=False``: every tweet's image and crops decoded up front and held;
* ``lazy``: ``lazy=True`` (the flow since session 13): each example built when read.

Memory is the process's, from ``/proc/self/status`` (Linux): its resident size once the
processor is loaded (the baseline), the peak from then on (``VmHWM``, reset through
``/proc/self/clear_refs``) and the resident size at the end, the examples still held; the
time is the whole stage's.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _settings(args: argparse.Namespace, root: Path):
    from iea.config import load_settings

    return load_settings(args.config, [f"store.root={root / 'store'}", *args.overrides])


def _tweets(root: Path) -> list:
    from iea.data.records import Tweet
    from iea.data.twitter import read_file, split_file

    rows = read_file("vlp", split_file("vlp", root / "world" / "annotations", "train"))
    return [t for t in rows if isinstance(t, Tweet)]


def _status(field: str) -> float:
    """A ``/proc/self/status`` memory field, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _measure(way: str, n: int, args: argparse.Namespace, root: Path, queue) -> None:
    from iea.jmasa import jmasa_examples, tweet_inputs
    from iea.models.finetune import encode
    from iea.models.refs import load_vlm
    from iea.nmi import AlignedRegion
    from iea.store import open_store
    from iea.vision.interpreter import ImageInterpreter

    settings = _settings(args, root)
    model, processor = load_vlm(
        settings.jmasa.model, device="cpu", cache=settings.runtime.model_cache
    )
    del model  # only its processor is needed; the load's own peak is not the stage's
    gc.collect()
    interp = ImageInterpreter(settings, open_store(settings.store))
    Path("/proc/self/clear_refs").write_text("5")  # Linux: the peak (VmHWM) starts again here
    base = _status("VmRSS")
    t0 = time.perf_counter()
    tweets = _tweets(root)[:n]
    items = tweet_inputs(tweets, root / "world" / "images", interp, lazy=way == "lazy")
    aligned = []
    for i, t in enumerate(tweets):  # each item read once, as the aligner's stage reads it
        a = t.aspects[0]  # every kept region -> the first aspect's words (a stand-in)
        aligned.append(
            [
                AlignedRegion(r.region_id, a.start, a.end, r.description, r.bbox)
                for r in items[i].regions
            ]
        )
    examples, _ = jmasa_examples(items, aligned, lazy=way == "lazy")
    tokens = 0
    for i in range(len(examples)):
        tokens += len(encode(processor, examples[i]).input_ids)
    queue.put(
        {
            "way": way,
            "tweets": n,
            "seconds": round(time.perf_counter() - t0, 2),
            "tokens": tokens,
            "rss_before_MiB": round(base),
            "peak_rss_MiB": round(_status("VmHWM")),
            "rss_after_MiB": round(_status("VmRSS")),  # examples and inputs still held
        }
    )


def _prepare(args: argparse.Namespace, root: Path, n: int) -> float:
    """Draw the world and interpret every training image once (the cache the runs read)."""
    from iea.data.synthetic import generate
    from iea.jmasa import tweet_inputs
    from iea.store import open_store
    from iea.vision.interpreter import ImageInterpreter

    settings = _settings(args, root)
    generate(root / "world", n_train=n, n_dev=1, n_test=1, seed=settings.data.synthetic.seed)
    t0 = time.perf_counter()
    interp = ImageInterpreter(settings, open_store(settings.store))
    tweet_inputs(_tweets(root), root / "world" / "images", interp, lazy=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--base", type=int, default=200, help="1x: the demo's training tweets")
    ap.add_argument("--scales", default="1,4")
    ap.add_argument("--ways", default="list,lazy")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    scales = [int(x) for x in args.scales.split(",")]
    ctx = mp.get_context("spawn")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        secs = _prepare(args, root, args.base * max(scales))
        print(f"interpreted {args.base * max(scales)} images once in {secs:.0f} s", flush=True)
        for way in args.ways.split(","):
            for scale in scales:
                queue = ctx.Queue()
                proc = ctx.Process(
                    target=_measure, args=(way, args.base * scale, args, root, queue)
                )
                proc.start()
                rows.append({"scale": scale, **queue.get()})
                proc.join()
                if proc.exitcode:
                    sys.exit(f"{way} x{scale} failed (exit {proc.exitcode})")
                print(json.dumps(rows[-1]), flush=True)
    print("| way | scale | tweets | s | peak RSS MiB | peak over baseline | held at the end |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['way']} | {r['scale']}x | {r['tweets']} | {r['seconds']} | "
            f"{r['peak_rss_MiB']:,} | {r['peak_rss_MiB'] - r['rss_before_MiB']:,} | "
            f"{r['rss_after_MiB'] - r['rss_before_MiB']:,} |"
        )


if __name__ == "__main__":
    main()
