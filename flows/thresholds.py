"""Prefect flow ``threshold_search``: Optuna over the region-filter thresholds, each trial
scored on cached stages (:mod:`iea.thresholds`).

The flow trains (or reuses, by content key) the JMASA model of the current config, gathers
the dev and test regions once with every filter off, then runs Optuna trials of ``eval`` mode:
a trial's thresholds pick the regions, the fixed model scores dev. The config's thresholds are
the first trial; ``trials`` counts finished trials in total, so a rerun of the same study tops
it up. The best trial (on dev) is scored once on test at the end; test never chooses.
MLflow gets a parent run with one nested run per trial.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import mlflow
import optuna
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import tracking
from flows.locks import named_lock
from flows.study import open_storage, run_worker
from iea.config import (
    FilterSettings,
    GridSettings,
    SearchSettings,
    Settings,
    load_settings,
    redact_url,
)
from iea.vision.filters import Thresholds

THRESHOLDS = ("t_size", "t_clarity", "t_conf")
SEARCHABLE = ("full", "no_interpretation", "no_nmi")
"""Ablations whose instructions hold filtered regions (the others ignore the thresholds)."""


def _decimals(step: float) -> int:
    return max(0, -Decimal(str(step)).normalize().as_tuple().exponent)


def on_grid(grid: GridSettings, value: float) -> float:
    """``value`` rounded to the grid's decimals (0.8500000000000001 -> 0.85)."""
    return round(float(value), _decimals(grid.step))


def _check_on_grid(name: str, grid: GridSettings, value: float) -> str | None:
    k = (value - grid.low) / grid.step
    if not grid.low <= value <= grid.high or not math.isclose(k, round(k), abs_tol=1e-9):
        return (
            f"filters.{name} = {value} is not on search.{name}'s grid "
            f"({grid.low}..{grid.high} step {grid.step})"
        )
    return None


def check_search(settings: Settings) -> None:
    """Every reason the search cannot start, at once.

    Raises:
        ValueError: the mask generator's cut sits above the lowest ``t_conf`` tried (such a
            trial could not act), the config's thresholds are off the grids (the first trial
            must be them), or ``search.ablation`` ignores the thresholds.
    """
    search = settings.search
    problems = []
    if settings.segment.pred_iou_thresh > search.t_conf.low:
        problems.append(
            f"segment.pred_iou_thresh ({settings.segment.pred_iou_thresh}) is above "
            f"search.t_conf.low ({search.t_conf.low}): the mask generator would drop masks "
            "before a low t_conf could keep them; lower segment.pred_iou_thresh"
        )
    for name in THRESHOLDS:
        why = _check_on_grid(name, getattr(search, name), getattr(settings.filters, name))
        if why:
            problems.append(why)
    if search.ablation not in SEARCHABLE:
        problems.append(
            f"search.ablation {search.ablation!r} puts no filtered region in its instructions:"
            f" one of {', '.join(SEARCHABLE)}"
        )
    if problems:
        raise ValueError("cannot search thresholds:\n  " + "\n  ".join(problems))


def suggest(trial: optuna.Trial, search: SearchSettings) -> Thresholds:
    """The trial's thresholds, each on its grid."""
    values = {}
    for name in THRESHOLDS:
        g = getattr(search, name)
        values[name] = on_grid(g, trial.suggest_float(name, g.low, g.high, step=g.step))
    return Thresholds(**values)


def _constraint(trial: optuna.trial.FrozenTrial) -> list[float]:
    """Optuna's constraint values of a trial: feasible when every value is <= 0."""
    return [trial.user_attrs.get("constraint", 0.0)]


def _sampler(search: SearchSettings, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler of ``search``, seeded ``search.seed + offset`` (workers sample apart),
    told the kept-fraction constraint when there is one."""
    seed = search.seed + offset
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    extra = {"constraints_func": _constraint} if search.min_kept_fraction > 0 else {}
    if search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, **extra)
    return optuna.samplers.TPESampler(seed=seed, **extra)


def f1_of(trial: optuna.trial.FrozenTrial) -> float | None:
    """A trial's dev JMASA F1 (its first objective), None when it has no value."""
    return trial.values[0] if trial.values else None


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return all(c <= 0 for c in _constraint(trial))


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The finished feasible trial with the highest dev JMASA F1; of equals, the one keeping the
    fewest regions, then the first. So it is the F1 end of the Pareto front.

    Raises:
        ValueError: no finished trial keeps the required share of regions.
    """
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    ok = [tr for tr in done if feasible(tr)]
    if not ok:
        raise ValueError(
            f"study {study.study_name!r}: none of {len(done)} finished trials is feasible "
            "(each kept fewer regions than search.min_kept_fraction)"
        )
    return max(ok, key=lambda tr: (f1_of(tr), -tr.user_attrs.get("kept_fraction", 1.0), -tr.number))


def pareto_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The feasible finished trials no other feasible one beats on both dev F1 (higher) and
    kept fraction (lower); for a one-objective study the kept fraction is read from the
    trials' records. Sorted by F1, best first."""
    done = [
        tr
        for tr in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if feasible(tr)
    ]

    def point(tr):
        return f1_of(tr), tr.user_attrs.get("kept_fraction", 1.0)

    front = [
        tr
        for tr in done
        if not any(
            point(o)[0] >= point(tr)[0] and point(o)[1] <= point(tr)[1] and point(o) != point(tr)
            for o in done
        )
    ]
    return sorted(front, key=lambda tr: (-f1_of(tr), tr.number))


def _pruner(search: SearchSettings) -> optuna.pruners.BasePruner:
    """The pruner of ``retrain`` trials (eval trials report nothing, so it never acts)."""
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


@task(name="threshold-search-worker", cache_policy=NO_CACHE)
def search_worker(work: Callable[[int], int], index: int) -> int:
    """One worker of the search (a Prefect task: workers run side by side on the flow's task
    runner); returns the trials it finished."""
    return work(index)


def finished(study: optuna.Study) -> int:
    """Trials that finished (COMPLETE): what ``trials`` counts."""
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def load_study(name: str, storage: str) -> optuna.Study:
    """An existing study.

    Raises:
        KeyError: no study ``name`` in ``storage`` (names the storage).
    """
    try:
        return optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        raise KeyError(f"no threshold study {name!r} in {redact_url(storage)}") from None


def _registered(settings: Settings, uri: str, logger) -> dict:
    """The registered JMASA version ``uri`` as the search uses a trained model: ``model_dir``,
    ``key``, ``aligner`` (``model_dir``, ``key``), downloaded under the work folder.

    Raises:
        ValueError: not a JMASA model with its aligner, or trained for another ablation than
            ``search.ablation``.
    """
    from flows.registry import download_dir, resolve
    from iea.predict import read_stage

    tracking.configure(settings)
    reg = resolve(uri, download_dir(settings.data.work_dir, uri))
    stage = read_stage(reg.model_dir)
    if stage["stage"] != "jmasa" or reg.aligner_dir is None:
        raise ValueError(f"model {uri!r} ({reg.uri}): not a JMASA model with its aligner")
    ablation = stage.get("ablation", "full")
    if ablation != settings.search.ablation:
        raise ValueError(
            f"model {uri!r} ({reg.uri}) was trained for ablation {ablation!r}, the search scores"
            f" {settings.search.ablation!r} (search.ablation)"
        )
    trained = reg.trained_settings
    now = settings.model_dump(mode="json")
    for section in ("segment", "interpreter", "nmi"):
        if trained.get(section) != now.get(section):
            logger.warning(
                "model %s was trained with other %s settings than this search's config: the"
                " regions it scores are not the ones it was trained on",
                reg.uri,
                section,
            )
    return {
        "model_dir": str(reg.model_dir),
        "key": reg.tags.get("model.key") or f"{reg.name}-{reg.version}",
        "uri": reg.uri,
        "aligner": {"model_dir": str(reg.aligner_dir), "key": reg.tags["aligner.key"]},
    }


def gather_regions(settings: Settings, tweets: dict, images_dir: Path, aligner: dict) -> dict:
    """Each split of ``tweets`` (name -> tweets) with every region (filters off), interpreted
    and aligned (cached)."""
    from iea.jmasa import align_regions
    from iea.models.finetune import load_trained
    from iea.store import open_store
    from iea.thresholds import all_regions
    from iea.vision.interpreter import ImageInterpreter

    store = open_store(settings.store)
    open_filters = settings.model_copy(
        update={"filters": FilterSettings(t_size=0, t_clarity=0, t_conf=0.0)}
    )
    interp = ImageInterpreter(open_filters, store)
    rt, t = settings.runtime, settings.aligner.train
    model, processor = load_trained(aligner["model_dir"], device=rt.device, cache=rt.model_cache)

    def align(items):
        return align_regions(
            model,
            processor,
            items,
            batch_size=t.eval_batch_size,
            max_new_tokens=t.max_new_tokens,
            store=store,
            aligner_key=aligner["key"],
        )

    return {s: all_regions(split, images_dir, interp, align) for s, split in tweets.items()}


def model_evaluator(settings: Settings, model: dict, tweets: list, ablation: str):
    """A :class:`iea.thresholds.TrialEvaluator` of the trained JMASA model ``model``
    (``model_dir``, ``aligner``) on ``tweets``: their regions interpreted and aligned with
    every filter off under ``settings`` (cached stages, :func:`gather_regions`), the model
    loaded on ``settings.runtime``'s device and answering with ``settings.jmasa.train``'s
    generation settings, its instructions laid out for ``ablation``."""
    from flows.preprocess import prepare_source
    from iea.jmasa import bound_predict, score_predictions
    from iea.models.finetune import load_trained
    from iea.thresholds import TrialEvaluator

    _, images = prepare_source(settings)
    split = gather_regions(settings, {"split": tweets}, Path(images), model["aligner"])["split"]
    rt, t = settings.runtime, settings.jmasa.train
    jmasa, processor = load_trained(model["model_dir"], device=rt.device, cache=rt.model_cache)
    predict = bound_predict(
        jmasa, processor, max_new_tokens=t.max_new_tokens, batch_size=t.eval_batch_size
    )
    return TrialEvaluator(split, predict, score_predictions, ablation)


@flow(name="threshold_search", log_prints=True)
def threshold_search(
    config: str | list[str] | None = None,
    overrides: list[str] | None = None,
    trials: int = 12,
    study: str | None = None,
    storage: str | None = None,
    workers: int = 1,
    model: str | None = None,
) -> dict[str, Any]:
    """Search the filter thresholds (``eval`` mode) until the study has ``trials`` finished
    trials, with ``workers`` workers side by side (:mod:`flows.study`: the budget is exact
    however many workers, here or on other machines, share the study); score the best on test
    once.

    ``model``: in eval mode, a registry reference (``models:/iea-jmasa/3``,
    ``models:/iea-jmasa@champion``) whose model scores the trials and whose aligner aligns the
    regions; default the model the config trains (trained here, or reused by its key). The
    default study name is per model key, so each model gets its own study.

    Returns:
        ``{"study", "storage", "finished", "ran", "first", "best", "test", "memo_hits",
        "memo_misses", "run_id"}``: ``first``/``best`` are ``{"params", "dev_jmasa_f1"}``,
        ``test`` the best trial's test metrics.
    """
    from flows.preprocess import prepare_source, split_tweets, twitter_preprocessing
    from flows.train import jmasa_finetune
    from iea.data.records import SPLITS
    from iea.jmasa import bound_predict, score_predictions
    from iea.models.finetune import load_trained
    from iea.thresholds import TrialEvaluator, overlay

    if trials < 1 or workers < 1:
        raise ValueError(f"trials and workers must be >= 1, got {trials} and {workers}")
    settings = load_settings(config, overrides or [])
    check_search(settings)
    search, logger = settings.search, get_run_logger()
    if model is not None and search.mode == "retrain":
        raise ValueError("--model names the fixed model of eval mode; retrain mode trains its own")
    if model is None:
        model = jmasa_finetune(config, overrides, ablation=search.ablation, register=False)
    else:
        model = _registered(settings, model, logger)
    data = twitter_preprocessing(config, overrides)
    tweets = {s: split_tweets(settings.store, data["store_prefix"], s) for s in SPLITS}
    _, images_dir = prepare_source(settings)
    wanted = {s: tweets[s] for s in ("dev", "test")}
    if search.mode == "retrain":
        wanted["train"] = tweets["train"]
    splits = gather_regions(settings, wanted, Path(images_dir), model["aligner"])
    rt, t = settings.runtime, settings.jmasa.train
    jmasa, processor = load_trained(model["model_dir"], device=rt.device, cache=rt.model_cache)

    predict_fn = bound_predict(
        jmasa, processor, max_new_tokens=t.max_new_tokens, batch_size=t.eval_batch_size
    )

    dev = TrialEvaluator(splits["dev"], predict_fn, score_predictions, search.ablation)
    retrain = _Retrain(settings, splits, Path(settings.data.work_dir) / "thresholds" / "trials")
    url = storage or search.storage
    name = study or f"thresholds-{model['key'][:12]}"
    store_db = open_storage(url)  # the schema, once, before any worker
    two = search.objectives == "f1_and_kept"
    if two and search.mode == "retrain":
        raise ValueError("search.objectives f1_and_kept needs search.mode eval")
    st = optuna.create_study(
        study_name=name,
        storage=store_db,
        load_if_exists=True,
        directions=["maximize", "minimize"] if two else ["maximize"],
        sampler=_sampler(search),
        pruner=_pruner(search),
    )
    with named_lock(url, name):  # another machine may be starting this study too
        if not st.trials:
            st.enqueue_trial({n: getattr(settings.filters, n) for n in THRESHOLDS})

    def objective(trial: optuna.Trial) -> float:
        th = suggest(trial, search)
        res = retrain(trial, th) if search.mode == "retrain" else dev(th)
        metrics = {f"dev/{k}": v for k, v in res.metrics.items()}
        metrics |= {"kept_fraction": res.kept_fraction, "aligned_kept": res.aligned_kept}
        metrics |= {"memo_hit": float(res.cache_hit), "trial_seconds": res.seconds}
        metrics |= {"predicted_tweets": res.predicted}
        with mlflow.start_run(
            experiment_id=parent.info.experiment_id,
            run_name=f"trial {trial.number}",
            parent_run_id=parent.info.run_id,
            nested=True,
        ):
            mlflow.log_params({**vars(th), "trial": trial.number, "study": name})
            mlflow.log_metrics(metrics)
        trial.set_user_attr("kept_fraction", res.kept_fraction)
        trial.set_user_attr("memo_hit", res.cache_hit)
        trial.set_user_attr("constraint", search.min_kept_fraction - res.kept_fraction)
        logger.info(
            "trial %d %s: dev JMASA F1 %.4f, kept %.3f of regions%s",
            trial.number,
            vars(th),
            res.metrics["jmasa_f1"],
            res.kept_fraction,
            " (memo)" if res.cache_hit else "",
        )
        f1 = res.metrics["jmasa_f1"]
        return (f1, res.kept_fraction) if two else f1

    def work(index: int) -> int:
        """Worker ``index``: its own study handle and sampler seed (``search.seed + index``)."""
        mine = optuna.load_study(
            study_name=name,
            storage=store_db,
            sampler=_sampler(search, offset=index),
            pruner=_pruner(search),
        )
        return run_worker(mine, objective, trials, storage_url=url, log=logger.warning)

    with tracking.start_run(settings, f"threshold_search[{name}]", tags={"stage": "thresholds"}):
        parent = mlflow.active_run()
        run_id = parent.info.run_id
        mlflow.log_params(
            {
                "search.trials": trials,
                "search.workers": workers,
                "search.model": model.get("uri", "the config's"),
            }
        )
        if workers == 1:
            per_worker = [work(0)]
        else:
            futures = [search_worker.submit(work, i) for i in range(workers)]
            per_worker = [f.result() for f in futures]
        ran = sum(per_worker)
        if finished(st) == 0:
            raise RuntimeError(f"study {name!r}: no finished trial (the flow log has why)")
        best = best_trial(st)
        front = pareto_front(st)
        best_th = Thresholds(**{n: on_grid(getattr(search, n), best.params[n]) for n in THRESHOLDS})
        test_eval = TrialEvaluator(splits["test"], predict_fn, score_predictions, search.ablation)
        test = test_eval(best_th).metrics
        first = st.trials[0]
        mlflow.log_params({f"best.{k}": v for k, v in vars(best_th).items()})
        mlflow.log_metrics(
            {
                "best/dev_jmasa_f1": f1_of(best),
                "pareto_front_size": len(front),
                **{f"best/test_{k}": v for k, v in test.items()},
                "first/dev_jmasa_f1": math.nan if f1_of(first) is None else f1_of(first),
                "finished_trials": finished(st),
                "memo_hits": dev.hits,
                "memo_misses": dev.misses,
                "predicted_tweets": dev.predicted,
            }
        )
        mlflow.log_text(export_yaml(vars(best_th)), "best_thresholds.yaml")
        done = [tr for tr in st.trials if tr.state == optuna.trial.TrialState.COMPLETE]
        worst = min(done, key=lambda tr: (f1_of(tr), tr.number))
        worst_th = Thresholds(
            **{n: on_grid(getattr(search, n), worst.params[n]) for n in THRESHOLDS}
        )
        plots_dir = (search.plots_dir / name).resolve()
        try:
            image = overlay(
                splits["dev"],
                [(f"best #{best.number}", best_th), (f"worst #{worst.number}", worst_th)],
            )
            overlays = {"overlay_best_worst": image}
        except ValueError as e:
            overlays = {}
            logger.warning("no overlay: %s", e)
        plots, skipped = write_plots(st, plots_dir, overlays)
        for path in plots:
            mlflow.log_artifact(str(path), "plots")
        for stem, why in skipped.items():
            logger.warning("plot %s not drawn: %s", stem, why)
        st.set_user_attr("plots_dir", str(plots_dir))
    logger.info(
        "study %s: %d finished trials; best %s dev JMASA F1 %.4f, test %.4f",
        name,
        finished(st),
        vars(best_th),
        f1_of(best),
        test["jmasa_f1"],
    )
    return {
        "study": name,
        "storage": redact_url(url),
        "finished": finished(st),
        "ran": ran,
        "first": {"params": first.params, "dev_jmasa_f1": f1_of(first)},
        "best": {
            "number": best.number,
            "params": vars(best_th),
            "dev_jmasa_f1": f1_of(best),
            "kept_fraction": best.user_attrs.get("kept_fraction"),
        },
        "pareto_front": [tr.number for tr in front],
        "test": test,
        "memo_hits": dev.hits,
        "memo_misses": dev.misses,
        "predicted_tweets": dev.predicted,
        "plots": [str(p) for p in plots],
        "run_id": run_id,
        "model": model.get("uri", model["model_dir"]),
    }


class _Retrain:
    """``retrain`` mode: a trial fine-tunes a fresh JMASA model (the config's base, LoRA) on the
    training instructions its thresholds give, for ``search.retrain_epochs`` epochs; after
    each evaluated epoch it reports dev JMASA F1 to Optuna and stops when the pruner says so
    (:class:`optuna.TrialPruned`). The trial's value is its best epoch's dev F1."""

    def __init__(self, settings: Settings, splits: dict, work: Path) -> None:
        self.settings, self.splits, self.work = settings, splits, work

    def __call__(self, trial: optuna.Trial, th: Thresholds):
        import dataclasses
        import shutil
        import time

        from flows.train import _load_model, finetune_config
        from iea.jmasa import jmasa_examples, predict, score_predictions
        from iea.models.finetune import prepare_model, train
        from iea.thresholds import TrialResult

        s, search = self.settings, self.settings.search
        t0 = time.perf_counter()
        cfg = finetune_config(s.jmasa, s.runtime.seed)
        if search.retrain_epochs:
            cfg = dataclasses.replace(cfg, epochs=search.retrain_epochs)
        picked = {k: self.splits[k].select(th) for k in ("train", "dev")}
        examples = {
            k: jmasa_examples(items, aligned, ablation=search.ablation, lazy=True)[0]
            for k, (items, aligned) in picked.items()
        }
        cap = search.retrain_max_examples or s.jmasa.train.max_train_examples
        if cap:
            examples["train"] = examples["train"][:cap]
        dev_tweets = picked["dev"][0].tweets
        model, processor = _load_model(s, "jmasa")
        model = prepare_model(model, cfg)
        evaluated = 0
        best: dict[str, float] = {}

        def evaluate(m) -> dict[str, float]:
            nonlocal evaluated
            evaluated += 1
            rows = predict(
                m,
                processor,
                examples["dev"],
                dev_tweets,
                max_new_tokens=s.jmasa.train.max_new_tokens,
                batch_size=s.jmasa.train.eval_batch_size,
            )
            metrics = score_predictions(rows, dev_tweets)
            trial.report(metrics["jmasa_f1"], evaluated * cfg.eval_every)
            if trial.should_prune():
                raise optuna.TrialPruned(
                    f"dev JMASA F1 {metrics['jmasa_f1']:.4f} at epoch {evaluated * cfg.eval_every}"
                )
            if not best or metrics["jmasa_f1"] > best["jmasa_f1"]:  # the engine keeps the first
                best.clear()
                best.update(metrics)
            return metrics

        out = self.work / f"{trial.study.study_name}-{trial.number}"
        shutil.rmtree(out, ignore_errors=True)  # a retried trial starts from nothing
        try:
            train(
                model,
                processor,
                examples["train"],
                cfg,
                out_dir=out,
                evaluate=evaluate,
                select="jmasa_f1",
                resume=False,
            )
        finally:
            shutil.rmtree(out, ignore_errors=True)
        return TrialResult(
            best,
            self.splits["train"].kept_fraction(th),
            sum(len(a) for a in picked["train"][1]),
            False,
            time.perf_counter() - t0,
        )


PLOTS = {
    "history": "plot_optimization_history",
    "importances": "plot_param_importances",
    "slice": "plot_slice",
    "contour": "plot_contour",
}
"""Optuna's matplotlib plots a search writes (file stem -> function)."""


def write_plots(
    study: optuna.Study, folder: Path, overlays: dict[str, Any] | None = None
) -> tuple[list[Path], dict[str, str]]:
    """Optuna's plots of ``study`` as PNGs in ``folder`` (:data:`PLOTS`, and ``pareto`` for a
    two-objective study), plus ``overlays``
    (``name -> PIL image``). Returns the files written and, per plot that could not be drawn
    (importances need two distinct finished trials), why."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from optuna.visualization import matplotlib as ovm

    folder.mkdir(parents=True, exist_ok=True)
    written, skipped = [], {}
    two = len(study.directions) == 2
    plots = {**PLOTS, **({"pareto": "plot_pareto_front"} if two else {})}
    for stem, fn in plots.items():
        kwargs: dict[str, Any] = (
            {"params": list(THRESHOLDS)} if stem in ("slice", "contour") else {}
        )
        if stem == "pareto":
            kwargs = {"target_names": ["dev JMASA F1", "kept fraction"]}
        elif two:  # plots of one value show the F1
            kwargs |= {"target": lambda tr: tr.values[0], "target_name": "dev JMASA F1"}
        else:
            kwargs["target_name"] = "dev JMASA F1"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" and a contour's few points
                axes = getattr(ovm, fn)(study, **kwargs)
        except Exception as e:  # a plot that cannot be drawn from these trials says why
            skipped[stem] = f"{type(e).__name__}: {e}"
            continue
        fig = np.asarray(axes).flat[0].figure
        fig.savefig(folder / f"{stem}.png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        written.append(folder / f"{stem}.png")
    for stem, image in (overlays or {}).items():
        image.save(folder / f"{stem}.png")
        written.append(folder / f"{stem}.png")
    return written, skipped


def export_yaml(thresholds: dict[str, float]) -> str:
    """The overrides file for the best thresholds (``filters:`` section)."""
    import yaml

    values = {k: _clean(thresholds[k]) for k in THRESHOLDS}
    return yaml.safe_dump({"filters": values}, sort_keys=False)


def _clean(value: float | None) -> float | None:
    """A stored grid value without float noise (Optuna keeps 0.6000000000000001)."""
    return None if value is None else round(float(value), 10)


def study_table(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial: number, state, thresholds, dev JMASA F1, kept fraction, memo hit."""
    return [
        {
            "trial": tr.number,
            "state": tr.state.name,
            **{n: _clean(tr.params.get(n)) for n in THRESHOLDS},
            "dev_jmasa_f1": f1_of(tr),
            "kept_fraction": tr.user_attrs.get("kept_fraction"),
            "memo_hit": tr.user_attrs.get("memo_hit"),
        }
        for tr in study.trials
    ]
