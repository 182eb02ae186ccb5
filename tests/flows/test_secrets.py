"""Credentials never leave the environment: canary values planted in the environment, a config
file, an override and a database URL's password go through a flow run, the CLI and a config
error, and turn up in no file, no MLflow record, no Prefect log and no printed output."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.preprocess import twitter_preprocessing
from iea.config import ConfigError, load_settings, redact_url

pytestmark = pytest.mark.flows
DEMO = str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")
ENV, FILE, OVERRIDE = "cAnArY-env-7f3a1", "cAnArY-file-91c2b", "cAnArY-override-55d0e"
CANARIES = [ENV, FILE, OVERRIDE]


def test_redact_url_masks_only_the_password():
    assert redact_url("postgresql://u:p4ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("see s3://bucket/key and sqlite:///a/b.db") == (
        "see s3://bucket/key and sqlite:///a/b.db"
    )
    assert redact_url("http://h:5000/x") == "http://h:5000/x"  # a port is not a password


def test_no_credential_reaches_a_record_a_log_or_the_output(
    tmp_path, flow_overrides, monkeypatch, files_holding, capfd
):
    monkeypatch.setenv("IEA_STORE__SECRET_KEY", ENV)
    secret_file = tmp_path / "secret.yaml"
    secret_file.write_text(
        f"search:\n  storage: postgresql://postgres:{FILE}@127.0.0.1:5432/postgres\n"
    )
    overrides = [*flow_overrides, f"store.access_key={OVERRIDE}"]
    settings = load_settings([DEMO, secret_file], overrides)
    assert settings.store.secret_key.get_secret_value() == ENV  # the values are all there
    assert settings.store.access_key.get_secret_value() == OVERRIDE
    assert FILE in settings.search.storage

    result = twitter_preprocessing([DEMO, str(secret_file)], overrides)
    shown = CliRunner().invoke(
        app, ["config", "show", "--config", DEMO, "--config", str(secret_file), *overrides]
    )
    assert shown.exit_code == 0, shown.output
    with pytest.raises(ConfigError) as err:
        load_settings(DEMO, [f"store.secret_key={{a: {OVERRIDE}}}", *flow_overrides])
    assert "store.secret_key=***" in str(err.value)

    # files: the tracking store, artifacts, the dataset store, the work folder
    for folder in ("work", "store", "mlruns"):  # tmp_path also holds secret.yaml
        assert (tmp_path / folder).is_dir()
        assert files_holding(tmp_path / folder, CANARIES) == []
    # MLflow's records: params, tags of the run
    run = mlflow.MlflowClient(settings.tracking.uri).get_run(result["run_id"])
    assert run.data.params["store.secret_key"] == ""  # logged as unset
    assert run.data.params["search.storage"] == "postgresql://postgres:***@127.0.0.1:5432/postgres"
    records = str(run.data.params) + str(run.data.tags)
    assert not [c for c in CANARIES if c in records]
    # Prefect: the flow run's logs on the server, and everything printed
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        logs = " ".join(log.message for log in client.read_logs())
    assert logs and not [c for c in CANARIES if c in logs]
    out, errs = capfd.readouterr()
    printed = out + errs + shown.output + str(err.value)
    assert not [c for c in CANARIES if c in printed]
