"""Prefect flow ``ablation_experiment``: the paper's Table 3 rows (plus text-only), the data
efficiency of Figure 5 and the filter thresholds, each trained for several seeds on fixed
upstream stages, summarised (mean ± sd over seeds) and checked by :mod:`iea.experiment`.

Thin: every training is the ``jmasa_finetune`` flow (cached by content, so a rerun retrains
nothing it has); a seed is ``jmasa.train.seed`` (the JMASA model's initialisation and data
order); the world, FGCA, aligner and interpreter stay those of the config. The table and the
claims go to an MLflow run (``experiment.md``, one metric per row and seed) and to a file.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from prefect import flow, get_run_logger

from flows import tracking
from iea.config import load_settings
from iea.experiment import (
    ROWS,
    Run,
    check_claims,
    claims_markdown,
    fraction_overrides,
    markdown_table,
    summarise,
)


def threshold_settings(settings) -> dict[str, list[str]]:
    """Named filter settings: ``keep_all`` (0/0/0), ``config`` (the config's own) and
    ``drop_objects`` (a size cut above every object of the world: 120 px)."""
    return {
        "keep_all": ["filters.t_size=0", "filters.t_clarity=0", "filters.t_conf=0"],
        "config": [],
        "drop_objects": ["filters.t_size=120"],
    }


@flow(name="ablation_experiment", log_prints=True)
def ablation_experiment(
    config: str,
    overrides: list[str] | None = None,
    seeds: list[int] | None = None,
    rows: list[str] | None = None,
    fractions: list[float] | None = None,
    thresholds: bool = True,
    out: str | None = None,
    equal_steps: bool = True,
) -> dict:
    """Train every (row, seed), every data fraction (``full`` and ``no_aligner_nmi``;
    :func:`iea.experiment.fraction_overrides`, ``equal_steps``) and, with ``thresholds``,
    ``full`` at each named filter setting; return the summary and claims.
    """
    from flows.train import jmasa_finetune

    logger = get_run_logger()
    overrides = list(overrides or [])
    settings = load_settings(config, overrides)
    seeds = list(seeds if seeds is not None else [0, 1, 2])
    rows = list(rows or ROWS)
    fractions = sorted({float(f) for f in (fractions or [1.0])} | {1.0})
    n_train = settings.data.synthetic.n_train
    train = settings.jmasa.train
    jobs: list[tuple[str, int, float, str, list[str]]] = []
    for seed in seeds:
        for row in rows:
            jobs.append((row, seed, 1.0, "config", []))
        for f in fractions:
            if f < 1.0:
                for row in ("full", "no_aligner_nmi"):
                    extra = fraction_overrides(
                        f, n_train, train.epochs, train.eval_every, equal_steps=equal_steps
                    )
                    jobs.append((row, seed, f, "config", extra))
        if thresholds:
            for name, extra in threshold_settings(settings).items():
                if name != "config":
                    jobs.append(("full", seed, 1.0, name, extra))
    runs: list[Run] = []
    for k, (row, seed, fraction, th, extra) in enumerate(jobs, start=1):
        logger.info(
            "[%d/%d] %s seed %d, %.0f%% of train, thresholds %s",
            k,
            len(jobs),
            row,
            seed,
            100 * fraction,
            th,
        )
        res = jmasa_finetune(
            config, [*overrides, f"jmasa.train.seed={seed}", *extra], ablation=row, register=False
        )
        metrics = {m: float(v) for m, v in res["test"].items()}
        metrics["coverage_test"] = float(res["coverage"]["test"])
        runs.append(Run(row, seed, metrics, fraction, th, {"key": res["key"]}))
    summary = summarise(runs, ("jmasa_f1", "mate_f1", "masc_acc", "coverage_test"))
    claims = check_claims(summary)
    text = markdown_table(summary, ("jmasa_f1", "mate_f1", "masc_acc", "coverage_test"))
    text += "\n\n" + claims_markdown(claims) + "\n"
    with tracking.start_run(settings, "ablation_experiment", tags={"stage": "experiment"}):
        mlflow.log_params(
            {
                "seeds": json.dumps(seeds),
                "rows": json.dumps(rows),
                "fractions": json.dumps(fractions),
                "thresholds": thresholds,
                "equal_steps": equal_steps,
            }
        )
        for r in runs:
            mlflow.log_metric(
                f"test_jmasa_f1/{r.row}/{r.fraction:.2f}/{r.thresholds}",
                r.metrics["jmasa_f1"],
                step=r.seed,
            )
        mlflow.log_metrics({f"claim/{i}": float(c.holds) for i, c in enumerate(claims)})
        mlflow.log_text(text, "experiment.md")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    print(text)
    return {
        "table": text,
        "claims": [{"claim": c.text, "holds": c.holds, "detail": c.detail} for c in claims],
        "runs": [r.__dict__ for r in runs],
    }
