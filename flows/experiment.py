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
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from multiprocessing import get_context
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


def train_row(config: str | list[str], overrides: list[str], row: str) -> dict:
    """One training of the experiment (the ``jmasa_finetune`` flow, not registered): its test
    metrics, coverage, model key, model folder and aligner (``model_dir``, ``key``). Top-level
    so a worker process can run it."""
    from flows.train import jmasa_finetune

    res = jmasa_finetune(config, overrides, ablation=row, register=False)
    return {k: res[k] for k in ("test", "coverage", "key", "model_dir", "aligner")}


FIXED = ":eval"
"""Suffix of a threshold setting applied to the config-trained ``full`` model at test time
only (``keep_all:eval``), against one the model was also trained with (``keep_all``); a
character MLflow allows in a metric name (:func:`metric_name`)."""


def metric_name(run: Run) -> str:
    """The MLflow metric of ``run``'s test JMASA F1 (one per row, share and thresholds; the
    seed is its step)."""
    return f"test_jmasa_f1/{run.row}/{run.fraction:.2f}/{run.thresholds}"


def fixed_model_scores(
    config: str | list[str], overrides: list[str], model: dict, names: list[str]
) -> dict[str, dict[str, float]]:
    """The trained ``full`` model ``model`` (:func:`train_row`'s result) scored on test at each
    named filter setting of :func:`threshold_settings`, without retraining: every test region
    interpreted and aligned with the filters off (cached stages,
    :func:`flows.thresholds.gather_regions`), then each setting's surviving regions, their NMI
    instructions and the model's answers (:class:`iea.thresholds.TrialEvaluator`), as a
    threshold search scores a trial. ``config`` rebuilds the training's own test instructions,
    so its scores are the training's test scores.

    Returns:
        ``{name: test metrics}`` for each of ``names``, with ``aligned_regions``: how many
        aligned regions the instructions hold.
    """
    from flows.preprocess import split_tweets, twitter_preprocessing
    from flows.thresholds import THRESHOLDS, model_evaluator
    from iea.vision.filters import Thresholds

    settings = load_settings(config, overrides)
    data = twitter_preprocessing(config, overrides)
    tweets = split_tweets(settings.store, data["store_prefix"], "test")
    evaluate = model_evaluator(settings, model, tweets, "full")
    out = {}
    for name in names:
        named = load_settings(config, [*overrides, *threshold_settings(settings)[name]])
        th = Thresholds(**{n: getattr(named.filters, n) for n in THRESHOLDS})
        res = evaluate(th)
        out[name] = {**res.metrics, "aligned_regions": res.aligned_kept}
    return out


@contextmanager
def _worker_env(threads: int):
    """The environment the worker processes start with (spawned processes copy it): their
    torch thread count, and this flow's Prefect API so their runs land on the same server
    (without one, each worker starts its own temporary server)."""
    from prefect.settings import get_current_settings

    env = {"OMP_NUM_THREADS": str(threads)}
    api = get_current_settings().api.url
    if api:
        env["PREFECT_API_URL"] = str(api)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _fixed_model_runs(
    config: str | list[str], overrides: list[str], settings, full_models: dict[int, dict], logger
) -> list[Run]:
    """Per seed, the config-trained ``full`` model at the other named filter settings, at test
    time only (:func:`fixed_model_scores`), as runs named ``<setting>:eval``. Its score at the
    config's own thresholds must be the training's test score: a difference is logged."""
    names = list(threshold_settings(settings))
    out = []
    for seed, res in sorted(full_models.items()):
        scores = fixed_model_scores(config, [*overrides, f"jmasa.train.seed={seed}"], res, names)
        again, trained = scores["config"]["jmasa_f1"], float(res["test"]["jmasa_f1"])
        if abs(again - trained) > 1e-9:
            logger.warning(
                "seed %d: the full model rescored at the config's thresholds gives test JMASA"
                " F1 %.4f, its training %.4f (the instructions or the answers differ)",
                seed,
                again,
                trained,
            )
        for name in names:
            if name != "config":
                m = {k: float(v) for k, v in scores[name].items()}
                out.append(Run("full", seed, m, 1.0, name + FIXED, {"key": res["key"]}))
                logger.info(
                    "full seed %d, trained at the config's thresholds, tested at %s: test JMASA"
                    " F1 %.3f with %d aligned regions (config %.3f with %d)",
                    seed,
                    name,
                    m["jmasa_f1"],
                    m["aligned_regions"],
                    again,
                    scores["config"]["aligned_regions"],
                )
    return out


@flow(name="ablation_experiment", log_prints=True)
def ablation_experiment(
    config: str | list[str],
    overrides: list[str] | None = None,
    seeds: list[int] | None = None,
    rows: list[str] | None = None,
    fractions: list[float] | None = None,
    thresholds: bool = True,
    out: str | None = None,
    equal_steps: bool = True,
    workers: int = 1,
    n_test: int | None = None,
) -> dict:
    """Train every (row, seed), every data fraction (``full`` and ``no_aligner_nmi``;
    :func:`iea.experiment.fraction_overrides`, ``equal_steps``) and, with ``thresholds``,
    ``full`` at each named filter setting; return the summary and claims.

    With ``workers`` > 1 the first training runs here (it fills the shared stage caches:
    interpretation, aligner, alignments) and the rest in that many processes, each with
    ``cores / workers`` torch threads (two 1-thread trainings at once get more done on 2 cores
    than one 2-thread training: BENCHMARKS.md). Every training is keyed and cached as in
    sequence; one trained with another thread count is another draw of the same training (its
    sums split differently, its numbers can differ as a seed's do), so a table mixes them only
    as it mixes seeds.

    ``n_test`` (synthetic worlds only) scores every model on that many test tweets: the world
    draws its splits in order (train, dev, test) from one seed, so a longer test split leaves
    train and dev, and so every training, as they are. An explicit ``data.synthetic.n_test``
    in ``overrides`` wins.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    overrides = list(overrides or [])
    if n_test is not None:
        if n_test < 1:
            raise ValueError(f"n_test must be >= 1, got {n_test}")
        overrides = [f"data.synthetic.n_test={n_test}", *overrides]
    settings = load_settings(config, overrides)
    synthetic = settings.data.source == "synthetic"
    if n_test is not None and not synthetic:
        raise ValueError(
            "n_test sets the synthetic world's test split; this config reads files "
            "(data.source is not synthetic): leave n_test out"
        )
    test_tweets = settings.data.synthetic.n_test if synthetic else None
    logger = get_run_logger()
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
    runs: list[Run | None] = [None] * len(jobs)
    full_models: dict[int, dict] = {}

    def args(job):
        row, seed, _, _, extra = job
        return config, [*overrides, f"jmasa.train.seed={seed}", *extra], row

    def done(k: int, res: dict) -> None:
        row, seed, fraction, th, _ = jobs[k]
        metrics = {m: float(v) for m, v in res["test"].items()}
        metrics["coverage_test"] = float(res["coverage"]["test"])
        runs[k] = Run(row, seed, metrics, fraction, th, {"key": res["key"]})
        if (row, fraction, th) == ("full", 1.0, "config"):
            full_models[seed] = res
        logger.info(
            "[%d/%d] %s seed %d, %.0f%% of train, thresholds %s: test JMASA F1 %.3f",
            sum(r is not None for r in runs),
            len(jobs),
            row,
            seed,
            100 * fraction,
            th,
            metrics["jmasa_f1"],
        )

    parallel = workers > 1 and len(jobs) > 1
    for k in range(1 if parallel else len(jobs)):  # in parallel, the first fills the caches
        done(k, train_row(*args(jobs[k])))
    if parallel:
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        with (
            _worker_env(threads),
            ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool,
        ):
            futures = {pool.submit(train_row, *args(jobs[k])): k for k in range(1, len(jobs))}
            for fut in as_completed(futures):
                done(futures[fut], fut.result())
    runs = [r for r in runs if r is not None]
    if thresholds:
        runs += _fixed_model_runs(config, overrides, settings, full_models, logger)
    summary = summarise(runs, ("jmasa_f1", "mate_f1", "masc_acc", "coverage_test"))
    claims = check_claims(summary, runs=runs)
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
                "test_tweets": test_tweets,
            }
        )
        for r in runs:
            mlflow.log_metric(
                metric_name(r),
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
        "test_tweets": test_tweets,
        "table": text,
        "claims": [{"claim": c.text, "holds": c.holds, "detail": c.detail} for c in claims],
        "runs": [r.__dict__ for r in runs],
    }
