"""Listeners of :mod:`iea.progress`: the Prefect UI's progress artifacts and the CLI's bars.

:class:`PrefectProgress` keeps one progress artifact per task name and flow run (``train jmasa
42%``), created at the first report inside a flow run and updated at most every
``every_s`` seconds, and always at 100%. :class:`ConsoleBars` draws one rich bar per task name
on stderr. Both are installed by ``flows/cli.py`` (the bars only on a terminal).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any


class PrefectProgress:
    """Progress artifacts in the Prefect UI, one per (flow run, task)."""

    def __init__(self, every_s: float = 2.0):
        self.every_s = every_s
        self._artifacts: dict[tuple[str, str], Any] = {}
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def __call__(self, task: str, done: int, total: int | None) -> None:
        if not total:
            return
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        if ctx is None or ctx.flow_run is None:
            return
        key = (str(ctx.flow_run.id), task)
        pct = min(100.0, 100.0 * done / total)
        now = time.monotonic()
        with self._lock:
            if pct < 100.0 and now - self._last.get(key, -1e9) < self.every_s:
                return
            self._last[key] = now
            artifact = self._artifacts.get(key)
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        description = f"{task}: {done} of {total}"
        if artifact is None:
            artifact = create_progress_artifact(pct, description=description)
            with self._lock:
                self._artifacts[key] = artifact
        else:
            update_progress_artifact(artifact, pct, description=description)


class ConsoleBars:
    """One rich progress bar per task name on stderr; a task starting again (a new epoch's
    evaluation) resets its bar."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=sys.stderr),
            transient=False,
        )
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.progress.start()

    def __call__(self, task: str, done: int, total: int | None) -> None:
        with self._lock:
            tid = self._tasks.get(task)
            if tid is None:
                tid = self._tasks[task] = self.progress.add_task(task, total=total)
            elif done < self.progress.tasks[tid].completed:  # started again
                self.progress.reset(tid, total=total)
            self.progress.update(tid, completed=done, total=total)

    def close(self) -> None:
        self.progress.stop()
