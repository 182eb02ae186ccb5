"""``twitter_preprocessing`` under a real Prefect server, a real sqlite MLflow store and GX."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from flows.preprocess import twitter_preprocessing
from flows.validation import ValidationFailed

pytestmark = pytest.mark.flows
REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs" / "demo.yaml")


def _runs(uri: str, experiment: str = "iea-demo"):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment], order_by=["attributes.start_time ASC"])


def test_preprocess_twice_reuses_the_version(tmp_path, flow_overrides):
    first = twitter_preprocessing(DEMO, flow_overrides)
    assert first["reused"] is False
    assert first["counts"]["train"]["tweets"] == 30 and first["counts"]["test"]["tweets"] == 10
    store = tmp_path / "store" / first["store_prefix"]
    assert sorted(p.name for p in store.iterdir()) == [
        "dev.jsonl",
        "manifest.json",
        "rejects.jsonl",
        "test.jsonl",
        "train.jsonl",
        "validation.json",  # the GX results: promotion's data gate reads them
    ]

    second = twitter_preprocessing(DEMO, flow_overrides)
    assert second["reused"] is True and second["version"] == first["version"]
    versions = list((tmp_path / "store" / "datasets" / "twitter" / "synthetic-twitter").iterdir())
    assert [v.name for v in versions] == [first["version"]]

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    runs = _runs(uri)
    # one run per dataset version: the rerun reuses the version and names its run
    assert len(runs) == 1 and second["run_id"] == first["run_id"]
    assert list(runs["metrics.train.tweets"]) == [30.0]
    assert list(runs["tags.dataset.reused"]) == ["false"]
    assert runs["params.data.name"].iloc[0] == "synthetic-twitter"
    client = mlflow.MlflowClient(uri)
    digests = {
        d.dataset.digest
        for run_id in runs["run_id"]
        for d in client.get_run(run_id).inputs.dataset_inputs
    }
    assert digests == {first["version"]}
    artifacts = {a.path for a in client.list_artifacts(first["run_id"], "validation")}
    assert artifacts == {"validation/twitter_canonical.json"}
    gx = json.loads(
        Path(
            client.download_artifacts(
                first["run_id"], "validation/twitter_canonical.json", str(tmp_path / "dl")
            )
        ).read_text()
    )
    assert set(gx) == {"train", "dev", "test"}


def test_run_nested_under_an_active_run(tmp_path, flow_overrides):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("iea-demo")
    with mlflow.start_run(run_name="parent") as parent:
        result = twitter_preprocessing(DEMO, flow_overrides)
    child = mlflow.get_run(result["run_id"])
    assert child.data.tags.get("mlflow.parentRunId") == parent.info.run_id


def test_invalid_records_stop_the_flow(tmp_path, flow_overrides):
    # Two aspects of one tweet overlap: every format reader accepts that (VLP JSON can carry it),
    # so only the GX gate can stop it.
    src = tmp_path / "src"
    src.mkdir()
    good = {
        "words": ["Ann", "and", "Bob"],
        "image_id": "1.jpg",
        "aspects": [{"from": 0, "to": 1, "polarity": "POS"}],
    }
    bad = {
        "words": ["Chuck", "Bass", "wins"],
        "image_id": "2.jpg",
        "aspects": [
            {"from": 0, "to": 2, "polarity": "POS"},
            {"from": 1, "to": 2, "polarity": "NEG"},
        ],
    }
    for split in ("train", "dev", "test"):
        (src / f"{split}.json").write_text(json.dumps([good, bad] if split == "dev" else [good]))
    overrides = [*flow_overrides, "data.source=files", f"data.src={src}", "data.name=broken"]
    with pytest.raises(ValidationFailed) as e:
        twitter_preprocessing(DEMO, overrides)
    assert "2-" in str(e.value)  # the failing tweet's id (image stem "2")
    assert not (tmp_path / "store" / "datasets" / "twitter" / "broken").exists()


def test_two_runs_at_once_stage_apart_and_store_one_version(tmp_path, flow_overrides):
    """Two preprocessing runs of the same dataset at once (threads): each converts into its
    own staging folder, both end with the same stored version, and no staging is left."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: twitter_preprocessing(DEMO, flow_overrides), range(2)))
    assert results[0]["version"] == results[1]["version"]
    assert sorted(r["reused"] for r in results) in ([False, True], [False, False])
    staging = tmp_path / "work" / "staging"
    assert not staging.exists() or not any(staging.iterdir())
    prefix = tmp_path / "store" / results[0]["store_prefix"]
    assert (prefix / "manifest.json").is_file() and not list(prefix.glob(".tmp-*"))


def test_publish_moves_a_staging_folder_once_per_version(tmp_path):
    from flows.fgca import publish

    a, b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    for d, text in ((a, "first"), (b, "second")):
        d.mkdir(parents=True)
        (d / "train.jsonl").write_text(text)
    dest = tmp_path / "versions" / "v1"
    assert publish(a, dest) == dest and not a.exists()
    assert publish(b, dest) == dest and not b.exists()  # the same version: already there
    assert (dest / "train.jsonl").read_text() == "first"
