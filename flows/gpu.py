"""The ``gpu`` global concurrency limit (``prefect.yaml``, created by ``iea deploy``): every
stage whose ``pool`` is ``gpu`` (interpretation, aligner and JMASA training) holds one slot
while it works, so no more stages share the devices than the limit allows. A stage on the
``cpu`` pool takes nothing. Without the limit on the server (a local run on a temporary
server) Prefect lets the stage run and warns once.
"""

from __future__ import annotations

import contextlib
import time

from prefect import flow, get_run_logger, task

GPU_LIMIT = "gpu"


@contextlib.contextmanager
def gpu_slot(pool: str, what: str):
    """Hold one slot of the ``gpu`` limit for the block when ``pool`` is ``gpu``.

    Args:
        pool: the stage's pool kind (``cpu`` or ``gpu``).
        what: the stage, for the log line.
    """
    if pool != "gpu":
        yield
        return
    from prefect.concurrency.sync import concurrency

    start = time.monotonic()
    with concurrency(GPU_LIMIT, occupy=1):
        waited = time.monotonic() - start
        if waited > 1:
            get_run_logger().info("%s waited %.0f s for a gpu slot", what, waited)
        yield


@task(name="hold_gpu")
def _hold(seconds: float) -> dict:
    with gpu_slot("gpu", "gpu_check"):
        start = time.time()
        time.sleep(seconds)
        return {"start": start, "end": time.time()}


@flow(name="gpu_check")
def gpu_check(seconds: float = 1.0) -> dict:
    """Hold a ``gpu`` slot for ``seconds`` without work: checks that a worker of the ``gpu``
    pool can take the slot, and that runs queue on it (their held intervals never overlap).

    Returns:
        ``{"start", "end"}``: when the slot was held (epoch seconds).
    """
    return _hold(seconds)
