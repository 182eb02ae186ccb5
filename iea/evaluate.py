"""Score a prediction file against a canonical gold split (``iea eval``)."""

from __future__ import annotations

import json
from pathlib import Path

from iea import metrics
from iea.data.convert import load_split
from iea.data.records import POLARITIES, Aspect


def load_predictions(path: Path, tokens_by_id: dict[str, tuple[str, ...]]) -> tuple[dict, int, int]:
    """Read a PRED file: one ``{"id", "aspects": [{"from", "to", "polarity"}]}`` per line.

    A line may carry the model's raw text as ``{"id", "output": "..."}`` instead of
    ``aspects``; it is parsed with :func:`iea.metrics.parse_prediction` against the tweet's tokens.
    A line with ``aspects`` may also list ``unmatched`` aspect strings (each counts as a wrong
    prediction) and ``parsed: false``, as the prediction files of ``iea train jmasa`` do.

    Returns:
        ``(pred: id -> set of Aspect, unparsed: int, unmatched: int)``.

    Raises:
        ValueError: ``file:line: reason`` for a malformed line, a duplicate id, an id that is not
            in the gold split, or a span outside the tweet.
    """
    pred: dict[str, set[Aspect]] = {}
    unparsed = unmatched = 0
    with open(path, encoding="utf-8") as fh:
        for no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{no}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: bad JSON: {e.msg}") from e
            if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
                raise ValueError(f"{where}: expected an object with a string 'id'")
            tid = obj["id"]
            if tid not in tokens_by_id:
                raise ValueError(f"{where}: unknown id {tid!r} (not in the gold split)")
            if tid in pred:
                raise ValueError(f"{where}: id {tid!r} appears twice")
            n_tokens = len(tokens_by_id[tid])
            if "output" in obj and "aspects" not in obj:
                parsed = metrics.parse_prediction(str(obj["output"]), tokens_by_id[tid])
                unparsed += not parsed.parsed
                unmatched += len(parsed.unmatched)
                pred[tid] = {Aspect(*a) for a in parsed.aspects}
                continue
            aspects = obj.get("aspects")
            if not isinstance(aspects, list):
                raise ValueError(f"{where}: 'aspects' must be a list (or give 'output' text)")
            spans = set()
            for k, a in enumerate(aspects):
                try:
                    asp = Aspect(int(a["from"]), int(a["to"]), str(a["polarity"]))
                except (KeyError, TypeError, ValueError) as e:
                    raise ValueError(
                        f"{where}: aspect {k}: needs integer 'from'/'to' and 'polarity'"
                    ) from e
                if not 0 <= asp.start < asp.end <= n_tokens:
                    raise ValueError(
                        f"{where}: aspect {k}: span [{asp.start}, {asp.end}) "
                        f"outside the {n_tokens} tokens"
                    )
                if asp.polarity not in POLARITIES:
                    raise ValueError(f"{where}: aspect {k}: unknown polarity {asp.polarity!r}")
                spans.add(asp)
            pred[tid] = spans
            # rows written by ``iea train jmasa`` carry what their text could not place:
            # those pairs count as wrong predictions here too, as in the training run's score
            extra = obj.get("unmatched", [])
            if not isinstance(extra, list):
                raise ValueError(f"{where}: 'unmatched' must be a list of aspect strings")
            unmatched += len(extra)
            unparsed += obj.get("parsed") is False
    return pred, unparsed, unmatched


def evaluate_files(gold_path: Path, pred_path: Path) -> dict:
    """``iea eval``: the :func:`iea.metrics.score` result for a PRED file against a gold split."""
    gold = load_split(gold_path)
    pred, unparsed, unmatched = load_predictions(pred_path, {t.id: t.tokens for t in gold})
    return metrics.score(
        {t.id: t.aspects for t in gold}, pred, unparsed=unparsed, unmatched=unmatched
    )
