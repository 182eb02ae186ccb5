"""A threshold-search trial on cached stages against recomputing every stage, and Optuna's
own cost per trial.

    .venv/bin/python benchmarks/thresholds.py [--config configs/demo.yaml] [--repeats 3]
        [--trials 9] [k=v ...]

Trains (or reuses, by content key) the config's JMASA model as ``iea thresholds search``
does, gathers dev's regions once with every filter off, then, in one process:

* **cached trial** (what a search trial costs): :class:`iea.thresholds.TrialEvaluator` at
  ``--trials`` threshold settings from the search grids whose kept regions all differ (every
  one a memo miss: filter, NMI, the fixed model's predictions and scores); median seconds, in
  sequence as a search runs them (a tweet whose instruction an earlier trial built is not
  predicted again) and cold (a fresh evaluator per trial). A memo hit's median is printed too.
* **full recompute** of every stage that depends on the thresholds, for the config's
  thresholds, ``--repeats`` times, as the training flow runs them: segmentation, region
  features, the filter, interpretation of the kept regions and the aligner's answers on an
  empty store (no cache; the models are loaded once, before timing, which favours the
  recompute), then the NMI and the same predictions and scores. Its dev
  JMASA F1 must equal the cached trial's at the same thresholds (checked).
* **Optuna overhead**: :func:`flows.study.run_worker` on the search's sqlite storage (WAL,
  heartbeats, claim lock) and sampler with an objective that returns at once: seconds per trial
  of sampler + storage, against the cached trial's median.

Prints JSON: the medians, their ratios (goal <= 0.05), the overhead and its share of the
in-sequence trial (goal <= 1%).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trials", type=int, default=9)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    from flows import set_offline_defaults

    set_offline_defaults()
    import optuna

    from flows.preprocess import prepare_source, split_tweets, twitter_preprocessing
    from flows.study import open_storage, run_worker
    from flows.thresholds import THRESHOLDS, _sampler, check_search, gather_regions, suggest
    from flows.train import jmasa_finetune
    from iea.config import load_settings
    from iea.jmasa import (
        align_regions,
        bound_predict,
        jmasa_examples,
        score_predictions,
        tweet_inputs,
    )
    from iea.models.finetune import load_trained
    from iea.models.refs import prepare_tiny
    from iea.store import LocalStore, open_store
    from iea.thresholds import TrialEvaluator
    from iea.vision.filters import Thresholds
    from iea.vision.interpreter import ImageInterpreter

    settings = load_settings(args.config, args.overrides)
    check_search(settings)
    rt, search = settings.runtime, settings.search
    prepare_tiny(
        [
            settings.segment.sam,
            settings.fgca.llm,
            settings.interpreter.model,
            settings.aligner.model,
            settings.jmasa.model,
        ],
        seed=rt.seed,
        cache=rt.model_cache,
        progress=_progress,
    )
    _progress("training (or reusing) the config's JMASA model ...")
    model = jmasa_finetune(args.config, args.overrides, ablation=search.ablation, register=False)
    data = twitter_preprocessing(args.config, args.overrides)
    store = open_store(settings.store)
    dev_tweets = split_tweets(settings.store, data["store_prefix"], "dev")
    _, images_dir = prepare_source(settings)
    images_dir = Path(images_dir)
    _progress(f"gathering {len(dev_tweets)} dev tweets' regions (cached stages) ...")
    split = gather_regions(settings, {"dev": dev_tweets}, images_dir, model["aligner"])["dev"]
    jt = settings.jmasa.train
    jmasa, processor = load_trained(model["model_dir"], device=rt.device, cache=rt.model_cache)

    predict_fn = bound_predict(
        jmasa, processor, max_new_tokens=jt.max_new_tokens, batch_size=jt.eval_batch_size
    )

    # -- cached trials: distinct kept sets, every one a memo miss
    evaluator = TrialEvaluator(split, predict_fn, score_predictions, search.ablation)
    config_th = Thresholds(**{n: getattr(settings.filters, n) for n in THRESHOLDS})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    settings_to_try, keys = [config_th], {evaluator.key(config_th)}
    while len(settings_to_try) < args.trials:
        th = suggest(study.ask(), search)
        if evaluator.key(th) not in keys:
            keys.add(evaluator.key(th))
            settings_to_try.append(th)
    TrialEvaluator(split, predict_fn, score_predictions, search.ablation)(config_th)  # warm-up
    # cold: a fresh evaluator per trial (no earlier trial's predictions to reuse)
    cold = [
        TrialEvaluator(split, predict_fn, score_predictions, search.ablation)(th)
        for th in settings_to_try
    ]
    # in sequence, as a search runs them: tweets whose instruction an earlier trial built are
    # not predicted again
    evaluator = TrialEvaluator(split, predict_fn, score_predictions, search.ablation)
    misses = [evaluator(th) for th in settings_to_try]
    hits = [evaluator(th) for th in settings_to_try]
    assert not any(r.cache_hit for r in misses) and all(r.cache_hit for r in hits)
    for a, b in zip(cold, misses, strict=True):  # reusing rows changes no score
        assert abs(a.metrics["jmasa_f1"] - b.metrics["jmasa_f1"]) < 1e-9, (a, b)
    cold_s = statistics.median(r.seconds for r in cold)
    cached_s = statistics.median(r.seconds for r in misses)
    hit_s = statistics.median(r.seconds for r in hits)
    _progress(
        f"cached trial: median {cached_s:.3f} s in sequence, {cold_s:.3f} s cold"
        f" (memo hit {hit_s:.4f} s)"
    )

    # -- full recompute of the threshold-dependent stages at the config's thresholds
    gather_interp = ImageInterpreter(settings, store)
    aligner_model, aligner_proc = load_trained(
        model["aligner"]["model_dir"], device=rt.device, cache=rt.model_cache
    )
    at = settings.aligner.train
    full_s, full_f1 = [], None
    for rep in range(args.repeats):
        with tempfile.TemporaryDirectory() as empty:
            interp = ImageInterpreter(
                settings,
                LocalStore(Path(empty)),
                generator=gather_interp.generator,
                vlm=gather_interp.vlm,
            )
            t0 = time.perf_counter()
            items = tweet_inputs(dev_tweets, images_dir, interp)  # filters at config_th
            aligned = align_regions(
                aligner_model,
                aligner_proc,
                items,
                batch_size=at.eval_batch_size,
                max_new_tokens=at.max_new_tokens,
            )
            examples, _ = jmasa_examples(items, aligned, ablation=search.ablation)
            metrics = score_predictions(predict_fn(examples, dev_tweets), dev_tweets)
            full_s.append(time.perf_counter() - t0)
            full_f1 = metrics["jmasa_f1"]
            _progress(f"full recompute {rep + 1}/{args.repeats}: {full_s[-1]:.1f} s")
    cached_f1 = misses[0].metrics["jmasa_f1"]
    if abs(full_f1 - cached_f1) > 1e-9:
        raise SystemExit(f"dev JMASA F1 differs: recompute {full_f1} vs cached {cached_f1}")

    # -- Optuna's own cost per trial: sampler + storage (sqlite WAL, heartbeats, claim lock)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/optuna.db"
        st = optuna.create_study(storage=open_storage(url), sampler=_sampler(search))
        n = 50
        t0 = time.perf_counter()
        run_worker(st, lambda trial: sum(vars(suggest(trial, search)).values()), n, storage_url=url)
        overhead_s = (time.perf_counter() - t0) / n

    full = statistics.median(full_s)
    print(
        json.dumps(
            {
                "dev_tweets": len(dev_tweets),
                "regions": len(split.owner),
                "cached_trial_s": round(cached_s, 4),
                "cached_trial_cold_s": round(cold_s, 4),
                "memo_hit_s": round(hit_s, 4),
                "predicted_tweets_per_trial": statistics.median(r.predicted for r in misses),
                "full_recompute_s": round(full, 2),
                "ratio": round(cached_s / full, 4),
                "ratio_cold": round(cold_s / full, 4),
                "dev_jmasa_f1_both": round(cached_f1, 4),
                "optuna_overhead_s": round(overhead_s, 4),
                "overhead_share": round(overhead_s / cached_s, 4),
                "sampler": search.sampler,
                "storage": "sqlite (WAL) with heartbeats and the claim lock",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
