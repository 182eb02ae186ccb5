"""Where the ``retrain`` flow takes its thresholds from (:func:`flows.retrain.thresholds_config`):
an exported file, or a study's best trial."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from flows.retrain import thresholds_config
from flows.study import open_storage

pytestmark = pytest.mark.flows
DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def test_thresholds_from_a_study_export_its_best_trial_and_a_file_is_used_as_is(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url), direction="maximize")
    for params, value in [({"t_size": 25.0, "t_clarity": 100.0, "t_conf": 0.5}, 0.6),
                          ({"t_size": 5.0, "t_clarity": 200.0, "t_conf": 0.1}, 0.7)]:  # fmt: skip
        dists = {k: optuna.distributions.FloatDistribution(0, 1000) for k in params}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value))
    out = thresholds_config("s", url, tmp_path / "work")
    assert out == tmp_path / "work" / "thresholds" / "s.yaml"
    assert yaml.safe_load(out.read_text()) == {
        "filters": {"t_size": 5, "t_clarity": 200, "t_conf": 0.1}
    }
    assert thresholds_config(str(out), url, tmp_path) == out
    with pytest.raises(ValueError, match="no such file"):
        thresholds_config(str(tmp_path / "missing.yaml"), url, tmp_path)
    with pytest.raises(ValueError, match="no threshold study 'nope'"):
        thresholds_config("nope", url, tmp_path)


def test_the_demo_retrains_with_the_best_thresholds_other_than_the_configs(tmp_path):
    from flows.demo import best_other_thresholds
    from iea.config import load_settings

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    settings = load_settings(DEMO, [f"search.storage={url}"])
    study = optuna.create_study(study_name="d", storage=open_storage(url), direction="maximize")
    trials = [
        ({"t_size": 25.0, "t_clarity": 100.0, "t_conf": 0.5}, 0.8),  # the config's: best
        ({"t_size": 5.0, "t_clarity": 200.0, "t_conf": 0.1}, 0.7),
        ({"t_size": 10.0, "t_clarity": 0.0, "t_conf": 0.2}, 0.6),
    ]
    for params, value in trials:
        dists = {k: optuna.distributions.FloatDistribution(0, 1000) for k in params}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value))
    out = best_other_thresholds("d", settings, tmp_path / "t.yaml")
    assert yaml.safe_load(out.read_text())["filters"] == {
        "t_size": 5,
        "t_clarity": 200,
        "t_conf": 0.1,
    }


def test_the_demo_report_quotes_the_ablation_table_and_its_command(tmp_path):
    from flows.demo import EXPERIMENTS_MD, ablation_section

    lines = ablation_section(EXPERIMENTS_MD)
    assert any(x.startswith(".venv/bin/iea experiment ablations") for x in lines)
    rows = [x for x in lines if x.startswith("| ")]
    assert rows[0].startswith("| row |") and any(x.startswith("| no_nmi |") for x in rows)
    md = tmp_path / "E.md"
    md.write_text("# E\n\n## Other\n\n| a |\n")
    assert "no section" in ablation_section(md)[0]
    assert "No `EXPERIMENTS.md`" in ablation_section(tmp_path / "none.md")[0]
