"""Fault: a training killed from outside. A run opened by :func:`flows.tracking.start_run`
ends FINISHED only when its block completes: an exception ends it FAILED, SIGTERM KILLED, and
SIGKILL leaves it RUNNING. None is FINISHED, so the promotion gate's FINISHED-run check refuses
any version that would point at it (and the training flows register only after the run's
training returned)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

pytestmark = pytest.mark.flows
REPO = Path(__file__).resolve().parents[2]
TRAINER = """
import sys, time
from flows import tracking
from iea.config import load_settings
settings = load_settings(None, [f"tracking.uri={sys.argv[1]}",
                                f"tracking.artifact_root={sys.argv[2]}"])
with tracking.start_run(settings, "train-" + sys.argv[3]) as run:
    print(run.info.run_id, flush=True)
    if sys.argv[3] == "exception":
        raise RuntimeError("the loss went NaN")
    time.sleep(120)  # training
"""


def _run(tmp_path: Path, mode: str, sig: int | None) -> tuple[str, int]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-c", TRAINER, uri, str(tmp_path / "art"), mode],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run_id = proc.stdout.readline().strip()
    if sig is not None:
        time.sleep(0.5)
        os.kill(proc.pid, sig)
    proc.wait(timeout=60)
    return mlflow.MlflowClient(uri).get_run(run_id).info.status, proc.returncode


@pytest.mark.parametrize(
    ("mode", "sig", "status"),
    [
        ("exception", None, "FAILED"),
        ("sigterm", signal.SIGTERM, "KILLED"),
        ("sigkill", signal.SIGKILL, "RUNNING"),
    ],
)
def test_a_killed_training_run_never_ends_finished(tmp_path, mode, sig, status):
    got, code = _run(tmp_path, mode, sig)
    assert (got, code != 0) == (status, True)


def test_the_promotion_gate_refuses_a_version_whose_run_was_killed(tmp_path):
    """A version registered on the run a SIGTERM stopped (as if registration had raced the
    kill) is rejected by the gates with the run's status as the reason."""
    from flows.promotion import promote
    from iea.config import load_settings

    _, _ = _run(tmp_path, "sigterm", signal.SIGTERM)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("iea").experiment_id])
    client.log_metric(run.info.run_id, "selected/dev_jmasa_f1", 0.9)
    client.create_registered_model("iea-jmasa")
    mv = client.create_model_version("iea-jmasa", f"runs:/{run.info.run_id}/j", run.info.run_id)
    settings = load_settings(
        REPO / "configs" / "demo.yaml",
        [f"tracking.uri={uri}", f"tracking.artifact_root={tmp_path / 'art'}",
         "promotion.smoke_tweets=0", "promotion.data_gates=false"],
    )  # fmt: skip
    decision = promote(settings, int(mv.version))
    assert decision.action == "rejected"
    assert any("is KILLED, not FINISHED" in r for r in decision.reasons), decision.reasons
    assert "champion" not in client.get_registered_model("iea-jmasa").aliases
