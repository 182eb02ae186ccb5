"""Conversion throughput per public format on the real Twitter files (tweets/s, median of N).

.venv/bin/python benchmarks/convert.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from iea.data.convert import convert

ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "twitter"
FOLDERS = {"tombert": "tombert", "tombert_txt": "tombert", "vlp": "vlp_json", "conll": "cmmt_conll"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    print("| dataset | format | tweets | median s | tweets/s |\n|---|---|---|---|---|")
    for dataset in ("twitter2015", "twitter2017"):
        for fmt, folder in FOLDERS.items():
            times = []
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory() as out:
                    t0 = time.perf_counter()
                    m = convert(fmt, ROOT / dataset / folder, Path(out))
                    times.append(time.perf_counter() - t0)
            n = sum(c["tweets"] for c in m["counts"].values())
            med = statistics.median(times)
            print(f"| {dataset} | {fmt} | {n} | {med:.3f} | {n / med:,.0f} |")


if __name__ == "__main__":
    main()
