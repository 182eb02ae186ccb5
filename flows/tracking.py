"""MLflow wiring shared by every flow: tracking URI, experiment, runs, resolved config."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import yaml

from iea.config import Settings, redact_url

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def configure(settings: Settings) -> str:
    """Point MLflow at ``tracking.uri`` (creating the sqlite folder) and return the experiment id.

    The experiment's artifacts go to ``tracking.artifact_root`` (a local folder or an
    ``s3://``/``mlflow-artifacts:`` URI).
    """
    uri = settings.tracking.uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(settings.tracking.experiment)
    if exp is not None:
        return exp.experiment_id
    root = str(settings.tracking.artifact_root)
    location = root if "://" in root or ":" in root.split("/")[0] else Path(root).resolve().as_uri()
    return mlflow.create_experiment(settings.tracking.experiment, artifact_location=location)


@contextlib.contextmanager
def start_run(
    settings: Settings,
    run_name: str,
    tags: dict[str, str] | None = None,
    *,
    system_metrics: bool = False,
) -> Iterator:
    """Start a run and log the resolved config (params + ``config.yaml`` artifact).

    If a run is already active (a parent flow opened one), the new run is nested under it.
    ``system_metrics``: MLflow samples CPU, memory (and GPU, with pynvml) while the run is open.
    """
    experiment_id = configure(settings)
    nested = mlflow.active_run() is not None
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name,
        nested=nested,
        tags=tags,
        log_system_metrics=system_metrics,
    ) as run:
        log_config(settings)
        yield run


def log_config(settings: Settings) -> None:
    params = {k: ("" if v is None else str(v))[:6000] for k, v in settings.flat().items()}
    mlflow.log_params(params)
    mlflow.log_text(yaml.safe_dump(settings.public_dump(), sort_keys=False), "config.yaml")


def run_url(run) -> str:
    """Where to look at a run: the tracking URI plus experiment and run ids."""
    uri = redact_url(mlflow.get_tracking_uri())
    return f"{uri} (experiment {run.info.experiment_id}, run {run.info.run_id})"
