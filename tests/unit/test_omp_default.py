"""The suite runs with a short OpenMP spin, set by ``tests/conftest.py`` before torch loads and
inherited by every process a test starts (why: ``benchmarks/omp_wait.py``); the product leaves
torch's default alone: ``import iea`` sets nothing."""

from __future__ import annotations

import os
import subprocess
import sys


def _child(code: str, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_importing_iea_leaves_the_spin_setting_alone():
    base = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    assert _child("import iea, os; print(os.environ.get('GOMP_SPINCOUNT'))", base) == "None"


def test_the_suite_and_the_processes_it_starts_run_with_the_short_spin():
    assert os.environ.get("GOMP_SPINCOUNT")  # conftest's setdefault: an explicit value wins
    spin = _child("import os; print(os.environ.get('GOMP_SPINCOUNT'))", dict(os.environ))
    assert spin == os.environ["GOMP_SPINCOUNT"]
    assert "torch" not in _loaded_before_conftest()


def _loaded_before_conftest() -> set[str]:
    """The modules a fresh interpreter holds after what conftest imports before its setdefault
    (``os``, ``pathlib``, ``pytest``): torch must not be among them, or libgomp would have read
    its settings already."""
    code = "import os, pathlib, pytest, sys; print(' '.join(sorted(sys.modules)))"
    return set(_child(code, dict(os.environ)).split())
