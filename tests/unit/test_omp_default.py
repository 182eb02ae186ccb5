"""The suite's background model build runs with a short OpenMP spin
(``tests/conftest.py``; why: ``benchmarks/omp_wait.py``), and nothing else is changed: ``import
iea`` leaves torch's threading settings alone."""

from __future__ import annotations

import os
import subprocess
import sys


def test_importing_iea_leaves_the_spin_setting_alone():
    base = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    out = subprocess.run(
        [sys.executable, "-c", "import iea, os; print(os.environ.get('GOMP_SPINCOUNT'))"],
        env=base,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"


def test_the_background_build_gets_a_short_spin_and_an_explicit_value_wins(tmp_path, monkeypatch):
    import tests.conftest as conftest

    started, real = [], subprocess.Popen

    def fake_popen(cmd, **kwargs):  # the build's start is recorded, anything else runs
        if "prepare_tiny" not in " ".join(map(str, cmd)):
            return real(cmd, **kwargs)
        started.append(kwargs["env"])

    monkeypatch.setattr(subprocess, "Popen", fake_popen)
    monkeypatch.setattr("iea.models.refs.is_built", lambda name, cache: False)
    monkeypatch.setitem(conftest._BUILD, "proc", None)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    conftest._start_background_build(tmp_path / "a")
    monkeypatch.setenv("GOMP_SPINCOUNT", "300000")
    conftest._start_background_build(tmp_path / "b")
    assert [e["GOMP_SPINCOUNT"] for e in started] == ["1000", "300000"]
