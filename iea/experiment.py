"""The paper's claims as checks over repeated trainings: Table 3 rows, data efficiency, filters.

Pure: the flow (``flows/experiment.py``) trains each row for several seeds and hands the test
metrics here as :class:`Run` records; this module summarises them (mean and sample standard
deviation over seeds), checks the orderings the paper claims, and renders the tables.

An ordering "A above B" holds when ``mean(A) - mean(B) > margin`` and the difference exceeds
``2 x`` the pooled standard deviation ``sqrt((sd(A)^2 + sd(B)^2) / 2)``; "A at least B" holds
when ``mean(A) >= mean(B) - 2 x pooled``, i.e. A is not measurably below B.

The test-time threshold comparisons (``keep_all:eval``: each seed's config-trained ``full`` model
tested again at other thresholds) are paired: A and B are the same model on the same test
tweets, so the seed-to-seed spread of the models, which moves both alike, is not noise in their
difference. There the claim holds when the mean per-seed difference exceeds the margin and
``2 x`` the standard deviation of the per-seed differences (:func:`above_paired`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from iea.nmi import ABLATIONS

PAPER_TABLE3: dict[str, dict[str, float]] = {
    "full": {"t15": 0.717, "t17": 0.721},
    "no_segmentation": {"t15": 0.702},
    "no_aligner_nmi": {"t15": 0.684},
}
"""JMASA F1 of the paper's Table 3 that we have on record (Twitter-2015 ``t15`` / 2017
``t17``); a cell we do not have is absent and shown as ``—``, never filled in."""
ROWS: tuple[str, ...] = ABLATIONS
"""The rows, in table order: Table 3's five and ``text_only``."""
METRICS: tuple[str, ...] = ("jmasa_f1", "mate_f1", "masc_acc")


@dataclass(frozen=True)
class Run:
    """One trained row: ``row`` (an ablation name, or a label such as ``full@25%``), its seed,
    the share of training tweets, the filter setting's name (``keep_all``: trained and tested
    with it; ``keep_all:eval``: the config-trained model tested with it), and its test metrics."""

    row: str
    seed: int
    metrics: dict[str, float]
    fraction: float = 1.0
    thresholds: str = "config"
    extra: dict[str, Any] = field(default_factory=dict)


def fraction_overrides(
    fraction: float, n_train: int, epochs: int, eval_every: int = 1, *, equal_steps: bool = True
) -> list[str]:
    """The JMASA training overrides of a data-efficiency row: the first ``round(fraction *
    n_train)`` training tweets (at least one) and, with ``equal_steps``, ``epochs / fraction``
    epochs with a dev evaluation every ``eval_every / fraction`` (both rounded), so the share
    trains for about as many optimizer steps, with as many dev evaluations, as 100% does: a
    smaller share sees each tweet more often, it does not train less. ``equal_steps=False``:
    the same epochs as 100% (fewer steps).

    Raises:
        ValueError: ``fraction`` outside (0, 1], or a count below 1.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if n_train < 1 or epochs < 1 or eval_every < 1:
        raise ValueError(
            f"n_train, epochs and eval_every must be >= 1, got {n_train}, {epochs}, {eval_every}"
        )
    out = [f"jmasa.train.max_train_examples={max(1, round(fraction * n_train))}"]
    if equal_steps and fraction < 1:
        out += [
            f"jmasa.train.epochs={max(1, round(epochs / fraction))}",
            f"jmasa.train.eval_every={max(1, round(eval_every / fraction))}",
        ]
    return out


@dataclass(frozen=True)
class Stat:
    mean: float
    sd: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.sd:.3f}"


def stat(values: Sequence[float]) -> Stat:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values")
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return Stat(statistics.fmean(values), sd, len(values))


def summarise(
    runs: Iterable[Run], metrics: Sequence[str] = METRICS
) -> dict[tuple[str, float, str], dict[str, Stat]]:
    """``{(row, fraction, thresholds): {metric: Stat over seeds}}``."""
    groups: dict[tuple[str, float, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.row, r.fraction, r.thresholds), []).append(r)
    return {
        key: {m: stat([r.metrics[m] for r in rs]) for m in metrics if m in rs[0].metrics}
        for key, rs in groups.items()
    }


def pooled_sd(a: Stat, b: Stat) -> float:
    return math.sqrt((a.sd**2 + b.sd**2) / 2)


@dataclass(frozen=True)
class Claim:
    text: str
    holds: bool
    detail: str


def above(name: str, a: Stat, b: Stat, margin: float = 0.0) -> Claim:
    """``a`` above ``b`` by more than ``margin`` and by more than 2 pooled sd."""
    diff, p = a.mean - b.mean, pooled_sd(a, b)
    holds = diff > margin and diff > 2 * p
    return Claim(name, holds, f"diff {diff:+.3f}, 2 x pooled sd {2 * p:.3f}, margin {margin}")


def at_least(name: str, a: Stat, b: Stat) -> Claim:
    """``a`` not measurably below ``b``: ``mean(a) >= mean(b) - 2 x pooled sd``."""
    diff, p = a.mean - b.mean, pooled_sd(a, b)
    return Claim(name, diff >= -2 * p, f"diff {diff:+.3f}, 2 x pooled sd {2 * p:.3f}")


def above_paired(name: str, a: Sequence[float], b: Sequence[float], margin: float = 0.0) -> Claim:
    """``a[i]`` above ``b[i]`` (the same model, seed ``i``, measured two ways): the mean of the
    differences exceeds ``margin`` and ``2 x`` their sample sd (0 for one pair).

    Raises:
        ValueError: ``a`` and ``b`` of different lengths, or empty.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired values need equal, non-empty lists, got {len(a)} and {len(b)}")
    d = stat([x - y for x, y in zip(a, b, strict=True)])
    holds = d.mean > margin and d.mean > 2 * d.sd
    return Claim(
        name,
        holds,
        f"paired over {d.n} seeds: diff {d.mean:+.3f}, 2 x sd of the differences "
        f"{2 * d.sd:.3f}, margin {margin}",
    )


def check_claims(
    summary: dict[tuple[str, float, str], dict[str, Stat]],
    metric: str = "jmasa_f1",
    runs: Iterable[Run] | None = None,
) -> list[Claim]:
    """The orderings of the controlled-world issue, for every one whose rows were run.

    With ``runs`` (the runs ``summary`` was made from), the test-time threshold comparisons are
    paired by seed (:func:`above_paired`); without, they use the pooled sd like the others.
    """
    by_seed: dict[tuple[str, float, str], dict[int, float]] = {}
    for r in runs or ():
        by_seed.setdefault((r.row, r.fraction, r.thresholds), {})[r.seed] = r.metrics[metric]

    def get(row: str, fraction: float = 1.0, thresholds: str = "config") -> Stat | None:
        cell = summary.get((row, fraction, thresholds))
        return cell.get(metric) if cell else None

    claims: list[Claim] = []
    full, base = get("full"), get("no_aligner_nmi")
    if full and base:
        claims.append(above("full > no_aligner_nmi by >= 0.10", full, base, 0.10))
    for row, fn in (
        ("text_only", above),
        ("no_nmi", above),
        ("no_interpretation", at_least),
        ("no_segmentation", at_least),
    ):
        other = get(row)
        if full and other:
            word = ">" if fn is above else ">="
            claims.append(fn(f"full {word} {row}", full, other))
    fractions = sorted({f for (_, f, t) in summary if t == "config"})
    small = [f for f in fractions if f < 1.0]
    if small and full and base:
        f = small[0]
        fs, bs = get("full", f), get("no_aligner_nmi", f)
        if fs and bs:
            gap_small, gap_full = fs.mean - bs.mean, full.mean - base.mean
            claims.append(
                Claim(
                    f"gap full - no_aligner_nmi larger at {f:.0%} than at 100%",
                    gap_small > gap_full,
                    f"gap {gap_small:+.3f} at {f:.0%}, {gap_full:+.3f} at 100%",
                )
            )
    cfg = get("full")
    for other in ("keep_all", "drop_objects"):
        o = get("full", 1.0, other)
        if cfg and o:
            claims.append(above(f"config thresholds > {other} by >= 0.05", cfg, o, 0.05))
        o = get("full", 1.0, f"{other}:eval")
        if cfg and o:
            name = f"config thresholds > {other}, at test only, by >= 0.05"
            mine = by_seed.get(("full", 1.0, "config"), {})
            theirs = by_seed.get(("full", 1.0, f"{other}:eval"), {})
            seeds = sorted(set(mine) & set(theirs))
            if seeds:
                a, b = [mine[k] for k in seeds], [theirs[k] for k in seeds]
                claims.append(above_paired(name, a, b, 0.05))
            else:
                claims.append(above(name, cfg, o, 0.05))
    return claims


def markdown_table(
    summary: dict[tuple[str, float, str], dict[str, Stat]], metrics: Sequence[str] = METRICS
) -> str:
    """One row per (row, fraction, thresholds): mean ± sd of each metric, n seeds, and the
    paper's Table 3 JMASA F1 where the row is one of its rows at 100% of the data."""
    head = ["row", "train share", "thresholds", *metrics, "seeds", "paper T15 / T17 (JMASA F1)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (row, fraction, thresholds), stats in sorted(
        summary.items(), key=lambda kv: (kv[0][2] != "config", -kv[0][1], _order(kv[0][0]))
    ):
        paper = PAPER_TABLE3.get(row) if fraction == 1.0 and thresholds == "config" else None
        cells = [
            row,
            f"{fraction:.0%}",
            thresholds,
            *(str(stats[m]) if m in stats else "" for m in metrics),
            str(max(s.n for s in stats.values())),
            " / ".join(f"{paper[d]:.3f}" if d in paper else "—" for d in ("t15", "t17"))
            if paper
            else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _order(row: str) -> int:
    return ROWS.index(row) if row in ROWS else len(ROWS)


def claims_markdown(claims: Sequence[Claim]) -> str:
    return "\n".join(
        f"- {'holds' if c.holds else 'DOES NOT HOLD'}: {c.text} ({c.detail})" for c in claims
    )
