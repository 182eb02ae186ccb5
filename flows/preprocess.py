"""Prefect flow ``twitter_preprocessing``: convert -> validate (GX) -> store (versioned) -> MLflow.

The converted dataset is stored under ``datasets/twitter/<name>/<version>/`` where ``version`` is
the content hash of the canonical split files; a rerun on unchanged input finds that version
and reuses it instead of writing a new one. Each run converts into a staging folder of its own
(``data.work_dir/staging/<name>-<run id>``), removed once the version is stored (kept, with the
files the validation named, when it fails); the store's writes are atomic and the manifest,
written last, marks a version complete.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from pathlib import Path

import mlflow
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE

from flows import tracking
from flows.validation import ValidationFailed, validate_tweets
from iea.config import Settings, StoreSettings, load_settings
from iea.data import synthetic
from iea.data.convert import convert, load_split
from iea.data.records import SPLITS, Tweet
from iea.store import ArtifactStore, get_json, open_store

DATASET_FILES = (
    *[f"{s}.jsonl" for s in SPLITS],
    "rejects.jsonl",
    "validation.json",  # the GX results: the promotion's data gate reads them
    "manifest.json",
)


def split_tweets(store: StoreSettings, prefix: str, split: str) -> list[Tweet]:
    """The tweets of ``split`` that :func:`twitter_preprocessing` stored at the dataset
    ``prefix`` (``<prefix>/<split>.jsonl`` in ``store``)."""
    lines = open_store(store).get(f"{prefix}/{split}.jsonl").decode()
    return [Tweet.from_json(json.loads(x)) for x in lines.splitlines() if x.strip()]


@task(cache_policy=NONE)
def prepare_source(settings: Settings) -> tuple[Path, Path | None]:
    """The annotation folder and image folder to convert (generating synthetic data if asked)."""
    data = settings.data
    if data.source == "files":
        return Path(data.src), (Path(data.images) if data.images else None)
    syn = data.synthetic
    world = synthetic.WorldSettings(
        syn.text_polarity_rate, dict(syn.distractors), syn.mention_order_rate
    )
    out = (
        Path(data.work_dir)
        / "synthetic"
        / f"{data.format}-s{syn.seed}-{syn.n_train}-{syn.n_dev}-{syn.n_test}-{world.digest()}"
    )
    done = out / ".complete"
    if not done.exists():
        # generated into a folder of this run, then published whole by one rename: a run
        # never reads another run's half-written files
        get_run_logger().info("generating the synthetic Twitter dataset in %s", out)
        staging = out.parent / f".{out.name}-{uuid.uuid4().hex[:12]}"
        synthetic.generate(
            staging,
            n_train=syn.n_train,
            n_dev=syn.n_dev,
            n_test=syn.n_test,
            seed=syn.seed,
            fmt=data.format,
            image_size=syn.image_size,
            world=world,
        )
        (staging / ".complete").touch()
        if out.exists() and not done.exists():  # an earlier run that stopped half-way
            shutil.rmtree(out, ignore_errors=True)
        try:
            os.replace(staging, out)
        except OSError:  # another run published it first: the same content
            shutil.rmtree(staging, ignore_errors=True)
    return out / "annotations", out / "images"


@task(cache_policy=NONE)
def convert_dataset(settings: Settings, src: Path, images: Path | None) -> tuple[Path, dict]:
    """Convert into a staging folder; returns it and the manifest."""
    data = settings.data
    # one folder per run: two runs at once (same dataset name) never write into each other's
    staging = Path(data.work_dir) / "staging" / f"{data.name}-{uuid.uuid4().hex[:12]}"
    logger = get_run_logger()
    manifest = convert(
        data.format,
        src,
        staging,
        images=images,
        require_images=data.require_images,
        skip_bad=data.skip_bad,
        log=logger.info,
    )
    return staging, manifest


@task(cache_policy=NONE)
def validate_dataset(staging: Path, gx_root: Path) -> dict:
    """Run the ``twitter_canonical`` GX suite on every split; a failure stops the flow."""
    results, failed = {}, []
    for split in SPLITS:
        report = validate_tweets(load_split(staging / f"{split}.jsonl"), gx_root)
        results[split] = report.result
        if not report.success:
            failed.append((split, report))
    (staging / "validation.json").write_text(json.dumps(results, indent=2, default=str))
    if failed:
        raise ValidationFailed(failed[0][1], where=f"{staging}/{failed[0][0]}.jsonl")
    return results


@task(cache_policy=NONE)
def store_dataset(store: ArtifactStore, staging: Path, name: str, version: str) -> tuple[str, bool]:
    """Put the dataset under its content-addressed prefix unless that version is already there."""
    prefix = f"datasets/twitter/{name}/{version}"
    if store.exists(f"{prefix}/manifest.json"):
        return prefix, True
    for fname in DATASET_FILES:  # the manifest last: its presence marks a complete version
        store.put_file(f"{prefix}/{fname}", staging / fname)
    return prefix, False


def _log_run(
    settings: Settings,
    version: str,
    reused: bool,
    store: ArtifactStore,
    prefix: str,
    staging: Path,
    counts: dict,
    manifest: dict,
    validation: dict,
    stored: dict,
    stage_key: str,
) -> tuple[str, str]:
    """Log the dataset version's MLflow run (counts, GX results, the dataset input); returns
    ``(run_id, experiment_id)``."""
    with tracking.start_run(
        settings,
        "twitter_preprocessing",
        tags={"stage": "preprocess", tracking.STAGE_KEY: stage_key},
    ) as run:
        for split, stats in counts.items():
            mlflow.log_metrics({f"{split}.{k}": v for k, v in stats.items()})
        mlflow.log_metric("rejects", manifest["rejects"]["count"])
        mlflow.set_tags(
            {
                "dataset.name": settings.data.name,
                "dataset.version": version,
                "dataset.reused": str(reused).lower(),
                "dataset.uri": store.uri(prefix),
            }
        )
        frames = [
            pd.DataFrame([t.to_json() for t in load_split(staging / f"{s}.jsonl")]).assign(split=s)
            for s in SPLITS
        ]
        with warnings.catch_warnings():
            # MLflow 3.17 registers LocalArtifactDatasetSource twice and warns that a file://
            # source is ambiguous between the two identical classes.
            warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
            dataset = mlflow.data.from_pandas(
                pd.concat(frames, ignore_index=True).astype({"tokens": str, "aspects": str}),
                source=store.uri(prefix),
                name=f"twitter/{settings.data.name}",
                digest=version,
            )
        tracking.log_input(dataset, context="preprocessed")
        mlflow.log_dict(validation, "validation/twitter_canonical.json")
        mlflow.log_dict(stored, "manifest.json")
    return run.info.run_id, run.info.experiment_id


@flow(name="twitter_preprocessing", log_prints=True)
def twitter_preprocessing(
    config: str | list[str] | None = None, overrides: list[str] | None = None
) -> dict:
    """Convert, validate, version and track a Twitter dataset.

    Returns:
        ``{"version", "reused", "store_prefix", "store_uri", "run_id", "tracking_uri", "counts"}``.
    """
    settings = load_settings(config, overrides or [])
    logger = get_run_logger()
    src, images = prepare_source(settings)
    staging, manifest = convert_dataset(settings, src, images)
    gx_root = Path(settings.data.work_dir) / "gx"
    validation = validate_dataset(staging, gx_root)
    store = open_store(settings.store)
    version = manifest["version"]
    prefix, reused = store_dataset(store, staging, settings.data.name, version)
    stored = get_json(store, f"{prefix}/manifest.json")
    logger.info(
        "dataset %s version %s %s", settings.data.name, version, "reused" if reused else "stored"
    )

    counts = manifest["counts"]
    stage_key = f"{settings.data.name}/{version}"
    prior = tracking.finished_run(settings, "preprocess", stage_key) if reused else None
    if prior is not None:  # this version's run exists: one run per dataset version
        logger.info("dataset version %s was logged by run %s", version, prior.info.run_id)
        run_id, experiment_id = prior.info.run_id, prior.info.experiment_id
    else:
        run_id, experiment_id = _log_run(
            settings,
            version,
            reused,
            store,
            prefix,
            staging,
            counts,
            manifest,
            validation,
            stored,
            stage_key,
        )
    shutil.rmtree(staging, ignore_errors=True)  # stored: the store holds every file now
    create_table_artifact(
        key="twitter-counts",
        table=[{"split": s, **c} for s, c in counts.items()],
        description=f"{settings.data.name} version {version} ({'reused' if reused else 'new'})",
    )
    return {
        "version": version,
        "reused": reused,
        "store_prefix": prefix,
        "store_uri": store.uri(prefix),
        "run_id": run_id,
        "tracking_uri": mlflow.get_tracking_uri(),
        "experiment_id": experiment_id,
        "counts": counts,
    }
