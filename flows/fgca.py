"""Prefect flow ``fgca_generation``: PASCAL-Context -> regions -> E -> LLM text -> spans -> GX
gate -> split -> versioned store -> MLflow.

A run writes its files into a staging folder of its own (``fgca.work_dir/runs/<id>``) and
publishes it whole as ``fgca.work_dir/versions/<version>`` (one rename; a failed run leaves its
staging folder, quarantine and all, for inspection). Work is done in batches of
``fgca.batch_size`` images, each image's outcome cached by content
(``iea.align.build``), so a rerun after a crash continues where it stopped. Nothing is dropped
silently: images that fail (unreadable, phrases missing after ``max_attempts`` texts, a warning
check) and rows that fail a check go to ``quarantine.jsonl`` with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import mlflow
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows import tracking
from flows.validation import ValidationFailed, validate_fgca
from iea.align.build import FgcaBuilder, ImageOutcome
from iea.align.fgca import (
    dataset_files,
    drop_failed_images,
    failed_rows,
    quarantine_rows,
    split_records,
    synthesis_gate,
    table1_stats,
)
from iea.align.records import FGCA_SPLITS
from iea.config import Settings, load_settings
from iea.store import open_store

_BUILDERS: dict[str, FgcaBuilder] = {}


def _builder(settings: Settings) -> FgcaBuilder:
    key = settings.model_dump_json()
    if key not in _BUILDERS:  # one per settings per process: models stay loaded
        _BUILDERS[key] = FgcaBuilder(settings, open_store(settings.store))
    return _BUILDERS[key]


@task(cache_policy=NONE)
def prepare_pascal(settings: Settings) -> Path:
    """The PASCAL-Context root (generating the synthetic one first when configured)."""
    f = settings.fgca
    if f.source == "files":
        return Path(f.root)
    from iea.data.pascal_context import generate_pascal_context
    from iea.data.world import WORLD_VERSION

    out = (
        Path(f.work_dir)
        / f"pascal-synthetic-s{f.synthetic_seed}-n{f.synthetic_images}-{WORLD_VERSION}"
    )
    if not (out / ".complete").exists():
        # generated into a folder of this run and published whole (see :func:`publish`)
        get_run_logger().info("generating a synthetic PASCAL-Context in %s", out)
        staging = out.parent / f".{out.name}-{uuid.uuid4().hex[:12]}"
        generate_pascal_context(staging, n_images=f.synthetic_images, seed=f.synthetic_seed)
        (staging / ".complete").touch()
        if out.exists() and not (out / ".complete").exists():  # a run that stopped half-way
            shutil.rmtree(out, ignore_errors=True)
        publish(staging, out)
    return out


@task(cache_policy=NONE)
def build_batch(
    settings: Settings, samples: list, class_names: dict[int, str]
) -> list[ImageOutcome]:
    return _builder(settings).process(samples, class_names)


@flow(name="fgca_generation", log_prints=True)
def fgca_generation(
    config: str | list[str] | None = None,
    overrides: list[str] | None = None,
    out: str | None = None,
) -> dict:
    """Build, validate, split, store and track the FGCA dataset.

    Raises:
        iea.align.fgca.FgcaGateFailed: more than ``fgca.max_quarantine_fraction`` of the
            images quarantined.
        ValidationFailed: a critical GX check failed (rows listed, quarantine written).
    """
    from iea.data.pascal_context import Quarantined, read_dataset, read_labels, read_subset

    settings = load_settings(config, overrides or [])
    f = settings.fgca
    logger = get_run_logger()
    store = open_store(settings.store)
    # A run of its own writes into its own staging folder and publishes it whole, under the
    # version, once it is complete: two runs at once never share a folder.
    out_dir = Path(out) if out else Path(f.work_dir) / "runs" / uuid.uuid4().hex[:12]
    out_dir.mkdir(parents=True, exist_ok=True)

    root = prepare_pascal(settings)
    labels = read_labels(Path(root) / "labels.txt")
    class_names = labels if f.subset == "all" else read_subset(Path(root), labels)
    samples, outcomes = [], []
    for item in read_dataset(Path(root), subset=f.subset):
        if isinstance(item, Quarantined):
            outcomes.append(
                ImageOutcome(
                    item.image_id,
                    reason=f"unreadable sample ({item.problem})",
                    detail={"error": item.reason},
                )
            )
        else:
            samples.append(item)
    logger.info("%d images readable, %d quarantined while reading", len(samples), len(outcomes))
    done = 0
    for start in range(0, len(samples), f.batch_size):
        batch = build_batch(settings, samples[start : start + f.batch_size], class_names)
        outcomes.extend(batch)
        done += len(batch)
        cached = sum(o.cached for o in batch)
        logger.info("images %d/%d done (%d of this batch from cache)", done, len(samples), cached)

    gate = synthesis_gate(outcomes, len(samples), f.max_quarantine_fraction)
    stats = gate.stats
    if not gate.ok:
        _write(out_dir / "quarantine.jsonl", quarantine_rows(outcomes, []))
        (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        raise gate.failure(str(out_dir / "quarantine.jsonl"))

    sizes = {"train": f.n_train, "val": f.n_val, "test": f.n_test}
    records = split_records(gate.good, sizes, settings.runtime.seed)
    report, frame = validate_fgca(records, Path(f.work_dir) / "gx", where="fgca")
    failed = failed_rows(report.failures, list(frame["row"]) if len(frame) else [], records)
    critical = [x for x in report.failures if x["severity"] == "critical"]
    if critical:
        _write(out_dir / "quarantine.jsonl", quarantine_rows(outcomes, failed))
        (out_dir / "validation.json").write_text(json.dumps(report.result, indent=2, default=str))
        raise ValidationFailed(report, where=str(out_dir))
    records, dropped_images = drop_failed_images(records, failed)  # warning checks
    stats.update({"table1": table1_stats(records), "warning_dropped_images": len(dropped_images)})

    files, version = dataset_files(records)
    stats["version"] = version
    for split, text in files.items():
        (out_dir / f"{split}.jsonl").write_text(text)
    _write(out_dir / "quarantine.jsonl", quarantine_rows(outcomes, failed))
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    (out_dir / "validation.json").write_text(json.dumps(report.result, indent=2, default=str))
    prefix = f"datasets/fgca/{version}"
    reused = store.exists(f"{prefix}/stats.json")
    if not reused:
        for name in (
            *[f"{s}.jsonl" for s in FGCA_SPLITS],
            "quarantine.jsonl",
            "validation.json",
            "stats.json",
        ):
            store.put_file(f"{prefix}/{name}", out_dir / name)  # stats.json last: marks complete

    prior = tracking.finished_run(settings, "fgca", version) if reused else None
    if prior is not None:  # this version's run exists: one run per FGCA version
        logger.info("FGCA version %s was logged by run %s", version, prior.info.run_id)
        run_id = prior.info.run_id
    else:
        with tracking.start_run(
            settings, "fgca_generation", tags={"stage": "fgca", tracking.STAGE_KEY: version}
        ) as run:
            for split, row in stats["table1"].items():
                mlflow.log_metrics({f"{split}.{k}": v for k, v in row.items()})
            mlflow.log_metrics(
                {
                    "images": stats["images"],
                    "quarantined_images": stats["quarantined_images"],
                    "quarantined_rows": len(failed),
                }
            )
            mlflow.log_dict(stats, "stats.json")
            mlflow.log_dict(report.result, "validation/fgca.json")
            mlflow.set_tags(
                {
                    "dataset.version": version,
                    "dataset.uri": store.uri(prefix),
                    **{f"quarantine.{k}": str(v) for k, v in gate.reasons.items()},
                }
            )
            tracking.log_input(
                mlflow.data.from_pandas(
                    pd.DataFrame([r.to_json() for r in records]).astype(str),
                    source=store.uri(prefix),
                    name="fgca",
                    digest=version,
                ),
                context="fgca",
            )
        run_id = run.info.run_id
    if out is None:
        out_dir = publish(out_dir, Path(f.work_dir) / "versions" / version)
    return {
        "version": version,
        "reused": reused,
        "out": str(out_dir),
        "store_uri": store.uri(prefix),
        "run_id": run_id,
        **stats,
    }


def publish(staging: Path, dest: Path) -> Path:
    """Move a complete staging folder to ``dest`` in one rename; when ``dest`` exists (the
    same version, published by another run) the staging folder is removed instead. Returns
    ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        try:
            os.replace(staging, dest)
            return dest
        except OSError:  # another run published the same version first
            pass
    shutil.rmtree(staging, ignore_errors=True)
    return dest


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
