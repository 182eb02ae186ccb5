"""MLflow's backend store on the local Postgres server: eight trainers that start at once on a
fresh database all get their run (the schema and the experiment are created once, under a lock
on that database: :func:`flows.tracking.configure`), and a second experiment in the same store
needs no migration. About 30 seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.services
REPO = Path(__file__).resolve().parents[2]

TRAINER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    go = Path(sys.argv[2])
    from flows import tracking
    from iea.config import load_settings
    import mlflow
    settings = load_settings(None, [f"tracking.uri={sys.argv[1]}",
                                    f"tracking.artifact_root={sys.argv[3]}",
                                    "tracking.experiment=eight"])
    while not go.exists():  # released together
        time.sleep(0.01)
    with tracking.start_run(settings, f"trainer-{sys.argv[4]}") as run:
        mlflow.log_metric("loss", float(sys.argv[4]))
    print(json.dumps({"run_id": run.info.run_id}))
    """
)


def test_eight_trainers_start_at_once_on_a_fresh_postgres_store(pg_url, tmp_path):
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TRAINER, pg_url, str(go), str(tmp_path / "art"), str(i)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(8)
    ]
    import time

    time.sleep(3)  # let them import
    go.touch()
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
        ids.append(json.loads(out.strip().splitlines()[-1])["run_id"])
    import mlflow

    client = mlflow.MlflowClient(pg_url)
    (exp,) = [e for e in client.search_experiments() if e.name == "eight"]
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(ids) and len(set(ids)) == 8
    assert all(r.info.status == "FINISHED" for r in runs)
    assert sorted(r.data.metrics["loss"] for r in runs) == [float(i) for i in range(8)]
