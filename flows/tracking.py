"""MLflow wiring shared by every flow: tracking URI, experiment, runs, resolved config."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
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
    from mlflow.exceptions import MlflowException

    from flows.locks import named_lock

    uri = settings.tracking.uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    name = settings.tracking.experiment
    # The first touch of a fresh store creates its schema, then the experiment: writers that
    # start at once (threads, processes, machines on one Postgres) do both one at a time.
    with named_lock(uri, "mlflow-setup"):
        exp = mlflow.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        root = str(settings.tracking.artifact_root)
        local = not ("://" in root or ":" in root.split("/")[0])
        location = Path(root).resolve().as_uri() if local else root
        try:
            return mlflow.create_experiment(name, artifact_location=location)
        except MlflowException as e:  # created meanwhile by a writer the lock cannot see
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return mlflow.get_experiment_by_name(name).experiment_id


@contextlib.contextmanager
def start_run(
    settings: Settings,
    run_name: str,
    tags: dict[str, str] | None = None,
    *,
    system_metrics: bool = False,
) -> Iterator:
    """Start a run and log the resolved config (params + ``config.yaml`` artifact).

    If a run is already active (a parent flow opened one), the new run is nested under it. A
    run ends FINISHED only when the block completes: an exception ends it FAILED, SIGTERM or
    Ctrl-C KILLED (SIGKILL leaves it RUNNING: never FINISHED either).
    ``system_metrics``: MLflow samples CPU, memory (and GPU, with pynvml) while the run is open.
    """
    experiment_id = configure(settings)
    nested = mlflow.active_run() is not None
    with (
        _terminated_on_sigterm(),
        mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name,
            nested=nested,
            tags=tags,
            log_system_metrics=system_metrics,
        ) as run,
    ):
        try:
            log_config(settings)
            yield run
        except (Terminated, KeyboardInterrupt):
            mlflow.end_run("KILLED")  # stopped from outside: not FAILED, never FINISHED
            raise


STAGE_KEY = "stage.key"
"""The run tag that holds the content key of a stage's work (a dataset version, a model key)."""


def finished_run(settings: Settings, stage: str, key: str):
    """The newest FINISHED run of ``stage`` that did the work of content key ``key`` (tags
    ``stage`` and :data:`STAGE_KEY`), or None. A stage whose work is reused (a rerun, a flow
    retried after a later stage failed) returns that run instead of opening another: one
    MLflow run per stage's work."""
    experiment_id = configure(settings)
    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=(
            f"tags.stage = '{stage}' and tags.`{STAGE_KEY}` = '{key}'"
            " and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0] if runs else None


class Terminated(BaseException):
    """The process got SIGTERM while a run was open (raised by the handler
    :func:`start_run` installs, so the run ends KILLED instead of staying RUNNING)."""


@contextlib.contextmanager
def _terminated_on_sigterm() -> Iterator[None]:
    """In the main thread, turn SIGTERM into :class:`Terminated` for the block (the default
    action ends the process with the run left RUNNING); the previous handler after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def log_input(dataset, context: str, attempts: int = 3) -> None:
    """``mlflow.log_input`` that survives a race between runs logging the same dataset.

    MLflow's SQL store looks a dataset up by (experiment, name, digest) and inserts it when
    absent, not atomically: two runs that log the same dataset version at once can both insert,
    and the second fails on the unique constraint (seen with two preprocessings of one
    dataset). Logging again finds the row the other run wrote and only links it to this run.
    """
    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except mlflow.exceptions.MlflowException as exc:
            text = str(exc)
            race = "UNIQUE constraint failed: datasets" in text or (
                "duplicate key" in text and "datasets" in text
            )
            if not race or attempt == attempts - 1:
                raise


def log_config(settings: Settings) -> None:
    params = {k: ("" if v is None else str(v))[:6000] for k, v in settings.flat().items()}
    mlflow.log_params(params)
    mlflow.log_text(yaml.safe_dump(settings.public_dump(), sort_keys=False), "config.yaml")


def run_url(run) -> str:
    """Where to look at a run: the tracking URI plus experiment and run ids."""
    uri = redact_url(mlflow.get_tracking_uri())
    return f"{uri} (experiment {run.info.experiment_id}, run {run.info.run_id})"
