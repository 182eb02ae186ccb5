"""The ``gpu`` global concurrency limit (``prefect.yaml``, created by ``iea deploy``): every
stage whose ``pool`` is ``gpu`` (interpretation, aligner and JMASA training) holds one slot
while it works, so no more stages share the devices than the limit allows. A stage on the
``cpu`` pool takes nothing. Without the limit on the server (a local run on a temporary
server) Prefect lets the stage run and warns once.

A slot is a lease the holding process renews while it works: when that process dies without
releasing it (SIGKILL, a lost machine), the server takes the slot back once the lease runs out
(:data:`GPU_LEASE_SECONDS`, then the server's repossessor, every 15 s by default) and the next
stage starts.
"""

from __future__ import annotations

import contextlib
import time

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

GPU_LIMIT = "gpu"
GPU_LEASE_SECONDS = 300.0
"""How long a slot outlives a holder that stopped renewing it (the server's minimum is 60)."""


@contextlib.contextmanager
def gpu_slot(
    pool: str, what: str, lease_seconds: float = GPU_LEASE_SECONDS, limit: str = GPU_LIMIT
):
    """Hold one slot of the ``gpu`` limit for the block when ``pool`` is ``gpu``.

    Args:
        pool: the stage's pool kind (``cpu`` or ``gpu``).
        what: the stage, for the log line.
        lease_seconds: how long the slot stays taken after this process stops renewing it.
        limit: the global concurrency limit (``gpu``; another name in tests).
    """
    if pool != "gpu":
        yield
        return
    from prefect.concurrency.sync import concurrency

    start = time.monotonic()
    with concurrency(limit, occupy=1, lease_duration=lease_seconds):
        waited = time.monotonic() - start
        if waited > 1:
            get_run_logger().info("%s waited %.0f s for a gpu slot", what, waited)
        yield


@task(name="hold_gpu", cache_policy=NONE)
def _hold(seconds: float, lease_seconds: float, limit: str) -> dict:
    with gpu_slot("gpu", "gpu_check", lease_seconds, limit):
        start = time.time()
        time.sleep(seconds)
        return {"start": start, "end": time.time()}


@flow(name="gpu_check")
def gpu_check(
    seconds: float = 1.0, lease_seconds: float = GPU_LEASE_SECONDS, limit: str = GPU_LIMIT
) -> dict:
    """Hold a ``gpu`` slot for ``seconds`` without work: checks that a worker of the ``gpu``
    pool can take the slot, and that runs queue on it (their held intervals never overlap).

    Returns:
        ``{"start", "end"}``: when the slot was held (epoch seconds).
    """
    return _hold(seconds, lease_seconds, limit)
