"""Progress of long work (interpretation, training, prediction), told to whoever listens.

The method reports ``report(task, done, total)`` at its natural steps (an image interpreted, an
optimizer step, a batch predicted); it knows nothing of who listens. Listeners are installed
for the process: the CLI's progress bar (``flows/cli.py``) and the Prefect UI's progress
artifacts (``flows/progress.py``). With none installed a report costs one list lookup.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Reporter = Callable[[str, int, "int | None"], None]
"""``(task, done, total)``: ``task`` names the work (``train jmasa``, ``interpret``),
``done`` the units finished so far, ``total`` all of them (None: unknown)."""

_REPORTERS: list[Reporter] = []
_LOCK = threading.Lock()


def report(task: str, done: int, total: int | None = None) -> None:
    """Tell every installed reporter; a reporter that raises is removed, never the work."""
    for r in tuple(_REPORTERS):
        try:
            r(task, done, total)
        except Exception:  # progress must never stop the work it reports on
            remove(r)


def install(reporter: Reporter) -> None:
    with _LOCK:
        if reporter not in _REPORTERS:
            _REPORTERS.append(reporter)


def remove(reporter: Reporter) -> None:
    with _LOCK:
        if reporter in _REPORTERS:
            _REPORTERS.remove(reporter)


@contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """``reporter`` installed for the block."""
    install(reporter)
    try:
        yield reporter
    finally:
        remove(reporter)
