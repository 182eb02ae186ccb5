"""Prefect's result storage in the project's store: what Prefect persists of a flow or task run
(a return value, or the exception of a failed try that a retry follows) is put under
``prefect-results/`` of the same store as the data and models (the bucket, with S3), never on
the worker's disk.

:class:`StoreResults` holds no setting and no credential: at each read or write it takes the
store from the settings of the flow run in progress (its ``config`` and ``overrides``
parameters, which every flow of :mod:`flows` has), and the credentials from the environment,
like the rest of the run. ``iea deploy`` saves it on the server as :data:`RESULTS_BLOCK` and
sets it as the default result storage, with persistence on (:data:`RESULTS_ENV`), in every
deployment's environment, so a worker's flow runs persist there (Prefect refuses an unsaved
block as a flow's ``result_storage``, hence the server-side default).
"""

from __future__ import annotations

import asyncio

from prefect.filesystems import WritableFileSystem

RESULTS_PREFIX = "prefect-results"
RESULTS_BLOCK = "iea-store-results/iea"
"""The saved block's slug: ``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK``'s value."""
RESULTS_ENV = {
    "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": RESULTS_BLOCK,
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
    "PREFECT_TASKS_DEFAULT_PERSIST_RESULT": "false",
}
"""What ``iea deploy`` sets in every deployment's environment: flow runs persist their results
(a flow handed off to another pool returns its result through them), in the store; tasks do
not (a persisted task result turns on Prefect's input-keyed task cache, which would hand a
later run the path of a staging folder long removed: the stages reuse work by content keys
of their own)."""


class StoreResults(WritableFileSystem):
    """Prefect results under ``prefect-results/<key>`` of the current run's store."""

    _block_type_name = "IEA store results"
    _block_type_slug = "iea-store-results"

    def _store(self):
        from prefect.runtime import flow_run

        from iea.config import load_settings
        from iea.store import open_store

        params = flow_run.parameters or {}
        settings = load_settings(params.get("config"), params.get("overrides") or [])
        return open_store(settings.store)

    def read_path(self, path: str, _sync: bool | None = None) -> bytes:
        """``_sync``: Prefect's call convention for sync-compatible blocks (these are sync)."""
        return self._store().get(f"{RESULTS_PREFIX}/{path}")

    def write_path(self, path: str, content: bytes, _sync: bool | None = None) -> str:
        self._store().put(f"{RESULTS_PREFIX}/{path}", content)
        return path

    async def aread_path(self, path: str) -> bytes:
        return await asyncio.to_thread(self.read_path, path)

    async def awrite_path(self, path: str, content: bytes) -> str:
        return await asyncio.to_thread(self.write_path, path, content)


def save_block(slug: str = RESULTS_BLOCK) -> str:
    """Register the block type and save the block as ``slug`` on the current Prefect server
    (again: the same block); returns ``slug``."""
    StoreResults.register_type_and_schema()
    StoreResults().save(slug.split("/", 1)[1], overwrite=True)
    return slug
