"""Locks on the database a job already uses: several Optuna workers claiming trials of one
study (:mod:`flows.study`), several promotions of one registered model
(:mod:`flows.promotion`)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path

_LOCAL_LOCKS: dict[str, threading.Lock] = {}


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)


@contextlib.contextmanager
def named_lock(url: str, name: str) -> Iterator[None]:
    """An exclusive lock called ``name`` on the database at ``url``, held for the block.

    ``sqlite:///PATH``: ``flock`` on ``PATH.<name>.lock`` beside the file (processes on one
    machine, or on a file system with working locks); ``postgresql…``: ``pg_advisory_lock``
    on a key hashed from ``name`` (any machine that reaches the database); any other URL: a
    lock of this process only.
    """
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///") + f".{_safe(name)}.lock")
        with path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    elif url.startswith("postgresql"):
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        finally:
            engine.dispose()
    else:
        with _LOCAL_LOCKS.setdefault(f"{url}#{name}", threading.Lock()):
            yield
