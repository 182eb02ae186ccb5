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
    assert time.perf_counter() - t0 < 5  # no model build, no flow, no preprocessing


def test_experiment_rejects_unknown_rows_and_bad_fractions():
    res = CliRunner().invoke(
        app, ["experiment", "ablations", "--config", str(PAPER), "--rows", "full,nope"]
    )
    assert res.exit_code == 1 and "nope" in res.output
    res = CliRunner().invoke(
        app, ["experiment", "ablations", "--config", str(PAPER), "--fractions", "0,2"]
    )
    assert res.exit_code == 1 and "--fractions" in res.output
