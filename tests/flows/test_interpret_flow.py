"""``image_interpretation`` under the Prefect harness with the demo's tiny models."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from flows.interpret import run_image_interpretation, work_pool_for
from iea.config import load_settings
from iea.data.synthetic import generate

pytestmark = [pytest.mark.flows, pytest.mark.model]
DEMO = str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")


def test_interpret_flow_counts_quarantines_and_caches(tmp_path, flow_overrides, model_cache):
    syn = generate(tmp_path / "syn", n_train=3, n_dev=1, n_test=1, seed=5)
    (syn.images / "zz_corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    overrides = [
        *flow_overrides,
        f"runtime.model_cache={model_cache}",
        "interpreter.overlay_samples=2",
    ]

    first = run_image_interpretation(DEMO, overrides, images=str(syn.images))
    assert first["images"] == 5 and first["errors"] == 1
    assert first["regions"] >= 5 and first["kept"] <= first["regions"]
    assert first["segmentation_cache_hits"] == 0 and first["work_pool"] == "cpu"
    quarantine = tmp_path / "store" / first["store_prefix"] / "quarantine.jsonl"
    assert "zz_corrupt.jpg" in quarantine.read_text()
    stored = list((tmp_path / "store" / first["store_prefix"]).glob("*.json"))
    assert len(stored) == 5

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    run = mlflow.get_run(first["run_id"])
    assert run.data.metrics["images"] == 5 and run.data.metrics["images_per_s"] > 0
    assert run.data.tags["work_pool"] == "cpu"
    client = mlflow.MlflowClient()
    overlays = [a.path for a in client.list_artifacts(first["run_id"], "overlays")]
    assert len(overlays) == 2

    second = run_image_interpretation(DEMO, overrides, images=str(syn.images))
    assert second["segmentation_cache_hits"] == 5 and second["regions"] == first["regions"]


def test_work_pool_routing_is_a_setting():
    assert work_pool_for(load_settings(env={})) == "gpu"
    s = load_settings(overrides=["interpreter.pool=cpu", "runtime.cpu_pool=cpu-small"], env={})
    assert work_pool_for(s) == "cpu-small"
