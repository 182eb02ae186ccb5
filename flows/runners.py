"""The task runner that fans a flow's chunks out (``runtime.task_runner``): threads of this
process, or the workers of a Dask cluster through ``prefect-dask``.

With ``dask`` and no ``runtime.dask_address``, each flow run starts a local cluster of
``runtime.dask_workers`` processes (one thread each: distributed sets ``OMP_NUM_THREADS=1`` in
the workers, so torch uses one core per worker) and stops it when the run ends. With an
address, the run's tasks go to that cluster's workers, which need this package installed (the
``worker`` image) and the same environment (store credentials, ``PREFECT_API_URL``). A worker
that dies mid-task has its task run again on another worker by Dask; what the dead one
finished is in the store's content cache.

distributed's nanny writes its workers' settings (``OMP_NUM_THREADS=1``, ``MKL_NUM_THREADS=1``,
``OPENBLAS_NUM_THREADS=1``, ``PYTHONHASHSEED``, ...: ``distributed.nanny.pre-spawn-environ``)
into *this* process's ``os.environ`` before each spawn and never takes them back, so every
process started here afterwards (a training subprocess, a build) ran on one thread. The local
cluster's runner puts those variables back when the run ends.
"""

from __future__ import annotations

import os

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
    return _environ_keeping(DaskTaskRunner)(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": rt.dask_workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        },
    )


_ENVIRON_KEEPING: dict[type, type] = {}


def nanny_environ_keys() -> set[str]:
    """The variables distributed's nanny sets in the spawning process."""
    import dask.config
    import distributed  # noqa: F401  (registers its config defaults on import)

    return {*dask.config.get("distributed.nanny.pre-spawn-environ"), "PYTHONHASHSEED"}


def _environ_keeping(base: type) -> type:
    """``base`` (a Dask task runner) that, on exit, gives the nanny's variables
    (:func:`nanny_environ_keys`) back the values they had on entry."""
    if base not in _ENVIRON_KEEPING:

        class EnvironKeepingDaskTaskRunner(base):
            def __enter__(self):
                self._environ = {k: os.environ.get(k) for k in nanny_environ_keys()}
                return super().__enter__()

            def __exit__(self, *args):
                try:
                    super().__exit__(*args)
                finally:
                    for k, v in self._environ.items():
                        if v is None:
                            os.environ.pop(k, None)
                        else:
                            os.environ[k] = v

        _ENVIRON_KEEPING[base] = EnvironKeepingDaskTaskRunner
    return _ENVIRON_KEEPING[base]
