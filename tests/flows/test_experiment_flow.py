"""``ablation_experiment`` with worker processes: every job lands on its own row, and the
trainings are the ones a run in sequence reuses (same content keys, same test metrics).

Kept cheap: the two rows that need no aligner (``no_aligner_nmi``, ``text_only``), two seeds,
one epoch over 8 tweets with the random ``tiny-qwen3-vl``."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.experiment import ablation_experiment
from iea.models.refs import prepare_tiny

pytestmark = [pytest.mark.flows, pytest.mark.model]
DEMO = str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")


def test_workers_train_every_job_once_and_sequence_reuses_them(tmp_path, model_cache):
    prepare_tiny(["tiny-qwen3-vl"], cache=model_cache)
    overrides = [
        f"data.work_dir={tmp_path / 'work'}",
        f"store.root={tmp_path / 'store'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        f"tracking.artifact_root={tmp_path / 'mlruns' / 'artifacts'}",
        f"runtime.model_cache={model_cache}",
        "data.synthetic.n_train=8",
        "data.synthetic.n_dev=4",
        "jmasa.model=tiny-qwen3-vl",
        "jmasa.train.epochs=1",
        "jmasa.train.max_new_tokens=8",
    ]
    kw = dict(seeds=[0, 1], rows=["no_aligner_nmi", "text_only"], thresholds=False, n_test=4)
    parallel = ablation_experiment(DEMO, overrides, workers=2, **kw)
    assert parallel["test_tweets"] == 4  # the demo's 50 otherwise
    runs = parallel["runs"]
    assert sorted((r["row"], r["seed"]) for r in runs) == [
        ("no_aligner_nmi", 0),
        ("no_aligner_nmi", 1),
        ("text_only", 0),
        ("text_only", 1),
    ]
    keys = [r["extra"]["key"] for r in runs]
    assert len(set(keys)) == 4  # four trainings, each its own model

    trained = {p.name for p in (tmp_path / "work" / "models" / "jmasa").iterdir()}
    assert trained == set(keys)
    sequence = ablation_experiment(DEMO, overrides, workers=1, **kw)
    assert {p.name for p in (tmp_path / "work" / "models" / "jmasa").iterdir()} == trained
    by_job = {(r["row"], r["seed"]): r for r in sequence["runs"]}
    for r in runs:  # each result came back to the job that trained it
        other = by_job[(r["row"], r["seed"])]
        assert other["extra"]["key"] == r["extra"]["key"]
        assert other["metrics"] == r["metrics"]


def test_workers_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="workers"):
        ablation_experiment.fn(DEMO, [f"data.work_dir={tmp_path}"], workers=0)


def test_test_split_is_only_for_a_synthetic_world(tmp_path):
    with pytest.raises(ValueError, match="n_test must be >= 1"):
        ablation_experiment.fn(DEMO, [f"data.work_dir={tmp_path}"], n_test=0)
    files = str(Path(DEMO).parent / "paper.yaml")
    with pytest.raises(ValueError, match="reads files"):
        ablation_experiment.fn(files, [f"data.work_dir={tmp_path}"], n_test=200)
