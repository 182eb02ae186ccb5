"""``flows.tracking.log_input``: a dataset logged by two runs at once. MLflow's SQL store looks
the dataset up and inserts it without a lock, so the slower run fails on the unique
constraint (seen in ``test_two_runs_at_once_stage_apart_and_store_one_version`` on a loaded
machine); logging again links the row the other run wrote."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from flows import tracking

RACE = (
    "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name,"
    " datasets.digest"
)


def _dataset():
    return mlflow.data.from_pandas(pd.DataFrame({"id": ["a", "b"]}), name="twitter/x", digest="d1")


@pytest.fixture
def store(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("inputs")  # not an experiment id an earlier test left active
    yield
    mlflow.set_tracking_uri(None)


def test_a_lost_insert_race_is_logged_again_and_links_the_one_dataset(store, monkeypatch):
    with mlflow.start_run() as first:
        tracking.log_input(_dataset(), context="preprocessed")
    real, calls = mlflow.log_input, []

    def racing(dataset, context=None):
        calls.append(context)
        if len(calls) == 1:  # the other run inserted the row between our lookup and insert
            raise mlflow.exceptions.MlflowException(RACE)
        return real(dataset, context=context)

    monkeypatch.setattr(mlflow, "log_input", racing)
    with mlflow.start_run() as second:
        tracking.log_input(_dataset(), context="preprocessed")
    assert calls == ["preprocessed", "preprocessed"]
    client = mlflow.MlflowClient()
    for run in (first, second):
        inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert [i.dataset.digest for i in inputs] == ["d1"]


def test_any_other_tracking_error_is_raised_at_once(store, monkeypatch):
    calls = []

    def broken(dataset, context=None):
        calls.append(1)
        raise mlflow.exceptions.MlflowException("database is locked")

    monkeypatch.setattr(mlflow, "log_input", broken)
    with mlflow.start_run(), pytest.raises(mlflow.exceptions.MlflowException, match="locked"):
        tracking.log_input(_dataset(), context="train")
    assert calls == [1]


def test_a_race_lost_every_time_is_not_hidden(store, monkeypatch):
    def always(dataset, context=None):
        raise mlflow.exceptions.MlflowException(RACE)

    monkeypatch.setattr(mlflow, "log_input", always)
    with mlflow.start_run(), pytest.raises(mlflow.exceptions.MlflowException, match="UNIQUE"):
        tracking.log_input(_dataset(), context="train", attempts=2)
