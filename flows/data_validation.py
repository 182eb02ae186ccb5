"""The ``data-validation`` flow (nightly on the ``cpu`` pool): every dataset version in the
store, validated again with today's Great Expectations suites.

A suite that changed since a version was stored (a new check, a tighter bound) is applied to
data that is already in use: the Twitter splits under ``datasets/twitter/<name>/<version>/``
(suite ``twitter_canonical``) and the FGCA splits under ``datasets/fgca/<version>/`` (suite
``fgca``). Each version's result is written back next to it as ``revalidation.json`` and
logged to one MLflow run; a failing version is listed with its failed checks, and the flow
fails after validating every version (none is skipped because another failed).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE

from flows import tracking
from flows.validation import validate_fgca, validate_tweets
from iea.align.records import FGCA_SPLITS, FgcaRecord
from iea.config import load_settings
from iea.data.records import SPLITS, Tweet
from iea.store import ArtifactStore, open_store


class DataValidationFailed(RuntimeError):
    """Some stored versions fail today's suites; the message names each with its checks."""


def stored_versions(store: ArtifactStore) -> list[tuple[str, str]]:
    """``(kind, prefix)`` of every complete dataset version in ``store``: Twitter versions
    (their ``manifest.json`` marks them complete) and FGCA versions (``stats.json``), sorted."""
    out = []
    for key in store.list("datasets/twitter/"):
        if key.endswith("/manifest.json") and key.count("/") == 4:
            out.append(("twitter", key.rsplit("/", 1)[0]))
    for key in store.list("datasets/fgca/"):
        if key.endswith("/stats.json") and key.count("/") == 3:
            out.append(("fgca", key.rsplit("/", 1)[0]))
    return sorted(out)


def _lines(store: ArtifactStore, key: str) -> list[dict]:
    return [json.loads(x) for x in store.get(key).decode().splitlines() if x.strip()]


@task(cache_policy=NONE)
def revalidate(store: ArtifactStore, kind: str, prefix: str, gx_root: Path) -> dict:
    """Validate one stored version; returns ``{"kind", "prefix", "success", "failures"}``."""
    if kind == "twitter":
        failures = []
        for split in SPLITS:
            tweets = [Tweet.from_json(x) for x in _lines(store, f"{prefix}/{split}.jsonl")]
            report = validate_tweets(tweets, gx_root)
            failures += [{**f, "split": split} for f in report.failures]
    else:
        records = [
            FgcaRecord.from_json(x)
            for split in FGCA_SPLITS
            for x in _lines(store, f"{prefix}/{split}.jsonl")
        ]
        report, _ = validate_fgca(records, gx_root, where=prefix)
        failures = list(report.failures)
    critical = [f for f in failures if f.get("severity", "critical") == "critical"]
    result = {"kind": kind, "prefix": prefix, "success": not critical, "failures": failures}
    store.put(f"{prefix}/revalidation.json", json.dumps(result, default=str).encode())
    return result


@flow(name="data_validation", log_prints=True)
def data_validation(
    config: str | list[str] | None = None, overrides: list[str] | None = None
) -> dict:
    """Validate every stored dataset version again (module doc).

    Returns:
        ``{"versions": [per-version result], "failed": [prefixes], "run_id"}``.

    Raises:
        DataValidationFailed: a version fails a critical check (after all were validated).
    """
    settings = load_settings(config, overrides or [])
    logger = get_run_logger()
    store = open_store(settings.store)
    versions = stored_versions(store)
    logger.info("%d stored dataset versions to validate", len(versions))
    with tempfile.TemporaryDirectory(prefix="iea-gx-") as gx:
        results = [revalidate(store, kind, prefix, Path(gx)) for kind, prefix in versions]
    failed = [r["prefix"] for r in results if not r["success"]]
    with tracking.start_run(settings, "data_validation", tags={"stage": "data-validation"}) as run:
        mlflow.log_metrics({"versions": len(results), "failed_versions": len(failed)})
        mlflow.log_dict({"versions": results}, "revalidation.json")
        run_id = run.info.run_id
    create_table_artifact(
        key="data-validation",
        table=[
            {
                "kind": r["kind"],
                "version": r["prefix"],
                "passed": r["success"],
                "failed checks": ", ".join(sorted({f["check"] for f in r["failures"]})),
            }
            for r in results
        ],  # fmt: skip
        description=f"{len(results)} stored versions, {len(failed)} failing",
    )
    if failed:
        raise DataValidationFailed(
            "stored versions failing today's suites: "
            + "; ".join(
                f"{r['prefix']} ({', '.join(sorted({f['check'] for f in r['failures']}))})"
                for r in results
                if not r["success"]
            )
        )
    return {"versions": results, "failed": failed, "run_id": run_id}
