"""Prefect flows ``aligner_training`` and ``jmasa_finetune``: data -> LoRA training -> evaluation
-> MLflow (params, per-step and per-epoch metrics, datasets, model) -> registry.

Both are thin: the data comes from the FGCA and preprocessing flows (content-versioned, reused
when unchanged), the training is :func:`iea.models.finetune.train`, the scoring
:mod:`iea.align.training` / :mod:`iea.jmasa`. A trained model is cached under a key of its data
version and every setting that affects it (``work/models/<stage>/<key>``), and its checkpoints
live there too: a rerun reuses it, a killed run resumes from the last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows import tracking
from flows.gpu import gpu_slot
from iea.config import ModelStageSettings, Settings, load_settings
from iea.keys import aligner_key, jmasa_key
from iea.models.finetune import FinetuneConfig, load_trained, save_trained
from iea.predict import NEEDS_REGIONS, WHOLE_IMAGE, write_stage

REGISTERED = {"aligner": "iea-aligner", "jmasa": "iea-jmasa"}
ALIGNER_DEV_SELECTION = 2
"""Version of the aligner's dev selection (in its model key): 2 = val positives and negatives
scored by exact accuracy, no test fallback (1: val positives only, test when no val)."""


def finetune_config(stage: ModelStageSettings, seed: int) -> FinetuneConfig:
    """The engine settings of a stage (``aligner`` / ``jmasa``) from the typed config;
    ``seed`` (``runtime.seed``) unless the stage's ``train.seed`` is set."""
    t, lo = stage.train, stage.lora
    seed = seed if t.seed is None else t.seed
    return FinetuneConfig(
        epochs=t.epochs,
        learning_rate=t.learning_rate,
        batch_size=t.batch_size,
        grad_accum=t.grad_accum,
        mode=t.finetune,
        lora_r=lo.r,
        lora_alpha=lo.alpha,
        lora_dropout=lo.dropout,
        target_modules=tuple(lo.target_modules),
        modules_to_save=tuple(lo.modules_to_save),
        gradient_checkpointing=t.gradient_checkpointing,
        group_by_length=t.group_by_length,
        split_by_length=t.split_by_length,
        target_logits=t.target_logits,
        cache_vision=t.cache_vision,
        max_tokens=t.max_tokens,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        checkpoint_every=t.checkpoint_every,
        eval_every=t.eval_every,
        patience=t.patience,
        seed=seed,
    )


class MlflowStepLogger:
    """The engine's ``log(metrics, step)`` callback, writing to the active MLflow run. Steps
    are buffered and written in one ``log_batch`` at each checkpoint (the
    engine's ``flush``), at dev metrics, and whenever ``max_buffer`` metrics wait: one store
    write per checkpoint instead of one per step (a per-step write was 5% of the demo
    aligner's training), and nothing before the newest checkpoint is unwritten when a run
    stops."""

    def __init__(self, every: int = 1, max_buffer: int = 900):
        self.every = max(1, every)
        self.max_buffer = max_buffer  # log_batch takes at most 1000 metrics
        self.buffer: list[Any] = []

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        dev = any(k.startswith("dev.") for k in metrics)
        if step % self.every == 0 or dev:
            now = int(time.time() * 1000)
            self.buffer += [
                Metric(k.replace(".", "/", 1), float(v), now, step) for k, v in metrics.items()
            ]
        if dev or len(self.buffer) >= self.max_buffer:
            self.flush()

    def __enter__(self) -> MlflowStepLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()  # a run that raised keeps the steps that led there

    def flush(self) -> None:
        """Write what waits (one ``log_batch``)."""
        if not self.buffer:
            return
        run = mlflow.active_run() or mlflow.start_run()  # as mlflow.log_metrics does
        mlflow.tracking.MlflowClient().log_batch(run.info.run_id, metrics=self.buffer)
        self.buffer = []


def training_pool(settings: Settings, stage: str) -> str:
    """The Prefect work pool a stage's training runs on (``<stage>.pool``)."""
    rt = settings.runtime
    return rt.gpu_pool if getattr(settings, stage).pool == "gpu" else rt.cpu_pool


def _load_model(settings: Settings, stage: str):
    from iea.models.refs import load_vlm

    rt = settings.runtime
    model, processor = load_vlm(
        getattr(settings, stage).model,
        device=rt.device,
        dtype=rt.dtype,
        trust_remote_code=rt.trust_remote_code,
        cache=rt.model_cache,
        seed=rt.seed,
    )
    return model, processor


def registered_version(stage: str, settings: Settings, key: str | None) -> dict | None:
    """The registered version of ``stage``'s model whose ``model.key`` tag is ``key``, as
    :func:`_register` returns it (``reused`` True), or None."""
    name = getattr(settings, stage).register_as or REGISTERED[stage]
    if not key:
        return None
    for mv in mlflow.MlflowClient().search_model_versions(f"name='{name}'"):
        if mv.tags.get("model.key") == key:
            uri = f"models:/{name}/{mv.version}"
            return {"name": name, "version": int(mv.version), "uri": uri, "reused": True}
    return None


def _register(
    stage: str,
    settings: Settings,
    model_dir: Path,
    tags: dict[str, str],
    run,
    aligner_dir: str | None = None,
    example: dict[str, str] | None = None,
) -> Any:
    """Log ``model_dir`` (and the aligner it was trained with) as a pyfunc model of the run
    and register a new version with ``tags``. ``example`` (one ``{"image", "text"}`` row, the
    image inline as a data URI) is logged as the version's input example; MLflow answers it
    once through the logged model while logging (its serving-input check)."""
    import pandas as pd

    from flows.pyfunc import SIGNATURE, IeaModel, package_requirements

    name = getattr(settings, stage).register_as or REGISTERED[stage]
    client = mlflow.MlflowClient()
    found = registered_version(stage, settings, tags.get("model.key"))
    if found is not None:  # a reused model: no duplicate version
        mlflow.set_tag("registered.reused", f"{name}/{found['version']}")
        return found
    info = mlflow.pyfunc.log_model(
        name=stage,
        python_model=IeaModel(),
        artifacts={"model": str(model_dir), **({"aligner": aligner_dir} if aligner_dir else {})},
        registered_model_name=name,
        signature=SIGNATURE,
        pip_requirements=package_requirements(),
        input_example=pd.DataFrame([example]) if example else None,
    )
    version = info.registered_model_version
    for k, v in tags.items():
        client.set_model_version_tag(name, str(version), k, str(v))
    client.set_registered_model_alias(name, "challenger", str(version))  # flows/promotion.py
    uri = f"models:/{name}/{version}"
    return {"name": name, "version": int(version), "uri": uri, "reused": False}


@contextlib.contextmanager
def _timed(seconds: dict[str, float], stage: str):
    """Add the block's wall time to ``seconds[stage]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start


def _example(tweets: list, images_dir: Path | None) -> dict[str, str] | None:
    """The registered version's input example: the first tweet, its image inline (a data URI:
    the example answers on a machine that has none of the data); None without images."""
    from iea.predict import image_data_uri

    if not tweets or images_dir is None:
        return None
    t = tweets[0]
    return {"image": image_data_uri(Path(images_dir) / t.image_id), "text": " ".join(t.tokens)}


def model_prefix(stage: str, key: str) -> str:
    """Where a trained model lives in the store: ``models/<stage>/<key>/`` holds ``model/``
    (the folder :func:`iea.models.finetune.save_trained` wrote) and ``result.json`` (its
    training report, put last: its presence marks the model complete)."""
    return f"models/{stage}/{key}"


def model_work(settings: Settings, stage: str, key: str) -> Path:
    """The local cache folder of ``stage``'s model of ``key``: ``model/``, ``result.json`` and
    the training's checkpoints (under ``data.work_dir``, one of the declared caches)."""
    return Path(settings.data.work_dir) / "models" / stage / key


def _restore(work: Path, settings: Settings, stage: str) -> bool:
    """Bring a model trained elsewhere (another worker, a wiped disk) from the store into the
    local cache ``work``; False when the store has no complete model under its key."""
    from iea.store import get_tree, open_store

    store = open_store(settings.store)
    prefix = model_prefix(stage, work.name)
    if not store.exists(f"{prefix}/result.json"):
        return False
    get_run_logger().info(
        "%s %s: restoring the trained model from %s", stage, work.name, store.uri(prefix)
    )
    staging = work.parent / f".{work.name}-{uuid.uuid4().hex[:12]}"
    get_tree(store, prefix, staging)
    final = work / "model"
    if final.exists():  # a save that stopped half-way (no iea_model.json): not a model
        shutil.rmtree(final)
    work.mkdir(parents=True, exist_ok=True)
    os.replace(staging / "model", final)
    os.replace(staging / "result.json", work / "result.json")
    shutil.rmtree(staging, ignore_errors=True)
    return True


def _reuse(work: Path, settings: Settings, stage: str):
    """``(model, processor, result)`` of a model already trained under its key, from the local
    cache ``work`` or else from the store (:func:`_restore`), or None."""
    final = work / "model"
    if not (final / "iea_model.json").is_file() and not _restore(work, settings, stage):
        return None
    get_run_logger().info("%s %s already trained: reusing %s", stage, work.name, final)
    rt = settings.runtime
    model, processor = load_trained(final, device=rt.device, cache=rt.model_cache)
    return model, processor, {**json.loads((work / "result.json").read_text()), "reused": True}


def _finish(
    model, processor, work: Path, settings: Settings, stage: str, res, n_examples: int, **extra
) -> dict:
    """Save a freshly trained model (weights, stage file, resolved settings) under
    ``work/model`` and its training report as ``work/result.json``, and put both in the store
    under :func:`model_prefix` (the local folder is a cache of it); returns the report."""
    from iea.store import open_store, put_tree

    final = work / "model"
    base = getattr(settings, stage).model
    rt = settings.runtime
    save_trained(model, processor, final, base_ref=base, seed=rt.seed, cache=rt.model_cache)
    write_stage(final, stage, **({"ablation": extra["ablation"]} if "ablation" in extra else {}))
    (final / "config.json").write_text(json.dumps(settings.public_dump()))  # no credentials
    result = {
        "steps": res.steps,
        "best_epoch": res.best_epoch,
        "stopped_early": res.stopped_early,  # train.patience: epochs without a better dev metric
        "history": res.history,
        "train_seconds": res.seconds,
        "train_examples": n_examples,
        "train_tokens": res.train_tokens,
        "resumed_from": res.resumed_from,
        "train_samples_per_s": res.train_examples_seen / max(res.seconds, 1e-9),
        "train_rejected": res.rejected,  # over train.max_tokens: listed in rejects.jsonl
        **extra,
    }
    (work / "result.json").write_text(json.dumps(result, indent=2))
    store = open_store(settings.store)
    prefix = model_prefix(stage, work.name)
    put_tree(store, f"{prefix}/model", final)
    if (work / "rejects.jsonl").is_file():
        store.put_file(f"{prefix}/rejects.jsonl", work / "rejects.jsonl")
    store.put_file(f"{prefix}/result.json", work / "result.json")  # last: marks it complete
    return {**result, "reused": False}


# ----------------------------------------------------------------------------- aligner


@task(cache_policy=NONE)
def train_aligner_task(settings: Settings, fgca: dict, root: Path) -> dict:
    """Train (or reuse) the aligner on FGCA train rows with best-on-dev selection on val
    (positives and seeded negatives, :func:`iea.align.training.dev_evaluator`), and score test.
    Without a val split it trains without selection (the last epoch is kept): test never
    selects."""
    from iea.align.records import FgcaRecord
    from iea.align.training import (
        DEV_SELECT,
        PascalImages,
        dev_evaluator,
        evaluate_aligner,
        fgca_examples,
    )
    from iea.models.finetune import prepare_model, train

    logger = get_run_logger()
    out = Path(fgca["out"])
    records = {
        s: [
            FgcaRecord.from_json(json.loads(x))
            for x in (out / f"{s}.jsonl").read_text().splitlines()
        ]
        for s in ("train", "val", "test")
    }
    images = PascalImages(root)
    stage = settings.aligner
    seed = settings.runtime.seed
    cfg = finetune_config(stage, seed)
    # the dev selection is wired here, in flows/: its number stands for that code in the key
    key = aligner_key(settings, fgca["version"], {"dev_select": ALIGNER_DEV_SELECTION})
    work = model_work(settings, "aligner", key)
    final = work / "model"
    reused = _reuse(work, settings, "aligner")
    if reused is not None:
        model, processor, result = reused
    else:
        examples = fgca_examples(records["train"], images, negatives=stage.negatives, seed=seed)
        if stage.train.max_train_examples:
            examples = examples[: stage.train.max_train_examples]
        logger.info(
            "aligner: %d training examples (%d FGCA rows, negatives %.2f)",
            len(examples),
            len(records["train"]),
            stage.negatives,
        )
        model, processor = _load_model(settings, "aligner")
        model = prepare_model(model, cfg)
        t = stage.train
        evaluate = dev_evaluator(
            processor,
            records,
            images,
            negatives=stage.negatives,
            seed=seed,
            batch_size=t.eval_batch_size,
        )
        if evaluate is None:
            logger.warning(
                "aligner: FGCA %s has no val rows: training without dev selection, keeping "
                "the last epoch (the test split never selects a model)",
                fgca["version"],
            )
        with gpu_slot(stage.pool, "aligner training"), MlflowStepLogger() as step_log:
            model, res = train(
                model,
                processor,
                examples,
                cfg,
                out_dir=work,
                log=step_log,
                evaluate=evaluate,
                select=DEV_SELECT if evaluate else None,
                progress="train aligner",
            )
        result = _finish(
            model,
            processor,
            work,
            settings,
            "aligner",
            res,
            len(examples),
            dev_select=DEV_SELECT if evaluate else None,
            best_dev_metric=res.best_metric,
        )
    test = evaluate_aligner(
        model,
        processor,
        records["test"],
        images,
        negatives=stage.negatives,
        seed=seed,
        batch_size=stage.train.eval_batch_size,
    )
    return {
        **result,
        "key": key,
        "model_dir": str(final),
        "test_span_acc": test["span_acc"],
        "test_exact_acc": test["exact_acc"],
        "test_false_alignment_rate": test["false_alignment_rate"],
        "test_valid": test["valid"],
    }


def _finished_aligner(settings: Settings, key: str, register: bool) -> dict | None:
    """What :func:`aligner_training` returns, from the FINISHED run that trained and scored
    the aligner of ``key`` (and its registered version, when ``register``), when that run and
    the model (local, or restored from the store) exist; else None. A rerun, or a flow
    retried after a later stage failed, opens no second run and scores nothing again."""
    prior = tracking.finished_run(settings, "aligner", key)
    if prior is None:
        return None
    registered = registered_version("aligner", settings, key) if register else None
    if register and registered is None:
        return None
    work = model_work(settings, "aligner", key)
    final = work / "model"
    if not (final / "iea_model.json").is_file() and not _restore(work, settings, "aligner"):
        return None
    get_run_logger().info(
        "aligner %s trained and scored by run %s: reusing %s", key, prior.info.run_id, final
    )
    m = prior.data.metrics
    result = json.loads((work / "result.json").read_text())
    return {
        **{k: v for k, v in result.items() if k != "history"},
        "reused": True,
        "key": key,
        "model_dir": str(final),
        "test_span_acc": m["test/span_acc"],
        "test_exact_acc": m["test/exact_acc"],
        "test_false_alignment_rate": m["test/false_alignment_rate"],
        "test_valid": m["test/valid"],
        "run_id": prior.info.run_id,
        "registered": registered,
    }


@flow(name="aligner_training", log_prints=True)
def aligner_training(
    config: str | list[str] | None = None,
    overrides: list[str] | None = None,
    register: bool = True,
) -> dict:
    """Build (or reuse) FGCA, LoRA-train the aligner on it, score span accuracy, register."""
    from flows.fgca import fgca_generation, prepare_pascal

    settings = load_settings(config, overrides or [])
    fgca = fgca_generation(config, overrides)  # published under its version
    root = prepare_pascal(settings)
    key = aligner_key(settings, fgca["version"], {"dev_select": ALIGNER_DEV_SELECTION})
    done = _finished_aligner(settings, key, register)
    if done is not None:
        return {**done, "fgca_version": fgca["version"], "fgca_reused": fgca["reused"]}
    with tracking.start_run(
        settings,
        "aligner_training",
        tags={
            "stage": "aligner",
            "work_pool": training_pool(settings, "aligner"),
            tracking.STAGE_KEY: key,
        },
        system_metrics=True,
    ) as run:
        mlflow.set_tags({"dataset.fgca.version": fgca["version"]})
        tracking.log_input(_dataset("fgca", fgca["version"], fgca["store_uri"]), context="train")
        result = train_aligner_task(settings, fgca, root)
        _log_history(result["history"])
        mlflow.log_metrics(
            {
                "test/span_acc": result["test_span_acc"],
                "test/exact_acc": result["test_exact_acc"],
                "test/false_alignment_rate": result["test_false_alignment_rate"],
                "test/valid": result["test_valid"],
                "train/seconds": result["train_seconds"],
                "train/stopped_early": float(result.get("stopped_early", False)),
            }
        )
        registered = None
        if register:
            registered = _register(
                "aligner",
                settings,
                Path(result["model_dir"]),
                {
                    "fgca.version": fgca["version"],
                    "test.span_acc": f"{result['test_span_acc']:.4f}",
                    "model.key": result["key"],
                },
                run,
            )
        run_id = run.info.run_id
    return {
        **{k: v for k, v in result.items() if k != "history"},
        "run_id": run_id,
        "registered": registered,
        "fgca_version": fgca["version"],
        "fgca_reused": fgca["reused"],
    }


def _log_history(history: list[dict]) -> None:
    """One ``epoch/<metric>`` point per epoch row of the engine's history."""
    for row in history:
        mlflow.log_metrics(
            {f"epoch/{k}": float(v) for k, v in row.items() if isinstance(v, int | float)},
            step=int(row["epoch"]),
        )


def _dataset(name: str, version: str, uri: str):
    """An MLflow dataset input that names a stored dataset version (its digest)."""
    import warnings

    import pandas as pd

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
        return mlflow.data.from_pandas(
            pd.DataFrame({"version": [version]}), source=uri, name=name, digest=version
        )


# ----------------------------------------------------------------------------- JMASA


@task(cache_policy=NONE)
def tweet_inputs_task(
    settings: Settings,
    tweets: dict[str, list],
    images_dir: Path,
    regions: bool,
    whole_image: bool = False,
) -> dict[str, Sequence]:
    """Per split, per tweet: the whole image and, when ``regions``, its kept regions
    (interpreter, cached); with ``whole_image`` the whole image is the one region
    (``no_segmentation``). One interpreter serves every split, so SAM and the interpreting VLM
    load once, and the splits' inputs, which keep it to read their crops again, share one copy
    of each rather than one per split. Lazy: each tweet's image and crops are read again when
    used, so the split's images are not all held (:class:`iea.jmasa.LazyTweetInputs`)."""
    from iea.jmasa import tweet_inputs
    from iea.store import open_store
    from iea.vision.interpreter import ImageInterpreter

    interpreter = ImageInterpreter(settings, open_store(settings.store)) if regions else None
    with gpu_slot(settings.interpreter.pool if regions else "cpu", "interpretation"):
        return {
            s: tweet_inputs(part, images_dir, interpreter, whole_image=whole_image, lazy=True)
            for s, part in tweets.items()
        }


@task(cache_policy=NONE)
def align_task(settings: Settings, aligner: dict, inputs: Sequence) -> list:
    """Every kept region -> a phrase span, cached per region and aligner version."""
    from iea.jmasa import align_regions
    from iea.store import open_store

    model, processor = load_trained(
        aligner["model_dir"], device=settings.runtime.device, cache=settings.runtime.model_cache
    )
    t = settings.aligner.train
    return align_regions(
        model,
        processor,
        inputs,
        batch_size=t.eval_batch_size,
        max_new_tokens=t.max_new_tokens,
        store=open_store(settings.store),
        aligner_key=aligner["key"],
    )


@task(cache_policy=NONE)
def train_jmasa_task(
    settings: Settings, examples: dict, tweets: dict, key: str, ablation: str
) -> dict:
    from iea.jmasa import predict, score_predictions
    from iea.models.finetune import PromptCache, prepare_model, train

    stage = settings.jmasa
    t = stage.train
    cfg = finetune_config(stage, settings.runtime.seed)
    work = model_work(settings, "jmasa", key)
    final = work / "model"
    train_examples = (
        examples["train"][: t.max_train_examples] if t.max_train_examples else examples["train"]
    )

    prompts = PromptCache()  # dev is scored every epoch: encode its prompts once

    def evaluate(m, split="dev"):
        rows = predict(
            m,
            processor,
            examples[split],
            tweets[split],
            max_new_tokens=t.max_new_tokens,
            batch_size=t.eval_batch_size,
            cache=prompts,
        )
        return score_predictions(rows, tweets[split]), rows

    reused = _reuse(work, settings, "jmasa")
    if reused is not None:
        model, processor, result = reused
    else:
        with gpu_slot(stage.pool, "jmasa training"), MlflowStepLogger() as step_log:
            model, processor = _load_model(settings, "jmasa")
            before, _ = evaluate(model, "test")  # the untrained model: a floor to beat
            model = prepare_model(model, cfg)
            model, res = train(
                model,
                processor,
                train_examples,
                cfg,
                out_dir=work,
                log=step_log,
                evaluate=lambda m: evaluate(m)[0],
                select="jmasa_f1",
                progress="train jmasa",
            )
        result = _finish(
            model,
            processor,
            work,
            settings,
            "jmasa",
            res,
            len(train_examples),
            best_dev_jmasa_f1=res.best_metric,
            untrained_test_jmasa_f1=before["jmasa_f1"],
            ablation=ablation,
        )
    # The kept weights on dev: with best-on-dev selection, the best epoch's dev score.
    dev, _ = evaluate(model, "dev")
    test, rows = evaluate(model, "test")
    (work / "test_predictions.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    )
    return {
        **result,
        "key": key,
        "model_dir": str(final),
        "dev": dev,
        "test": test,
        "predictions": str(work / "test_predictions.jsonl"),
    }


@flow(name="jmasa_finetune", log_prints=True)
def jmasa_finetune(
    config: str | list[str] | None = None,
    overrides: list[str] | None = None,
    ablation: str = "full",
    register: bool = True,
) -> dict:
    """Preprocess (or reuse) the tweets, interpret and align their regions, build the NMI,
    LoRA-tune the JMASA model with best-on-dev selection, score test, log and register."""
    from flows.preprocess import prepare_source, split_tweets, twitter_preprocessing
    from iea.data.records import SPLITS
    from iea.jmasa import alignment_quality, jmasa_examples
    from iea.nmi import ABLATIONS

    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}: one of {', '.join(ABLATIONS)}")
    settings = load_settings(config, overrides or [])
    if settings.data.source == "files" and settings.data.images is None:
        raise ValueError(
            "data.images is required: JMASA needs the tweets' images (set data.images=DIR, "
            "the folder holding each tweet's image_id)"
        )
    logger = get_run_logger()
    seconds: dict[str, float] = {}  # wall time per stage, as the retrain flow prints it
    with _timed(seconds, "preprocess"):
        data = twitter_preprocessing(config, overrides)
    _, images_dir = prepare_source(settings)
    tweets = {s: split_tweets(settings.store, data["store_prefix"], s) for s in SPLITS}
    regions = ablation in NEEDS_REGIONS
    with _timed(seconds, "fgca+aligner"):
        aligner = aligner_training(config, overrides) if regions else None
    whole = ablation in WHOLE_IMAGE
    with _timed(seconds, "interpret"):
        inputs = tweet_inputs_task(
            settings, {s: tweets[s] for s in SPLITS}, images_dir, regions, whole
        )
    with _timed(seconds, "align"):
        aligned = {
            s: align_task(settings, aligner, inputs[s]) if regions else [[] for _ in inputs[s]]
            for s in SPLITS
        }
    examples = {  # built when read: the engine streams them
        s: jmasa_examples(inputs[s], aligned[s], ablation=ablation, lazy=True)[0] for s in SPLITS
    }
    quality = {s: alignment_quality(tweets[s], aligned[s]) for s in SPLITS}
    precision = {s: q[0] for s, q in quality.items()}
    cov = {s: q[1] for s, q in quality.items()}
    key = jmasa_key(settings, data["version"], ablation, aligner["key"] if aligner else None)
    with tracking.start_run(
        settings,
        f"jmasa_finetune[{ablation}]",
        tags={
            "stage": "jmasa",
            "ablation": ablation,
            "work_pool": training_pool(settings, "jmasa"),
            "model.key": key,
        },
        system_metrics=True,
    ) as run:
        tracking.log_input(
            _dataset(f"twitter/{settings.data.name}", data["version"], data["store_uri"]),
            context="train",
        )
        if aligner:
            mlflow.set_tags(
                {"aligner.key": aligner["key"], "dataset.fgca.version": aligner["fgca_version"]}
            )
        mlflow.log_metrics({f"coverage/{s}": v for s, v in cov.items()})
        mlflow.log_metrics({f"alignment_precision/{s}": v for s, v in precision.items()})
        with _timed(seconds, "train+evaluate"):
            result = train_jmasa_task(settings, examples, tweets, key, ablation)
        _log_history(result["history"])
        mlflow.log_metrics({f"test/{k}": v for k, v in result["test"].items()})
        mlflow.log_metrics({f"selected/dev_{k}": v for k, v in result["dev"].items()})
        mlflow.log_metrics(
            {
                "untrained/test_jmasa_f1": result["untrained_test_jmasa_f1"],
                "train/seconds": result["train_seconds"],
                "train/samples_per_s": result["train_samples_per_s"],
                "train/rejected": result.get("train_rejected", 0),
                "train/stopped_early": float(result.get("stopped_early", False)),
            }
        )
        mlflow.log_artifact(result["predictions"], "predictions")
        registered = None
        if register:
            model_dir = Path(result["model_dir"])
            with _timed(seconds, "register"):
                registered = _register(
                    "jmasa",
                    settings,
                    model_dir,
                    {
                        "ablation": ablation,
                        "dataset.version": data["version"],
                        "dataset.prefix": data["store_prefix"],
                        "test.jmasa_f1": f"{result['test']['jmasa_f1']:.4f}",
                        "model.key": key,
                        **(
                            {"aligner.key": aligner["key"], "fgca.version": aligner["fgca_version"]}
                            if aligner
                            else {}
                        ),
                    },
                    run,
                    aligner_dir=aligner["model_dir"] if aligner else None,
                    example=_example(tweets["dev"] or tweets["test"], images_dir),
                )
        run_id = run.info.run_id
    logger.info(
        "JMASA test F1 %.3f (untrained %.3f)",
        result["test"]["jmasa_f1"],
        result["untrained_test_jmasa_f1"],
    )
    return {
        "ablation": ablation,
        "run_id": run_id,
        "registered": registered,
        "key": key,
        "dev": result["dev"],
        "test": result["test"],
        "untrained_test_jmasa_f1": result["untrained_test_jmasa_f1"],
        "best_epoch": result["best_epoch"],
        "coverage": cov,
        "alignment_precision": precision,
        "model_dir": result["model_dir"],
        "dataset_version": data["version"],
        "aligner": aligner
        and {k: aligner[k] for k in ("key", "test_span_acc", "model_dir", "reused", "fgca_reused")},
        "dataset_reused": data["reused"],
        "predictions": result["predictions"],
        "reused": result["reused"],
        "train_seconds": result["train_seconds"],
        "seconds": seconds,
    }
