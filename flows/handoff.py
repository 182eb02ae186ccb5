"""Handing a stage to another work pool: the ``retrain`` flow (on the ``cpu`` pool) runs its
training stages (``jmasa_finetune``: interpretation, the aligner, JMASA fine-tuning) as a run
of their deployment on the ``gpu`` pool (``runtime.handoff``), waits for it as a subflow, and
reads its result from Prefect's result storage, the store (:mod:`flows.results`). The
deployment's run persists its result because ``iea deploy`` sets
``PREFECT_RESULTS_PERSIST_BY_DEFAULT`` in every deployment's environment.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger


class HandoffFailed(RuntimeError):
    """The handed-off run did not complete."""


def run_stage(deployment: str, parameters: dict[str, Any], poll_s: float = 2.0) -> Any:
    """Run ``deployment`` (``flow/name``) with ``parameters`` as a subflow of the current flow
    run, wait for it, and return its result.

    Raises:
        HandoffFailed: the run ended in another state than Completed (names it and why).
    """
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    logger.info("handing off to %s", deployment)
    run = run_deployment(
        deployment, parameters=parameters, timeout=None, poll_interval=poll_s, as_subflow=True
    )
    if not run.state.is_completed():
        raise HandoffFailed(
            f"{deployment}: flow run {run.name} ({run.id}) ended {run.state.type.value}: "
            f"{run.state.message or 'no message'}"
        )
    logger.info("%s: flow run %s completed", deployment, run.name)
    return run.state.result()
