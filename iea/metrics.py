"""JMASA / MATE / MASC scoring and the parser from generated text to aspect spans.

Scores (micro-averaged over all tweets; each tweet's predictions are a set of
``(start, end, polarity)``, so a prediction repeated in one tweet counts once):

* ``jmasa``: a prediction is correct when its word span ``[from, to)`` and its polarity both
  equal a gold aspect's. P = correct / predicted, R = correct / gold, F1 their harmonic mean.
* ``mate``: the same over spans only (polarity ignored).
* ``masc``: sentiment classification **given the aspect**: over the gold aspects whose exact
  span the model predicted (``n`` of them; ``coverage`` = n / gold aspects, which equals MATE
  recall). The predicted polarity of such an aspect is that of the prediction with its span; a
  span predicted with several polarities counts as wrong. ``acc`` = right / n; ``f1`` is the
  macro-F1 (mean of the per-class F1, sklearn's ``average="macro"``) over the polarity classes
  that occur among these gold aspects or their predicted polarities. A missed span is a MATE
  error and is not in ``masc``. VLP-MABSA's scorer computes its ``sc_acc`` the same way in its
  joint evaluation. The papers' MASC tables (e.g. Table 9) test a classifier that is *given* the
  gold aspects as input; a JMASA model is not, so this is the closest measure of that on a joint
  model: not lowered by MATE errors, but taken over the aspects the model found, which may be
  the easier ones (read it with ``coverage``).
* ``masc_joint``: the same over **all** gold aspects (``n`` = gold aspects): a gold aspect
  whose span was not predicted counts as wrong. It is the polarity accuracy of the joint
  pipeline, ``masc.acc * masc.coverage``, and mixes MATE errors in; it is *not* the papers' MASC.

A value with a zero denominator is 0.0. Predicted pairs whose aspect string is not found in the
tweet (``unmatched``) count as wrong JMASA and MATE predictions; generated texts that do not parse
(``unparsed``) count as empty predictions. Both are reported.

The generation format is :func:`format_pairs`: ``"David Beckham <POS> ; # MCM <NEU>"``, or
``"none"``; the training targets (``iea.nmi.build_target``) list the gold aspects in text order
(by span), each as ``" ".join(tokens[start:end])``.

From a generated string to a word span (:func:`spans_for`):

* **Matching.** A string matches only whole-token spans ``tokens[i:j]`` (never part of a token),
  in one of six forms, best first (:func:`matches`): (0) the string split on whitespace equals
  the tokens; (1) equal after :func:`compact` of both sides, which removes every whitespace run
  except one between two letters/digits, so that a model's spacing around punctuation the
  tokeniser split off does not matter: ``#LFC`` / ``# LFC`` match the tokens ``#``, ``LFC``, and
  likewise ``@user`` / ``@ user``, ``Mr. Smith`` / ``Mr . Smith``, ``U.S.`` / ``U.S .``,
  ``don't`` / ``don 't``, ``love❤`` / ``love ❤``; (2) and (3) the same, case-insensitively
  (``str.casefold``); (4) and (5) with no whitespace at all, then casefolded (``NewYork`` for
  the tokens ``New``, ``York``, ``Justin Bieber`` for the token ``JustinBieber``).
* **Which occurrence.** A phrase that matches several spans is resolved for the whole answer at
  once: the pairs are read as listed in text order, as the targets are written. Among all ways
  to give each matched pair one of its spans, the parser takes the one with (a) the fewest
  pairs whose span does not start at or after the end of the previous pair's span (gold aspects
  never overlap: the CoNLL format cannot even express it), then (b) the fewest pairs matched in
  a worse form than their best one (so ``# LFC`` prefers the tokens ``#``, ``LFC`` to a token
  ``#LFC``, unless only the latter fits the order), then (c) the fewest bare strings put on the
  body of a hashtag or mention (a span right after a ``#`` / ``@`` token), then (d) the
  earliest spans. So ``Donald Trump ; Trump`` in "Donald Trump - Trump Isn't ..." gives the
  second ``Trump``, not the one inside ``Donald Trump``; a repeated string ``X ; X`` takes
  successive occurrences; and ``CERN`` in "RT @ CERN : ... CERN researchers" is the plain word,
  not the retweeted account (the Twitter-2015/2017 annotations never mark a tag body where the
  same bare word occurs unmarked elsewhere; a bare string still lands on a tag body when no other
  occurrence fits, as the annotations often leave the ``#`` / ``@`` out of the span). A string
  repeated more often than it occurs reuses an occurrence, and so counts once. With this, the
  gold target of every tweet of Twitter-2015/2017 (6,412 tweets, all splits) parses back to
  exactly its gold aspects, also with every aspect written glued (:func:`compact`)
  (``tests/data/test_real_pipeline.py``); with the former rule (the same string takes
  successive occurrences, else the first) 31 did not, and without (c) 5 do not. The
  alternative, a target that disambiguates (say an occurrence number after the phrase), would
  make the model count words; the text order is something it already learns.
* **Unmatched.** A pair whose string matches no token span is kept in ``Prediction.unmatched``
  (a repeated identical pair once) and counts as one wrong JMASA and MATE prediction.

Where this differs from VLP-MABSA's scorer (``AESCSpanMetric`` in ``src/model/metrics.py`` of
NUSTM/VLP-MABSA) and why:

* VLP-MABSA's BART *generates indices*: each aspect is a pointer pair into the BPE positions of
  the input plus a polarity id, and the scorer compares those index spans with the gold ones, so
  an occurrence is never ambiguous and an answer can never name text that is not in the tweet.
  Our VLM generates the aspect *text* (what an instruction-tuned VLM can do without a pointer
  head), and we map it back to word spans: for a phrase that occurs several times the span is
  inferred from the order of the answer, as above, so a model that lists the pairs out of text
  order may be given a different occurrence than it meant; a string that names nothing in the
  tweet cannot exist in VLP-MABSA and is a wrong prediction here (VLP-MABSA drops malformed
  index triples silently and only counts them as ``invalid``).
* An answer that does not parse as a whole gives no predictions (VLP-MABSA keeps the well-formed
  triples of a partly malformed sequence).
* VLP-MABSA keys predictions by span (a span predicted with two polarities keeps the last);
  ours is a set of (span, polarity), so such a span is two predictions (at most one right), and
  in ``masc`` it counts as wrong.
* VLP-MABSA's ``sc_f`` is the harmonic mean of the macro-averaged precision and recall; our
  ``masc.f1`` is the mean of the per-class F1 (the macro-F1 of TomBERT-style MASC evaluation).
  Its ``sc_acc`` is our ``masc.acc``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

POLARITIES: tuple[str, ...] = ("POS", "NEU", "NEG")
Span = tuple[int, int, str]
"""An aspect as ``(start, end, polarity)``: word span ``[start, end)`` (``iea.data.records.Aspect``
is such a tuple)."""

NO_PAIRS = "none"
TAG_MARKS: tuple[str, ...] = ("#", "@")
"""Tokens that open a hashtag / mention; the token after one is a tag body."""
_PAIR = re.compile(r"\s*(?:;\s*)?(?P<term>\S.*?)\s*<(?P<pol>POS|NEU|NEG)>", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


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


def compact(text: str) -> str:
    """``text`` without whitespace, but for one space between two letters/digits.

    ``"# LFC"`` -> ``"#LFC"``, ``"Mr . Smith"`` -> ``"Mr.Smith"``, ``"New  York"`` ->
    ``"New York"``: the form in which :func:`spans_for` compares strings with token spans.
    """
    text = text.strip()

    def keep(m: re.Match[str]) -> str:
        before, after = text[m.start() - 1], text[m.end()]
        return " " if before.isalnum() and after.isalnum() else ""

    return _SPACE.sub(keep, text)


@dataclass(frozen=True)
class Prediction:
    """Generated text mapped onto a tweet: the aspects found, and what could not be used."""

    aspects: tuple[Span, ...]
    parsed: bool
    unmatched: tuple[str, ...] = field(default_factory=tuple)


def spans_for(pairs: Sequence[tuple[str, str]], tokens: Sequence[str]) -> Prediction:
    """Map each ``(aspect string, polarity)`` to a word span of ``tokens``.

    Matching (spacing around punctuation and case), the choice among several occurrences (the
    pairs are read in text order) and the unmatched strings are defined in the module
    docstring. ``aspects`` is the sorted set of ``(start, end, polarity)``.
    """
    hits = [matches(term, tokens) for term, _ in pairs]
    found = [k for k, h in enumerate(hits) if h]
    chosen = _assign([hits[k] for k in found], tokens)
    aspects = {(s, e, pairs[k][1]) for k, (s, e) in zip(found, chosen, strict=True)}
    unmatched: list[str] = []
    seen: set[tuple[str, str]] = set()
    for (term, pol), h in zip(pairs, hits, strict=True):
        if not h and (term, pol) not in seen:
            seen.add((term, pol))
            unmatched.append(term)
    return Prediction(tuple(sorted(aspects)), True, tuple(unmatched))


def parse_prediction(text: str, tokens: Sequence[str]) -> Prediction:
    """Generated text -> :class:`Prediction` (unparseable text -> no aspects, ``parsed=False``)."""
    pairs = parse_pairs(text)
    if pairs is None:
        return Prediction((), False)
    return spans_for(pairs, tokens)


def matches(term: str, tokens: Sequence[str]) -> dict[tuple[int, int], int]:
    """Every whole-token span ``(i, j)`` of ``tokens`` that ``term`` names, with its form: 0 the
    same words, 1 the same after :func:`compact`, 2 and 3 the same casefolded, 4 and 5 the same
    with no whitespace at all (then casefolded)."""
    words = term.split()
    found: dict[tuple[int, int], int] = {}
    if not words:
        return found
    forms = []
    for fold in (False, True):
        norm = str.casefold if fold else str
        want, have = [norm(w) for w in words], [norm(t) for t in tokens]
        n = len(want)
        exact = [(i, i + n) for i in range(len(have) - n + 1) if have[i : i + n] == want]
        forms += [
            (0 + 2 * fold, exact),
            (1 + 2 * fold, _find_joined(want, have, _spaced)),
            (4 + fold, _find_joined(want, have, "".join)),
        ]
    for form, spans in sorted(forms):
        for span in spans:
            found.setdefault(span, form)
    return dict(sorted(found.items()))


def occurrences(term: str, tokens: Sequence[str]) -> list[tuple[int, int]]:
    """The spans of :func:`matches` in its best form (what a single pair can map to)."""
    found = matches(term, tokens)
    best = min(found.values(), default=0)
    return [span for span, form in found.items() if form == best]


def _spaced(words: Sequence[str]) -> str:
    return compact(" ".join(words))


def _find_joined(
    words: Sequence[str], tokens: Sequence[str], join: Callable[[Sequence[str]], str]
) -> list[tuple[int, int]]:
    """Spans ``(i, j)`` with ``join(tokens[i:j]) == join(words)``; ``join`` of a longer span
    extends that of a shorter one, so a scan stops as soon as it is no prefix."""
    target = join(words)
    out = []
    for i in range(len(tokens)):
        for j in range(i + 1, len(tokens) + 1):
            got = join(tokens[i:j])
            if not target.startswith(got):
                break
            if got == target:
                out.append((i, j))
                break
    return out


def _assign(
    candidates: Sequence[Mapping[tuple[int, int], int]], tokens: Sequence[str]
) -> tuple[tuple[int, int], ...]:
    """One span per pair: the fewest out-of-order pairs, then the fewest matched in a worse form
    than their best, then the fewest tag bodies, then the earliest occurrences (a shortest path
    over the pairs, each state the last span taken)."""
    if not candidates:
        return ()

    def cost(span: tuple[int, int], found: Mapping[tuple[int, int], int]) -> tuple[int, int]:
        worse = found[span] > min(found.values())
        tag = span[0] > 0 and tokens[span[0] - 1] in TAG_MARKS
        return int(worse), int(tag)

    # per last span: ((out of order, worse form, tag bodies), spans so far); tuples compare in
    # that order, the spans so far last (the earliest occurrences)
    first = candidates[0]
    best = {s: ((0, *cost(s, first)), (s,)) for s in first}
    for found in candidates[1:]:
        best = {
            s: min(
                (
                    (total[0] + (s[0] < last[1]), total[1] + extra[0], total[2] + extra[1]),
                    path + (s,),
                )
                for last, (total, path) in best.items()
            )
            for s in found
            for extra in [cost(s, found)]
        }
    return min(best.values())[1]


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
    """Score predictions against gold aspects (definitions in the module docstring).

    Args:
        gold: tweet id -> gold aspects.
        pred: tweet id -> predicted aspects; ids absent here count as empty predictions.
        unparsed: number of generated outputs that did not parse (reported only).
        unmatched: number of predicted aspect strings not found in their tweet; each counts as
            one wrong JMASA and MATE prediction.

    Returns:
        ``{"jmasa": {p, r, f1, tp, pred, gold}, "mate": {...}, "masc": {acc, f1, n, coverage},
        "masc_joint": {acc, f1, n}, "tweets": int, "unparsed": int, "unmatched": int}``.

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
    # (gold polarity, predicted polarity or None) per gold aspect, and whether its span was found
    polarity_pairs: list[tuple[str, str | None, bool]] = []
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
            guess = next(iter(pols)) if len(pols) == 1 else None
            polarity_pairs.append((polarity, guess, bool(pols)))
    found = [(g, p) for g, p, hit in polarity_pairs if hit]
    every = [(g, p) for g, p, _ in polarity_pairs]
    return {
        "jmasa": _prf(j_tp, j_pred + unmatched, n_gold),
        "mate": _prf(m_tp, m_pred + unmatched, n_gold),
        "masc": {**_accuracy(found), "coverage": len(found) / n_gold if n_gold else 0.0},
        "masc_joint": _accuracy(every),
        "tweets": len(gold),
        "unparsed": unparsed,
        "unmatched": unmatched,
    }


def _accuracy(pairs: Sequence[tuple[str, str | None]]) -> dict[str, float]:
    right = sum(g == p for g, p in pairs)
    return {
        "acc": right / len(pairs) if pairs else 0.0,
        "f1": _macro_f1(pairs),
        "n": len(pairs),
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
