"""Commands stop before any work when the config cannot do what they are asked."""

from __future__ import annotations

import time
from pathlib import Path

from typer.testing import CliRunner

from flows.cli import app

PAPER = Path(__file__).resolve().parents[2] / "configs" / "paper.yaml"


def test_train_jmasa_without_images_stops_at_once_naming_the_setting():
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, ["train", "jmasa", "--config", str(PAPER)])
    assert res.exit_code == 1
    assert "data.images is not set" in res.output and str(PAPER) in res.output
    # No model build (minutes), no flow, no preprocessing; 30 s, not 5: a loaded machine took
    # over 5 s to import the CLI's modules (session 23, an experiment beside the tests).
    assert time.perf_counter() - t0 < 30


def test_experiment_rejects_unknown_rows_and_bad_fractions():
    res = CliRunner().invoke(
        app, ["experiment", "ablations", "--config", str(PAPER), "--rows", "full,nope"]
    )
    assert res.exit_code == 1 and "nope" in res.output
    res = CliRunner().invoke(
        app, ["experiment", "ablations", "--config", str(PAPER), "--fractions", "0,2"]
    )
    assert res.exit_code == 1 and "--fractions" in res.output
    res = CliRunner().invoke(
        app, ["experiment", "ablations", "--config", str(PAPER), "--n-test", "0"]
    )
    assert res.exit_code == 1 and "--n-test must be >= 1" in res.output


def test_config_is_repeatable_on_commands_and_every_file_error_is_named(tmp_path):
    """``--config A --config B``: B's keys override A's; errors of both files come at once."""
    best = tmp_path / "best.yaml"
    best.write_text("filters:\n  t_size: 35\n  t_clarity: 125\n  t_conf: 0.8\n")
    res = CliRunner().invoke(app, ["config", "show", "--config", str(PAPER), "--config", str(best)])
    assert res.exit_code == 0, res.output
    import json

    shown = json.loads(res.stdout)
    assert shown["filters"]["t_size"] == 35 and shown["filters"]["t_conf"] == 0.8
    assert shown["interpreter"]["model"] == "Qwen/Qwen3-VL-2B-Instruct"  # paper.yaml's own
    bad = tmp_path / "bad.yaml"
    bad.write_text("filters:\n  t_conf: 2\n")
    res = CliRunner().invoke(
        app,
        ["train", "jmasa", "--config", str(PAPER), "--config", str(bad), "--config", "nope.yaml"],
    )
    assert res.exit_code == 1
    assert f"{bad}: filters.t_conf" in res.output and "nope.yaml: cannot read" in res.output


def test_config_show_sources_names_mlflow_tracking_uri(monkeypatch):
    import json

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    demo = str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")
    res = CliRunner().invoke(app, ["config", "show", "--config", demo, "--sources"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    assert shown["tracking.uri"] == {
        "value": "http://mlflow.example:5000",
        "from": "env MLFLOW_TRACKING_URI",
    }
    assert shown["tracking.experiment"]["from"] == demo
