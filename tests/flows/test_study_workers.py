"""Several worker processes on one Optuna study (:mod:`flows.study`): against the local
Postgres (a fresh database per test) and sqlite, the study ends with exactly the budget of
finished trials; a worker killed with SIGKILL mid-trial has its trial failed by heartbeat and
retried once with the same parameters; an exception fails one trial with its reason."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest

from flows.study import counts, open_storage, run_worker

pytestmark = pytest.mark.flows
REPO = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent(
    """
    import sys, time, pathlib
    import optuna
    from flows.study import open_storage, run_worker
    url, name, marks = sys.argv[1], sys.argv[2], sys.argv[5]
    budget, hb = int(sys.argv[3]), int(sys.argv[4])
    study = optuna.load_study(study_name=name, storage=open_storage(url, hb))

    def objective(trial):
        x = trial.suggest_int("x", 0, 1000)
        pathlib.Path(marks, f"{trial.number}.start").write_text(str(x))
        time.sleep(float(pathlib.Path(marks, "sleep").read_text()))
        return -abs(x - 400)

    print(run_worker(study, objective, budget, storage_url=url, poll_s=0.2), flush=True)
    """
)


def _start(url: str, name: str, budget: int, marks: Path, hb: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, url, name, str(budget), str(hb), str(marks)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _study(url: str, hb: int = 1) -> optuna.Study:
    """The parent creates the schema and the study once, before any worker starts."""
    name = "s"
    optuna.create_study(
        study_name=name,
        storage=open_storage(url, hb),
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    return optuna.load_study(study_name=name, storage=open_storage(url, hb))


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_two_worker_processes_finish_exactly_the_budget_and_top_up(backend, tmp_path, request):
    url = (
        request.getfixturevalue("pg_url")
        if backend == "postgres"
        else f"sqlite:///{tmp_path / 'optuna.db'}"
    )
    study = _study(url)
    marks = tmp_path / "marks"
    marks.mkdir()
    (marks / "sleep").write_text("0.15")
    workers = [_start(url, "s", 7, marks) for _ in range(2)]
    outs = [w.communicate(timeout=120) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outs]
    per_worker = [int(o[0].split()[-1]) for o in outs]
    assert sum(per_worker) == 7 and min(per_worker) >= 1, per_worker  # both worked, no overshoot
    assert counts(study) == {"COMPLETE": 7}
    # topping up to 10 with two workers again adds exactly 3
    workers = [_start(url, "s", 10, marks) for _ in range(2)]
    outs = [w.communicate(timeout=120) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outs]
    assert sum(int(o[0].split()[-1]) for o in outs) == 3
    assert counts(study) == {"COMPLETE": 10}


def test_a_worker_killed_mid_trial_is_retried_once_with_its_parameters(pg_url, tmp_path):
    study = _study(pg_url)
    marks = tmp_path / "marks"
    marks.mkdir()
    (marks / "sleep").write_text("60")  # the first worker hangs in its trial
    victim = _start(pg_url, "s", 3, marks)
    deadline = time.time() + 60
    while not (marks / "0.start").exists():
        assert time.time() < deadline and victim.poll() is None, victim.communicate()
        time.sleep(0.1)
    time.sleep(1.5)  # a heartbeat or two recorded
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    (marks / "sleep").write_text("0.05")
    t0 = time.time()
    survivor = _start(pg_url, "s", 3, marks)
    out, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err[-2000:]
    trials = study.get_trials()
    assert counts(study) == {"FAIL": 1, "COMPLETE": 3}, counts(study)
    killed = trials[0]
    assert killed.state.name == "FAIL"
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == killed.number)
    assert retry.state.name == "COMPLETE" and retry.params == killed.params
    assert int(out.split()[-1]) == 3  # the retry and two new trials
    assert time.time() - t0 < 60  # stale after 3 heartbeats (3 s), not the victim's 60 s sleep


def test_an_exception_fails_that_trial_with_its_reason_not_the_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = _study(url)

    def objective(trial):
        x = trial.suggest_int("x", 0, 1000)
        if trial.number == 1:
            raise ValueError("region cache unreadable")
        return float(x)

    logs: list[str] = []
    assert run_worker(study, objective, 4, storage_url=url, log=logs.append) == 4
    assert counts(study) == {"COMPLETE": 4, "FAIL": 1}
    failed = study.trials[1]
    assert failed.user_attrs["fail_reason"] == "ValueError: region cache unreadable"
    assert logs == ["trial 1 failed: ValueError: region cache unreadable"]

    def broken(trial):
        raise OSError("disk gone")

    with pytest.raises(RuntimeError, match="3 trials failed in a row.*disk gone"):
        run_worker(study, broken, 10, storage_url=url, max_failures=3)


def test_plots_of_a_study_are_pngs_and_a_plot_that_cannot_be_drawn_says_why(tmp_path):
    from PIL import Image

    from flows.thresholds import PLOTS, THRESHOLDS, write_plots

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    study.optimize(lambda t: sum(t.suggest_float(n, 0, 1) for n in THRESHOLDS) / 3, n_trials=8)
    files, skipped = write_plots(study, tmp_path / "p", {"overlay": Image.new("RGB", (4, 4))})
    assert skipped == {}
    assert sorted(f.stem for f in files) == sorted([*PLOTS, "overlay"])
    for f in files:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 60
    one = optuna.create_study()
    one.optimize(lambda t: t.suggest_float("t_size", 0, 1), n_trials=1)
    files, skipped = write_plots(one, tmp_path / "one")
    assert set(skipped) == {"slice", "contour"}  # they name all three thresholds
    assert "t_clarity does not exist" in skipped["slice"]
    assert (tmp_path / "one" / "history.png") in files


def test_a_pruned_trial_is_told_pruned_and_does_not_count(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = _study(url)

    def objective(trial):
        trial.report(0.1, 1)
        if trial.number in (0, 2):
            raise optuna.TrialPruned("lagging at epoch 1")
        return 1.0

    logs: list[str] = []
    assert run_worker(study, objective, 3, storage_url=url, log=logs.append) == 3
    assert counts(study) == {"PRUNED": 2, "COMPLETE": 3}
    assert logs[0] == "trial 0 pruned: lagging at epoch 1"


def test_best_is_the_feasible_top_f1_and_the_front_trades_f1_for_kept_regions(tmp_path):
    from flows.thresholds import best_trial, pareto_front, write_plots

    study = optuna.create_study(directions=["maximize", "minimize"])
    min_kept = 0.3
    for f1, kept in [(0.8, 0.9), (0.7, 0.5), (0.6, 0.6), (0.9, 0.2), (0.7, 0.5)]:
        study.add_trial(
            optuna.create_trial(
                values=[f1, kept],
                params={"t_size": 0.0},
                distributions={"t_size": optuna.distributions.FloatDistribution(0, 60, step=5)},
                user_attrs={"kept_fraction": kept, "constraint": min_kept - kept},
            )
        )
    assert best_trial(study).number == 0  # trial 3 has F1 0.9 but keeps too few regions
    assert [t.number for t in pareto_front(study)] == [0, 1, 4]  # 2 is dominated by 1
    files, _ = write_plots(study, tmp_path)
    assert "pareto" in {f.stem for f in files} and "history" in {f.stem for f in files}
    study.add_trial(  # the same F1 as trial 0 with fewer regions: best, and on the front
        optuna.create_trial(
            values=[0.8, 0.4],
            params={"t_size": 5.0},
            distributions={"t_size": optuna.distributions.FloatDistribution(0, 60, step=5)},
            user_attrs={"kept_fraction": 0.4, "constraint": min_kept - 0.4},
        )
    )
    assert best_trial(study).number == 5
    assert [t.number for t in pareto_front(study)] == [5]  # it dominates 0, 1 and 4
    lonely = optuna.create_study()
    lonely.add_trial(optuna.create_trial(value=0.5, user_attrs={"constraint": 0.2}))
    with pytest.raises(ValueError, match="none of 1 finished trials is feasible"):
        best_trial(lonely)
