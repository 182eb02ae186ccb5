"""Shared test set-up: offline switches and the location of the real annotation files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before anything loads torch: the suite runs torch in several processes on the same cores (its
# background model build beside the tests, Dask and Prefect workers), where libgomp's default
# spin has each process's idle threads busy-wait on cores the others need (two 2-thread
# trainings at once: 4.8x one alone's time; 2.1x with this). Not the product's default: it
# slows a lone process's greedy generation about 1.5x (benchmarks/omp_wait.py, BENCHMARKS.md).
# It changes when idle threads sleep, not what they compute. Subprocesses inherit it.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

from flows import set_offline_defaults  # noqa: E402 - after the line above

set_offline_defaults()

XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
"""Worker processes of this run (``pytest -n N``; 1 without xdist, as ``make test`` runs)."""
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
"""``gw0``, ``gw1``, ... in an xdist worker; empty in a run without xdist."""
if XDIST_WORKERS > 1:
    # Each worker takes its share of the cores: torch's default of one thread per core in every
    # worker makes the workers' kernels fight over the same cores (2 workers x 2 threads on 2
    # cores ran slower than 1 x 2). Subprocesses the tests start inherit the variable.
    _threads = max(1, len(os.sched_getaffinity(0)) // XDIST_WORKERS)
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    import torch

    torch.set_num_threads(_threads)

WORLD_MODELS = (
    "tiny-qwen3-vl-interp",
    "tiny-sam-world",
    "tiny-qwen3-fgca",
    "tiny-qwen3-vl",
    "tiny-qwen3",
)
"""The tiny models the model tier builds, costliest first (the order workers take them in)."""

REPO = Path(__file__).resolve().parents[1]
TWITTER = REPO.parent / "shared" / "data" / "twitter"


@pytest.fixture(scope="session")
def twitter_root() -> Path:
    """``../shared/data/twitter`` (the real annotation files); skips when it is absent."""
    if not TWITTER.is_dir():
        pytest.skip(f"real Twitter annotations not found at {TWITTER}")
    return TWITTER


def _model_cache_dir(config: pytest.Config) -> Path:
    """Where this run's tiny models are built: ``$IEA_TEST_MODEL_CACHE`` when set (reused
    between runs), else ``model-cache`` in the run's temporary folder, which xdist workers
    share (their own folders are ``popen-gwN`` inside the controller's)."""
    reuse = os.environ.get("IEA_TEST_MODEL_CACHE")
    if reuse:
        return Path(reuse)
    base = config._tmp_path_factory.getbasetemp()  # pytest's session temp folder
    return (base.parent if XDIST_WORKER else base) / "model-cache"


def _needs_models(item: pytest.Item) -> bool:
    return item.get_closest_marker("model") is not None


def pytest_collection_modifyitems(session, config, items):
    """Files without tiny-model tests first (in their order), then the files with them: the
    unit, data, service and fault tests run while the tiny models build in the background
    (:func:`_start_background_build`). A file stays whole, so its module fixtures set up once
    and xdist's ``--dist loadfile`` keeps it on one worker."""
    late = {item.path for item in items if _needs_models(item)}
    items.sort(key=lambda item: item.path in late)  # stable: the order within each part stays


_BUILD: dict = {}
"""The background build process of this run, if one was started."""


def pytest_collection_finish(session):
    """Start building the :data:`WORLD_MODELS` in a background process as soon as the
    collected tests are known to need them (one process per run: xdist worker ``gw0``)."""
    if XDIST_WORKER not in ("", "gw0") or session.config.option.collectonly:
        return
    if any(_needs_models(item) for item in session.items):
        _start_background_build(_model_cache_dir(session.config))


def _start_background_build(cache: Path) -> None:
    """``prepare_tiny(WORLD_MODELS)`` into ``cache`` in a child process (its log:
    ``<cache>/background-build.log``). Tests that need a model take its lock and wait for it
    (:func:`iea.models.refs.ensure_tiny`), so nothing is built twice; a build that fails here
    is retried, with its error, by the first test that needs the model."""
    import subprocess
    import sys

    from iea.models.refs import is_built

    if all(is_built(name, cache=cache) for name in WORLD_MODELS):
        return
    cache.mkdir(parents=True, exist_ok=True)
    code = (
        "import sys; from iea.models.refs import prepare_tiny; "
        f"prepare_tiny({list(WORLD_MODELS)!r}, cache=sys.argv[1], progress=print)"
    )
    with open(cache / "background-build.log", "ab") as log:  # the child keeps its own copy
        _BUILD["proc"] = subprocess.Popen(
            [sys.executable, "-c", code, str(cache)], cwd=REPO, stdout=log, stderr=log
        )


def pytest_sessionfinish(session, exitstatus):
    """Stop a background build still running (a run that stopped early)."""
    proc = _BUILD.pop("proc", None)
    if proc is not None and proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def model_cache(request) -> Path:
    """The session-wide cache where ``tiny-*`` models are built once (:func:`_model_cache_dir`:
    ``$IEA_TEST_MODEL_CACHE`` names a folder to reuse between runs; a changed recipe still
    rebuilds, as its folder name holds its source hash). The :data:`WORLD_MODELS` are already
    building in the background when the first test asks for it
    (:func:`pytest_collection_finish`); under xdist each worker also builds, before its first
    model test, the ones no other process is building (``prepare_tiny(skip_busy=True)``)."""
    path = _model_cache_dir(request.config)
    path.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("IEA_MODEL_CACHE")
    os.environ["IEA_MODEL_CACHE"] = str(path)
    if XDIST_WORKERS > 1:
        from iea.models.refs import prepare_tiny

        prepare_tiny(WORLD_MODELS, cache=path, skip_busy=True)
    yield path
    if old is None:
        os.environ.pop("IEA_MODEL_CACHE", None)
    else:
        os.environ["IEA_MODEL_CACHE"] = old


def _files_holding(root: Path, needles: list[str]) -> list[str]:
    """``path: needle`` for every file under ``root`` whose bytes contain a needle."""
    hits = []
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits += [f"{path}: {n}" for n in needles if n.encode() in data]
    return hits


@pytest.fixture(scope="session")
def files_holding():
    """``files_holding(root, needles)``: the files under ``root`` that contain any needle
    (the canary checks: a credential must be written nowhere)."""
    return _files_holding


PG = "postgresql://postgres@127.0.0.1:5432"
"""The local Postgres server (trust auth); tests that need it skip where it is absent."""


def _pg_available() -> bool:
    try:
        import psycopg2

        psycopg2.connect(f"{PG}/postgres", connect_timeout=3).close()
        return True
    except Exception:
        return False


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """``host:port`` of an S3-protocol server on loopback (moto's server mode), for the module."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def pg_url():
    """A fresh Postgres database, dropped afterwards."""
    if not _pg_available():
        pytest.skip("no Postgres at 127.0.0.1:5432")
    import uuid

    import psycopg2

    name = f"iea_test_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(f"{PG}/postgres")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield f"{PG}/{name}"
    finally:
        cur = admin.cursor()
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


@pytest.fixture
def sigkill_when():
    """``sigkill_when(proc, ready, timeout)``: poll ``ready()`` while the process started
    with ``start_new_session=True`` runs, then SIGKILL its process group; fails when it ended
    (with its stderr) or ``ready`` never held in ``timeout`` seconds."""
    import signal
    import time

    def kill(proc, ready, timeout: float = 240.0, poll: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                if ready():
                    break
                time.sleep(poll)
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)

    return kill
