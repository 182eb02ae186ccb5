"""One real Prefect server (``prefect_test_harness``) per session, isolated results storage."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_server(tmp_path_factory):
    results = tmp_path_factory.mktemp("prefect-results")
    os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(results)
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def flow_overrides(tmp_path):
    """Overrides that send every output of a flow run into ``tmp_path``."""
    return [
        f"data.work_dir={tmp_path / 'work'}",
        f"store.root={tmp_path / 'store'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        f"tracking.artifact_root={tmp_path / 'mlruns' / 'artifacts'}",
        "data.synthetic.n_train=30",
        "data.synthetic.n_dev=10",
        "data.synthetic.n_test=10",
    ]
