"""The ``retrain`` flow as a team runs it: every byte on S3 (an S3-protocol server on loopback,
moto's server mode, standing in for MinIO), MLflow's tracking and registry on Postgres, the
Prefect server of the harness, and the credentials only in the environment.

One retrain of a very small demo (a few tweets, one epoch per model: what is checked here is
where things go, not how well they learn), whose JMASA stage fails once and which Prefect
retries: the retry re-executes none of the earlier stages, and each stage's work has one MLflow
run (the JMASA stage one FAILED and one FINISHED) and one object version. Afterwards:

* the bucket holds every stage's output: the tweet and FGCA datasets, the interpretations, the
  aligned regions, both trained models under ``models/<stage>/<key>/``, and MLflow's artifacts
  (runs, the registered model) under ``mlflow/``; every object our store wrote carries the
  SHA-256 of its content, and the registered model's weights in the bucket are byte for byte
  the trained ones;
* the local disk holds nothing outside the declared caches (``Settings.local_caches``), and
  Prefect persisted no result;
* the credentials are nowhere: not in the bucket, the caches, MLflow's params and tags or the
  Prefect server's logs;
* with every local cache wiped (a fresh worker), a second retrain, handing its training stages
  to the ``jmasa-finetune`` deployment on a ``gpu`` pool served by a process worker
  (``runtime.handoff``, as the ``retrain`` deployment does), takes every stage from the
  bucket: nothing is trained again, the result comes back through the bucket, and the same
  version is decided on.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from flows.retrain import retrain
from iea.config import load_settings
from iea.models.refs import prepare_tiny

pytestmark = [pytest.mark.flows, pytest.mark.model, pytest.mark.services]
REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs" / "demo.yaml")
BUCKET = "iea-e2e"
KEY_ID, SECRET = "AKIA-cAnArY-id-3b7", "cAnArY-s3-secret-8e21f"
TINY = [
    "data.synthetic.n_train=24",
    "data.synthetic.n_dev=8",
    "data.synthetic.n_test=8",
    "fgca.synthetic_images=24",
    "fgca.n_train=16",
    "fgca.n_val=4",
    "fgca.n_test=4",
    "aligner.train.epochs=1",
    "jmasa.train.epochs=1",
    "promotion.smoke_tweets=2",
]
"""A demo small enough that the retrain's time goes to the stages' wiring, not to learning."""


def _bucket(endpoint: str):
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{endpoint}",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return s3, keys


@contextlib.contextmanager
def _gpu_pool_worker(log: Path):
    """A process work pool ``gpu``, the ``jmasa-finetune`` deployment on it (as
    ``prefect.yaml`` declares it, with ``iea deploy``'s environment) and a process worker
    serving it (this process's environment: the bucket, Postgres and the test's Prefect
    server); yields the deployment's ``flow/name``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL

    from flows.results import RESULTS_ENV

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="gpu", type="process"), overwrite=True)
        flow_id = client.create_flow_from_name("jmasa_finetune")
        client.create_deployment(
            flow_id, "jmasa-finetune", entrypoint="flows/train.py:jmasa_finetune",
            path=str(REPO), work_pool_name="gpu", job_variables={"env": RESULTS_ENV},
            # run in the repository, as iea deploy's pull steps do (without them the worker
            # copies the whole folder, .venv included, into a temporary directory)
            pull_steps=[{"prefect.deployments.steps.set_working_directory":
                         {"directory": str(REPO)}}],
        )  # fmt: skip
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),
           "PREFECT_WORKER_QUERY_SECONDS": "1"}  # fmt: skip
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", "gpu",
         "--type", "process"],
        cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        yield "jmasa_finetune/jmasa-finetune"
    finally:  # its run is over: the worker and what it started go (a SIGTERM can hang it)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def s3_world(tmp_path, monkeypatch, s3_endpoint, pg_url, model_cache):
    prepare_tiny(
        ["tiny-sam-world", "tiny-qwen3-fgca", "tiny-qwen3-vl", "tiny-qwen3-vl-interp"],
        cache=model_cache,
    )
    # the ecosystem's own variables, as a worker's environment would carry them
    monkeypatch.setenv("MLFLOW_TRACKING_URI", pg_url)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", f"http://{s3_endpoint}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    cwd = tmp_path / "cwd"  # anything written relative to the working folder lands here
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    caches = tmp_path / "caches"
    overrides = [
        "store.backend=s3",
        f"store.bucket={BUCKET}",
        f"tracking.artifact_root=s3://{BUCKET}/mlflow",
        f"data.work_dir={caches / 'work'}",
        f"fgca.work_dir={caches / 'fgca'}",
        f"runtime.model_cache={model_cache}",
        *TINY,
    ]
    return tmp_path, caches, overrides


def test_a_retried_retrain_on_s3_and_postgres_keeps_every_byte_in_the_bucket_once(
    s3_world, s3_endpoint, files_holding, model_cache, monkeypatch
):
    tmp_path, caches, overrides = s3_world
    settings = load_settings(DEMO, overrides)
    assert settings.tracking.uri.startswith("postgresql://")  # from MLFLOW_TRACKING_URI
    assert settings.store.endpoint == s3_endpoint and not settings.store.secure
    assert settings.local_caches()[:3] == [caches / "work", caches / "fgca", model_cache]

    from prefect import task
    from prefect.cache_policies import NONE

    import flows.train

    real, calls = flows.train.train_jmasa_task, []

    @task(cache_policy=NONE)
    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected: the JMASA stage fails once")
        return real.fn(*args, **kwargs)

    monkeypatch.setattr(flows.train, "train_jmasa_task", fails_once)
    # what earlier tests of the session left in the harness's local result folder
    local_results = set(_files(Path(os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"])))
    from prefect.settings import PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK, temporary_settings

    from flows.results import save_block

    # Prefect's results (here: the failed try's exception) in the store, as `iea deploy` sets
    with temporary_settings({PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK: save_block()}):
        first = retrain.with_options(retries=1)(DEMO, overrides)
    assert len(calls) == 2 and first["stages"]["jmasa"] == "ran", first["stages"]
    # the retry found preprocess, FGCA and the aligner done: one run each, nothing redone
    assert first["stages"]["preprocess"] == first["stages"]["aligner"] == "skipped (reused)"
    client = mlflow.MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    by_stage = {}
    for r in sorted(runs, key=lambda r: r.info.start_time):
        by_stage.setdefault(r.data.tags.get("stage"), []).append(r.info.status)
    assert by_stage["preprocess"] == by_stage["fgca"] == by_stage["aligner"] == ["FINISHED"]
    assert by_stage["jmasa"] == ["FAILED", "FINISHED"], by_stage

    # the bucket holds every stage's output
    s3, keys = _bucket(s3_endpoint)
    tops = {"/".join(k.split("/")[:2]) for k in keys}
    stages = {
        "datasets/twitter",  # the tweets, versioned, with their GX results
        "datasets/fgca",
        "cache/fgca",  # the LLM's texts per FGCA image
        "cache/segments",  # SAM's masks per image
        "cache/interpretations",  # each region's description and rating
        "cache/align",  # each region's phrase
        "models/aligner",
        "models/jmasa",
    }
    results = {k for k in keys if k.startswith("prefect-results/")}
    assert results, "the failed try persisted no Prefect result in the bucket"
    tops -= {"prefect-results/" + k.split("/")[1] for k in results}
    assert {t for t in tops if not t.startswith("mlflow/")} == stages, sorted(tops)
    for prefix in ("datasets/twitter/synthetic-twitter/", "datasets/fgca/"):  # one version
        assert (
            len({k.removeprefix(prefix).split("/")[0] for k in keys if k.startswith(prefix)}) == 1
        )
    for stage in ("aligner", "jmasa"):
        done = [k for k in keys if k.startswith(f"models/{stage}/") and k.endswith("/result.json")]
        assert len(done) == 1, (stage, done)
    # every object the store wrote names the SHA-256 of its content
    ours = [k for k in keys if not k.startswith("mlflow/")]
    for key in ours:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert head["Metadata"].get("sha256") == hashlib.sha256(body).hexdigest(), key
    # the registered version's weights (the JMASA model and its aligner) are the trained ones,
    # byte for byte
    version = client.get_model_version("iea-jmasa", str(first["version"]))
    where = client.get_model_version_download_uri("iea-jmasa", version.version)
    assert where.startswith(f"s3://{BUCKET}/mlflow/"), where
    inside = where.removeprefix(f"s3://{BUCKET}/") + "/"
    registered = {
        hashlib.sha256(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()).hexdigest()
        for k in keys
        if k.startswith(inside) and k.endswith(".safetensors")
    }
    trained = {
        s3.head_object(Bucket=BUCKET, Key=k)["Metadata"]["sha256"]
        for k in keys
        if k.endswith(".safetensors")
        and k.startswith(
            (
                f"models/jmasa/{version.tags['model.key']}/model/",
                f"models/aligner/{version.tags['aligner.key']}/model/",
            )
        )
    }
    assert len(trained) == 2 and registered == trained, (where, sorted(keys))

    # the local disk: nothing outside the declared caches; the flows persist no Prefect
    # result (each stage's output is in the bucket under its content key)
    assert _files(tmp_path / "cwd") == []
    assert set(_files(Path(os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"]))) <= local_results
    assert sorted({p.relative_to(tmp_path).parts[0] for p in _files(tmp_path)}) == ["caches"]

    # the credentials are nowhere
    canaries = [KEY_ID, SECRET]
    assert files_holding(caches, canaries) == []
    for key in keys:
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert not any(c.encode() in body for c in canaries), key
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        assert not any(c in str(run.data.params) + str(run.data.tags) for c in canaries)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        logs = " ".join(log.message for log in prefect.read_logs())
    assert logs and not any(c in logs for c in canaries)

    # a fresh worker: every local cache wiped, the bucket and the tracking store kept
    shutil.rmtree(caches)
    log = tmp_path / "worker.log"
    with _gpu_pool_worker(log) as handoff:
        try:
            second = retrain(DEMO, [*overrides, f"runtime.handoff={handoff}"])
        except Exception as e:
            raise AssertionError(
                f"handoff failed; the worker's log:\n{log.read_text()[-6000:]}"
            ) from e
    assert second["stages"]["preprocess"] == "skipped (reused)"
    assert second["stages"]["fgca"] == "skipped (reused)"
    assert second["stages"]["aligner"] == "skipped (reused)", second["stages"]
    assert second["stages"]["jmasa"] == "skipped (reused)", second["stages"]
    assert second["stages"]["register"] == "skipped (version exists)"
    assert second["version"] == first["version"]
    assert second["test"] == first["test"]
    # the training stages ran as a run of their deployment, in the worker's process, and their
    # result came back through the bucket
    with get_client(sync_client=True) as prefect:
        (dep,) = [d for d in prefect.read_deployments() if d.name == "jmasa-finetune"]
        runs = prefect.read_flow_runs()
    handed = [r for r in runs if r.deployment_id == dep.id]
    assert len(handed) == 1 and handed[0].state.is_completed(), handed
    errors = [x for x in log.read_text().splitlines() if "| ERROR" in x]
    assert errors == [], errors  # e.g. a result that could not be written
    assert len(_bucket(s3_endpoint)[1]) > len(keys)  # its persisted result, at least
