"""How the trained JMASA models miss aspect terms, per ablation and number of training tweets.

Reads every trained model under ``<work>/models/jmasa/<key>/`` (its ``result.json`` and
``test_predictions.jsonl``, as ``iea train jmasa`` and ``iea experiment ablations`` leave them)
whose test answers cover exactly the tweets of ``--test`` (a VLP-format test file), and prints,
per (ablation, training tweets), the mean over its models of three rates per gold aspect:

* missed: gold aspect spans no answer pair hits;
* not in the tweet: answer terms that match no words of the tweet (the parser's ``unmatched``);
* written twice: the same term string answered more than once in one tweet.

    .venv/bin/python experiments/mate_errors.py --work outputs/work \\
        --test outputs/work/synthetic/<folder>/annotations/test.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def _key(tweet_id: str) -> str:
    """``syn_00650`` of a prediction id ``syn_00650-8ad3c3bc`` or an image id ``syn_00650.jpg``."""
    return tweet_id.split("-")[0].split(".")[0]


def rates(gold: dict[str, dict], preds: dict[str, dict]) -> tuple[float, float, float]:
    """(missed, not in the tweet, written twice), each per gold aspect."""
    n = missed = unmatched = twice = 0
    for k, g in gold.items():
        want = {(a["from"], a["to"]) for a in g["aspects"]}
        got = {(a["from"], a["to"]) for a in preds[k]["aspects"]}
        n += len(want)
        missed += len(want - got)
        unmatched += len(preds[k]["unmatched"])
        terms = [t.split(" <")[0].strip() for t in preds[k]["output"].split(";") if t.strip()]
        twice += len(terms) - len(set(terms))
    return missed / n, unmatched / n, twice / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("outputs/work"))
    ap.add_argument(
        "--test", type=Path, required=True, help="the VLP test file the models answered"
    )
    args = ap.parse_args()
    gold = {_key(t["image_id"]): t for t in json.loads(args.test.read_text())}
    rows: dict[tuple[str, int], list[tuple[float, float, float]]] = defaultdict(list)
    for folder in sorted((args.work / "models" / "jmasa").iterdir()):
        try:
            result = json.loads((folder / "result.json").read_text())
            lines = (folder / "test_predictions.jsonl").read_text().splitlines()
        except FileNotFoundError:
            continue  # a training that did not finish
        preds = {_key(p["id"]): p for p in map(json.loads, lines)}
        if set(preds) != set(gold):
            continue  # answered another test split
        rows[(result.get("ablation", "?"), result["train_examples"])].append(rates(gold, preds))
    print("| row | training tweets | models | missed | not in the tweet | written twice |")
    print("|---|---|---|---|---|---|")
    for (row, n), values in sorted(rows.items()):
        m = [sum(v[i] for v in values) / len(values) for i in range(3)]
        print(f"| {row} | {n} | {len(values)} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} |")


if __name__ == "__main__":
    main()
