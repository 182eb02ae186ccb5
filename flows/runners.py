"""The task runner that fans a flow's chunks out (``runtime.task_runner``): threads of this
process, or the workers of a Dask cluster through ``prefect-dask``.

With ``dask`` and no ``runtime.dask_address``, each flow run starts a local cluster of
``runtime.dask_workers`` processes (one thread each: distributed sets ``OMP_NUM_THREADS=1`` in
the workers, so torch uses one core per worker) and stops it when the run ends. With an
address, the run's tasks go to that cluster's workers, which need this package installed (the
``worker`` image) and the same environment (store credentials, ``PREFECT_API_URL``). A worker
that dies mid-task has its task run again on another worker by Dask; what the dead one
finished is in the store's content cache.
"""

from __future__ import annotations

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from iea.config import Settings


def task_runner(settings: Settings, threads: int) -> TaskRunner:
    """The runner ``settings.runtime`` selects; ``threads`` sizes the thread runner."""
    rt = settings.runtime
    if rt.task_runner == "thread":
        return ThreadPoolTaskRunner(max_workers=threads)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise RuntimeError(
            "runtime.task_runner is 'dask' but prefect-dask is not installed: "
            "pip install 'iea[worker]' (or prefect-dask)"
        ) from None
    if rt.dask_address:
        return DaskTaskRunner(address=rt.dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": rt.dask_workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        },
    )
