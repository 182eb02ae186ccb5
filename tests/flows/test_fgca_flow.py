"""``fgca_generation`` under the Prefect harness with the demo's tiny models: the happy path with
the trained copier, the validate command on a good and a corrupted file, the gate on a random
LLM, and a SIGKILLed build that resumes without redoing the images it had finished."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.fgca import fgca_generation
from iea.align.fgca import FgcaGateFailed
from iea.data.pascal_classes import class_phrase
from iea.models.refs import prepare_tiny

pytestmark = [pytest.mark.flows, pytest.mark.model]
REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs" / "demo.yaml")


@pytest.fixture(scope="module")
def fgca_models(model_cache):
    prepare_tiny(
        ["tiny-qwen3-fgca", "tiny-qwen3", "tiny-qwen3-vl", "tiny-qwen3-vl-interp"],
        cache=model_cache,
    )
    return model_cache


def _overrides(tmp_path: Path, model_cache: Path, *extra: str) -> list[str]:
    return [
        f"fgca.work_dir={tmp_path / 'work'}",
        f"store.root={tmp_path / 'store'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        f"tracking.artifact_root={tmp_path / 'mlruns' / 'artifacts'}",
        f"runtime.model_cache={model_cache}",
        "fgca.synthetic_images=16",
        "fgca.n_train=10",
        "fgca.n_val=3",
        "fgca.n_test=3",
        "fgca.batch_size=4",
        *extra,
    ]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_build_validates_every_span_and_a_moved_start_is_named(tmp_path, fgca_models):
    out = tmp_path / "D"
    overrides = _overrides(tmp_path, fgca_models)
    result = fgca_generation(DEMO, overrides, out=str(out))

    train = _rows(out / "train.jsonl")
    every = train + _rows(out / "val.jsonl") + _rows(out / "test.jsonl")
    # val/test images whose classes train lacks move to train: a small build may lose a split
    assert len(train) >= 10 and {"train"} < {r["split"] for r in every} <= {"train", "val", "test"}
    for r in every:
        assert r["text"][r["start"] : r["end"]] == r["phrase"]
        assert r["phrase"].lower() == class_phrase(r["class_name"]).lower()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["table1"]["train"]["samples"] == len({r["image_id"] for r in train})
    assert stats["table1"]["train"]["regions"] == len(train)
    quarantine = _rows(out / "quarantine.jsonl")
    assert len(quarantine) == stats["quarantined_images"] + stats.get("quarantined_rows", 0)
    assert result["images"] == 16 and result["quarantined_images"] <= 8

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    run = mlflow.get_run(result["run_id"])
    assert run.data.metrics["train.regions"] == len(train)
    assert run.data.tags["dataset.version"] == result["version"]
    assert run.inputs.dataset_inputs[0].dataset.digest == result["version"]

    runner = CliRunner()
    ok = runner.invoke(app, ["fgca", "validate", str(out / "train.jsonl")])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["passed"] is True

    bad = tmp_path / "bad" / "train.jsonl"
    bad.parent.mkdir()
    moved = [dict(r) for r in train]
    moved[2]["start"] += 1
    bad.write_text("".join(json.dumps(r) + "\n" for r in moved))
    res = runner.invoke(app, ["fgca", "validate", str(bad)])
    assert res.exit_code == 1
    report = json.loads(res.stdout)
    failing = {row for f in report["failures"] for row in f["ids"]}
    assert failing == {f"{bad}:3 {moved[2]['image_id']}/{moved[2]['region_id']}"}

    again = fgca_generation(DEMO, overrides, out=str(tmp_path / "D2"))
    assert again["images_from_cache"] == 16 and again["version"] == result["version"]
    assert again["reused"] is True


def test_random_llm_fails_the_gate_with_counts_and_reasons(tmp_path, fgca_models):
    out = tmp_path / "D"
    overrides = _overrides(tmp_path, fgca_models, "fgca.llm=tiny-qwen3", "fgca.max_attempts=2")
    with pytest.raises(FgcaGateFailed, match=r"of 16 readable images quarantined") as err:
        fgca_generation(DEMO, overrides, out=str(out))
    assert "phrases missing from the generated text" in str(err.value)
    quarantine = _rows(out / "quarantine.jsonl")
    missing = [q for q in quarantine if q["reason"] == "phrases missing from the generated text"]
    assert len(missing) >= 9
    assert all(len(q["detail"]["texts"]) == 2 and q["detail"]["missing"] for q in missing)
    assert not (out / "train.jsonl").exists()


def test_killed_build_resumes_without_redoing_finished_images(tmp_path, fgca_models, sigkill_when):
    from prefect.settings import PREFECT_API_URL

    overrides = _overrides(tmp_path, fgca_models, "fgca.synthetic_images=24")
    cache = tmp_path / "store" / "cache" / "fgca"
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value() or "")}
    if not env["PREFECT_API_URL"]:
        env.pop("PREFECT_API_URL")
    cmd = [sys.executable, "-m", "flows.cli", "fgca", "build", "--config", DEMO]
    cmd += ["--out", str(tmp_path / "D"), *overrides]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    sigkill_when(proc, lambda: cache.is_dir() and len(list(cache.glob("*.json"))) >= 4, poll=0.2)
    finished = len(list(cache.glob("*.json")))
    assert 4 <= finished < 24

    result = fgca_generation(DEMO, overrides, out=str(tmp_path / "D"))
    assert result["images"] == 24
    assert result["images_from_cache"] == finished
    for r in _rows(tmp_path / "D" / "train.jsonl"):
        assert r["text"][r["start"] : r["end"]] == r["phrase"]
