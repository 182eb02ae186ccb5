"""Long work in a flow run shows in the Prefect UI as a progress artifact
(:class:`flows.progress.PrefectProgress`, installed when ``flows`` is imported)."""

from __future__ import annotations

import pytest
from prefect import flow

from iea.progress import report

pytestmark = pytest.mark.flows


@flow
def _work(n: int) -> str:
    from prefect.context import FlowRunContext

    for i in range(1, n + 1):
        report("demo work", i, n)
    return str(FlowRunContext.get().flow_run.id)


def test_a_flow_runs_report_becomes_a_progress_artifact_at_100_percent():
    run_id = _work(50)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    (art,) = [a for a in arts if a.type == "progress"]
    assert float(art.data) == 100.0 and "demo work: 50 of 50" in art.description
