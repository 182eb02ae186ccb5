"""JMASA / MATE / MASC scoring and the parser from generated text to aspect spans.

Definitions (micro-averaged over all tweets; each tweet's predictions are a set):

* JMASA: a prediction is correct when its word span ``[from, to)`` and its polarity both equal a
  gold aspect's. P = correct / predicted, R = correct / gold, F1 their harmonic mean.
* MATE: the same over spans only (polarity ignored).
* MASC: over **all gold aspects**: the predicted polarity of a gold aspect is the polarity of the
  prediction with exactly that span; a gold aspect with no such prediction (or with several
  different predicted polarities) counts as wrong. ``acc`` = right / gold; ``f1`` is the macro-F1
  over the polarity classes that occur in the gold or the predictions. ``coverage`` is the share
  of gold aspects whose span was predicted at all.

A value with a zero denominator is 0.0. Predicted pairs whose aspect string is not found in the
tweet (``unmatched``) count as wrong predictions; generated texts that do not parse
(``unparsed``) count as empty predictions. Both are reported.

The generation format is ``format_pairs``: ``"David Beckham <POS> ; # MCM <NEU>"``, or ``"none"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

POLARITIES: tuple[str, ...] = ("POS", "NEU", "NEG")
Span = tuple[int, int, str]
"""An aspect as ``(start, end, polarity)``: word span ``[start, end)`` (``iea.data.records.Aspect``
is such a tuple)."""

NO_PAIRS = "none"
_PAIR = re.compile(r"\s*(?:;\s*)?(?P<term>\S.*?)\s*<(?P<pol>POS|NEU|NEG)>", re.IGNORECASE)


def format_pairs(pairs: Iterable[tuple[str, str]]) -> str:
    """``[("David Beckham", "POS")]`` -> ``"David Beckham <POS>"``; no pairs -> ``"none"``."""
    parts = [f"{term} <{pol}>" for term, pol in pairs]
    return " ; ".join(parts) if parts else NO_PAIRS


def parse_pairs(text: str) -> list[tuple[str, str]] | None:
    """Inverse of :func:`format_pairs`. Returns None when ``text`` does not parse completely."""
    text = text.strip()
    if text.lower() in (NO_PAIRS, ""):
        return []
    pairs, pos = [], 0
    for m in _PAIR.finditer(text):
        if m.start() != pos:
            return None
        pairs.append((m.group("term"), m.group("pol").upper()))
        pos = m.end()
    if not pairs or text[pos:].strip(" ;"):
        return None
    return pairs


@dataclass(frozen=True)
class Prediction:
    """Generated text mapped onto a tweet: the aspects found, and what could not be used."""

    aspects: tuple[Span, ...]
    parsed: bool
    unmatched: tuple[str, ...] = field(default_factory=tuple)


def spans_for(pairs: Sequence[tuple[str, str]], tokens: Sequence[str]) -> Prediction:
    """Map each ``(aspect string, polarity)`` to a word span of ``tokens``.

    The aspect string is split on whitespace and matched as a token sequence, exactly first and
    then case-insensitively. When it occurs several times, successive pairs with the same string
    take successive occurrences (left to right); once all are taken, the first is reused.
    """
    used: set[tuple[int, int]] = set()
    aspects, unmatched = [], []
    for term, pol in pairs:
        words = term.split()
        hits = _find(words, tokens, str.__eq__) or _find(
            words, tokens, lambda a, b: a.lower() == b.lower()
        )
        if not hits:
            unmatched.append(term)
            continue
        span = next((h for h in hits if h not in used), hits[0])
        used.add(span)
        aspects.append((span[0], span[1], pol))
    return Prediction(tuple(sorted(set(aspects))), True, tuple(unmatched))


def parse_prediction(text: str, tokens: Sequence[str]) -> Prediction:
    """Generated text -> :class:`Prediction` (unparseable text -> no aspects, ``parsed=False``)."""
    pairs = parse_pairs(text)
    if pairs is None:
        return Prediction((), False)
    return spans_for(pairs, tokens)


def _find(words: Sequence[str], tokens: Sequence[str], eq) -> list[tuple[int, int]]:
    n = len(words)
    if n == 0:
        return []
    return [
        (i, i + n)
        for i in range(len(tokens) - n + 1)
        if all(eq(tokens[i + k], words[k]) for k in range(n))
    ]


def _prf(tp: int, n_pred: int, n_gold: int) -> dict[str, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"p": p, "r": r, "f1": f1, "tp": tp, "pred": n_pred, "gold": n_gold}


def score(
    gold: Mapping[str, Iterable[Span]],
    pred: Mapping[str, Iterable[Span]],
    *,
    unparsed: int = 0,
    unmatched: int = 0,
) -> dict[str, dict[str, float] | int]:
    """Score predictions against gold aspects.

    Args:
        gold: tweet id -> gold aspects.
        pred: tweet id -> predicted aspects; ids absent here count as empty predictions.
        unparsed: number of generated outputs that did not parse (reported only).
        unmatched: number of predicted aspect strings not found in their tweet; each counts as
            one wrong JMASA and MATE prediction.

    Returns:
        ``{"jmasa": {p, r, f1, tp, pred, gold}, "mate": {...}, "masc": {acc, f1, coverage, n},
        "tweets": int, "unparsed": int, "unmatched": int}``.

    Raises:
        ValueError: when ``pred`` holds ids that are not in ``gold`` (listed in the message).
    """
    unknown = sorted(set(pred) - set(gold))
    if unknown:
        shown = ", ".join(unknown[:10]) + (
            f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else ""
        )
        raise ValueError(f"{len(unknown)} predicted ids are not in the gold set: {shown}")
    j_tp = j_pred = m_tp = m_pred = n_gold = 0
    masc_right = masc_covered = 0
    masc_pairs: list[tuple[str, str | None]] = []
    for tid, gold_aspects in gold.items():
        g = set(gold_aspects)
        p = set(pred.get(tid, ()))
        n_gold += len(g)
        j_pred += len(p)
        j_tp += len(g & p)
        g_spans = {(a[0], a[1]) for a in g}
        p_spans = {(a[0], a[1]) for a in p}
        m_pred += len(p_spans)
        m_tp += len(g_spans & p_spans)
        for start, end, polarity in g:
            pols = {b[2] for b in p if (b[0], b[1]) == (start, end)}
            masc_covered += bool(pols)
            guess = next(iter(pols)) if len(pols) == 1 else None
            masc_pairs.append((polarity, guess))
            masc_right += guess == polarity
    return {
        "jmasa": _prf(j_tp, j_pred + unmatched, n_gold),
        "mate": _prf(m_tp, m_pred + unmatched, n_gold),
        "masc": {
            "acc": masc_right / n_gold if n_gold else 0.0,
            "f1": _macro_f1(masc_pairs),
            "coverage": masc_covered / n_gold if n_gold else 0.0,
            "n": n_gold,
        },
        "tweets": len(gold),
        "unparsed": unparsed,
        "unmatched": unmatched,
    }


def _macro_f1(pairs: Sequence[tuple[str, str | None]]) -> float:
    classes = [c for c in POLARITIES if any(g == c or p == c for g, p in pairs)]
    if not classes:
        return 0.0
    f1s = []
    for c in classes:
        tp = sum(g == c and p == c for g, p in pairs)
        n_pred = sum(p == c for _, p in pairs)
        n_gold = sum(g == c for g, _ in pairs)
        f1s.append(_prf(tp, n_pred, n_gold)["f1"])
    return sum(f1s) / len(f1s)
