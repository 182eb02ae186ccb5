"""Great Expectations suites (``<name>.json``, GX 1.x serialized form) and custom expectations.

GX silently drops expectations of unknown types when a suite is loaded (it logs and carries
on), so :func:`register_custom_expectations` must run before any suite here is loaded, and
loaders should check the loaded count against :data:`EXPECTED_CHECKS`.

This package never imports GX at import time (that takes seconds); only
:func:`register_custom_expectations` does.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

SUITE_DIR: Path = Path(__file__).resolve().parent

# Number of expectations in each suite file; a loaded suite with fewer lost some (unregistered
# custom types).  Keep in step with the JSON files.
EXPECTED_CHECKS: dict[str, int] = {"twitter_canonical": 9, "fgca": 9}


def suite_path(name: str) -> Path:
    """The repo copy of suite ``name``."""
    path = SUITE_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no expectation suite named {name!r}")
    return path


def register_custom_expectations() -> ModuleType:
    """Import :mod:`expectations.custom` and :mod:`expectations.fgca_custom`, registering their
    metrics and expectations with GX; returns the first."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    importlib.import_module(f"{__name__}.fgca_custom")
    return importlib.import_module(f"{__name__}.custom")
