"""The interpretation stage as the flows run it, with each mask generator.

    .venv/bin/python benchmarks/interpret_stage.py [--images 160] [--rounds 2]
        [--config configs/demo.yaml] [k=v ...]

Draws the config's synthetic world (tweet images, as ``iea train jmasa`` does), then for
``--rounds`` rounds, alternating ``segment.generator=stock`` and ``=fast`` in one process:
:class:`iea.vision.interpreter.ImageInterpreter` on an empty local store, its models loaded
and warmed on the first 4 images, then :meth:`~iea.vision.interpreter.ImageInterpreter.run_many`
over the rest in chunks of ``interpreter.image_batch`` (segmentation, the region filter, the
VLM's descriptions of the kept regions, the store's cache writes). Prints seconds and images/s
per round and generator, and the stage's ratio fast/stock (median over rounds).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=160)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="interpret-stage-"))
    try:
        _run(args, _world_images(args.config, args.overrides, args.images + 4, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(args: argparse.Namespace, images: list[Path]) -> None:
    from iea.config import load_settings
    from iea.store import LocalStore
    from iea.vision.interpreter import ImageInterpreter

    seconds: dict[str, list[float]] = {"stock": [], "fast": []}
    for rnd in range(args.rounds):
        for gen in ("stock", "fast") if rnd % 2 == 0 else ("fast", "stock"):
            s = load_settings(args.config, [*args.overrides, f"segment.generator={gen}"])
            step = s.interpreter.image_batch
            with tempfile.TemporaryDirectory() as store:
                interpreter = ImageInterpreter(s, LocalStore(store))
                interpreter.run_many(images[:4])  # loads and warms the models
                t0 = time.perf_counter()
                for k in range(4, len(images), step):
                    interpreter.run_many(images[k : k + step])
                seconds[gen].append(time.perf_counter() - t0)
            n = len(images) - 4
            print(
                f"round {rnd + 1} {gen}: {seconds[gen][-1]:.1f} s for {n} images"
                f" ({n / seconds[gen][-1]:.2f} images/s)",
                flush=True,
            )
    ratio = statistics.median(s / f for s, f in zip(seconds["stock"], seconds["fast"], strict=True))
    print(f"interpretation stage fast/stock: {ratio:.2f}x (median over {args.rounds} rounds)")


def _world_images(config: str, overrides: list[str], n: int, out: Path) -> list[Path]:
    """The first ``n`` image files of the config's synthetic world, drawn into ``out`` (its
    train split is sized to hold them)."""
    from iea.config import load_settings
    from iea.data import synthetic

    syn = load_settings(config, overrides).data.synthetic
    world = synthetic.WorldSettings(
        syn.text_polarity_rate, dict(syn.distractors), syn.mention_order_rate
    )
    synthetic.generate(
        out, n_train=n, n_dev=0, n_test=0, seed=syn.seed, image_size=syn.image_size, world=world
    )
    return sorted((out / "images").glob("*.jpg"))[:n]


if __name__ == "__main__":
    main()
