"""``import iea`` sets torch's OpenMP spin default before torch loads, and an explicit setting
wins (:mod:`iea`; why: ``benchmarks/omp_wait.py``)."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = "import iea, os; print(os.environ.get('GOMP_SPINCOUNT'))"


def _probe(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_importing_iea_shortens_the_spin_and_keeps_an_explicit_value():
    assert _probe() == "1000"
    assert _probe(GOMP_SPINCOUNT="300000") == "300000"


def test_the_suite_and_its_children_run_with_it():
    # tests/conftest.py imports ``flows`` (so ``iea``) before torch: the background model
    # build and every subprocess a test starts inherit the setting
    assert os.environ.get("GOMP_SPINCOUNT") is not None
