"""Optuna studies that several workers share: storage with heartbeats, an exact budget of
finished trials, a killed worker's trial retried once.

A worker (:func:`run_worker`) loops: under the study's claim lock it fails stale trials (no
heartbeat for ``3 × heartbeat_s`` seconds: their worker died; the storage's callback queues one
retry with the same parameters), counts finished (COMPLETE) and running trials, and asks for a
new trial only while ``finished + running < budget``; otherwise it waits for the running ones or
stops once the budget is met. So ``budget`` finished trials in total, never more, however many
workers share the study and whichever of them die. An exception in a trial fails that trial with
its reason (user attribute ``fail_reason``) and the worker goes on; a pruned trial
(:class:`optuna.TrialPruned`) is told PRUNED. Neither counts towards the budget.

The claim lock is a ``flock`` beside a sqlite file, ``pg_advisory_lock`` on Postgres, and a
process-local lock on other URLs (one process only). Create the storage once
(:func:`open_storage` in the parent) before workers start: Optuna's RDB storage creates its
schema on first use, and two processes doing that at once on a fresh Postgres crash.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.storages._heartbeat import get_heartbeat_thread
from optuna.trial import TrialState

from flows.locks import named_lock

HEARTBEAT_S = 5
"""Seconds between a running trial's heartbeats; a trial silent for 3 of them is stale."""


def open_storage(url: str, heartbeat_s: int = HEARTBEAT_S) -> RDBStorage:
    """The RDB storage at ``url`` (creating its schema), with heartbeats and one retry of a
    stale trial. ``sqlite:///path`` makes the folder, waits up to 60 s on a locked file and
    runs in WAL mode (:func:`_sqlite_wal`)."""
    kwargs: dict = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(
            url,
            heartbeat_interval=heartbeat_s,
            grace_period=3 * heartbeat_s,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            **kwargs,
        )
    if url.startswith("sqlite:///"):
        from sqlalchemy import event

        event.listen(storage.engine, "connect", _sqlite_wal)
        storage.engine.dispose()  # connections opened from now on get the pragmas
    return storage


def _sqlite_wal(conn, _record) -> None:
    """Write-ahead log and one sync per checkpoint, not per commit: a trial's dozen small
    commits cost about 3× less (BENCHMARKS.md). Needs a local disk (not NFS)."""
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials per state name (``COMPLETE``, ``RUNNING``, ``WAITING``, ``FAIL``, ...)."""
    out: dict[str, int] = {}
    for tr in study.get_trials(deepcopy=False):
        out[tr.state.name] = out.get(tr.state.name, 0) + 1
    return out


def run_worker(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    budget: int,
    *,
    storage_url: str,
    poll_s: float = 1.0,
    max_failures: int | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> int:
    """Run trials of ``study`` until it holds ``budget`` finished trials; returns how many
    this worker finished.

    Raises:
        RuntimeError: ``max_failures`` (default ``max(3, budget)``) trials of this worker
            failed in a row: the objective cannot run, each failure's reason is in the log.
    """
    max_failures = max(3, budget) if max_failures is None else max_failures
    done_here = failed_in_a_row = 0
    while True:
        with named_lock(storage_url, study.study_name):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                fail_stale_trials(study)
            c = counts(study)
            finished = c.get("COMPLETE", 0)
            if finished >= budget:
                return done_here
            with warnings.catch_warnings():  # heartbeats run here, not only in optimize()
                warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                trial = study.ask() if finished + c.get("RUNNING", 0) < budget else None
        if trial is None:  # the last trials are running elsewhere: wait for them
            time.sleep(poll_s)
            continue
        heartbeat = get_heartbeat_thread(trial._trial_id, study._storage)
        heartbeat.start()
        try:
            value = objective(trial)
        except optuna.TrialPruned as e:  # the pruner stopped it: PRUNED, not a failure
            heartbeat.join()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                study.tell(trial, state=TrialState.PRUNED)
            log(f"trial {trial.number} pruned: {e}")
            failed_in_a_row = 0
            continue
        except Exception as e:  # that trial fails with its reason; the study goes on
            reason = f"{type(e).__name__}: {e}"
            heartbeat.join()
            trial.set_user_attr("fail_reason", reason[:2000])
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                study.tell(trial, state=TrialState.FAIL)
            log(f"trial {trial.number} failed: {reason}")
            failed_in_a_row += 1
            if failed_in_a_row >= max_failures:
                raise RuntimeError(
                    f"study {study.study_name!r}: {failed_in_a_row} trials failed in a row,"
                    f" the last with {reason}"
                ) from e
            continue
        heartbeat.join()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            study.tell(trial, value)
        done_here += 1
        failed_in_a_row = 0
