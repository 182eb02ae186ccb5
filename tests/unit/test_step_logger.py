"""``flows.train.MlflowStepLogger`` on a real sqlite MLflow store: steps wait in a buffer and
reach the run in one batch at a flush (the engine flushes after each checkpoint), at dev
metrics, when the buffer is full, and when the training raises."""

from __future__ import annotations

import mlflow
import pytest

from flows.train import MlflowStepLogger


@pytest.fixture
def store(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("steps")
    yield mlflow.MlflowClient()
    mlflow.set_tracking_uri(None)


def _steps(client, run_id, key="train/loss"):
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_steps_wait_for_a_flush_then_all_arrive_with_their_values(store):
    with mlflow.start_run() as run, MlflowStepLogger() as log:
        for step in range(1, 6):
            log({"train.loss": 1.0 / step, "train.lr": 0.1}, step)
        assert _steps(store, run.info.run_id) == []  # buffered
        log.flush()
        assert _steps(store, run.info.run_id) == [(s, 1.0 / s) for s in range(1, 6)]
        log({"train.loss": 0.1}, 6)
        log({"dev.exact_acc": 0.5}, 6)  # a dev metric writes at once
        assert _steps(store, run.info.run_id, "dev/exact_acc") == [(6, 0.5)]
        assert _steps(store, run.info.run_id)[-1] == (6, 0.1)


def test_a_full_buffer_is_written_and_a_raising_run_keeps_its_steps(store):
    with mlflow.start_run() as run:
        log = MlflowStepLogger(max_buffer=4)
        log({"train.loss": 1.0, "train.lr": 0.1}, 1)
        assert _steps(store, run.info.run_id) == []
        log({"train.loss": 0.5, "train.lr": 0.1}, 2)  # 4 metrics wait: written
        assert _steps(store, run.info.run_id) == [(1, 1.0), (2, 0.5)]
        with pytest.raises(RuntimeError), MlflowStepLogger() as log:
            log({"train.loss": 9.0}, 3)
            raise RuntimeError("diverged")
        assert _steps(store, run.info.run_id)[-1] == (3, 9.0)


def test_every_keeps_one_step_in_every_n_and_every_dev_metric(store):
    with mlflow.start_run() as run, MlflowStepLogger(every=2) as log:
        for step in range(1, 5):
            log({"train.loss": float(step)}, step)
        log({"dev.exact_acc": 0.7}, 5)
    assert [s for s, _ in _steps(store, run.info.run_id)] == [2, 4]
    assert _steps(store, run.info.run_id, "dev/exact_acc") == [(5, 0.7)]
