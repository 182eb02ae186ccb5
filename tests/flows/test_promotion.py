"""Champion / challenger promotion (:mod:`flows.promotion`) on a real sqlite tracking store:
gates, aliases, recorded decisions, rollback, the CLI, and two promotions at once in separate
processes. Versions here are registered from runs that carry the training flow's dev metrics
(no model weights: the smoke prediction of a real model is in ``test_train_flows.py``)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.promotion import metric_gates, promote, rollback
from iea.config import PromotionSettings, load_settings

pytestmark = pytest.mark.flows
REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs" / "demo.yaml")
NAME = "iea-jmasa"


def _overrides(tmp_path: Path) -> list[str]:
    return [
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"tracking.artifact_root={tmp_path / 'artifacts'}",
        f"data.work_dir={tmp_path / 'work'}",
        f"store.root={tmp_path / 'store'}",
        "promotion.smoke_tweets=0",
        "promotion.data_gates=false",
    ]


@pytest.fixture
def settings(tmp_path):
    s = load_settings(DEMO, _overrides(tmp_path))
    mlflow.set_tracking_uri(s.tracking.uri)
    yield s
    mlflow.set_tracking_uri(None)


def register(
    settings, jmasa: float, mate: float = 0.8, masc: float = 0.7, coverage: float = 0.8,
    dataset: str = "d1", status: str = "FINISHED", prefix: str | None = None,
) -> int:  # fmt: skip
    """A version whose run logged the training flow's dev metrics; registered as
    ``@challenger`` like ``flows/train.py`` does."""
    from flows import tracking

    tracking.configure(settings)
    client = mlflow.MlflowClient()
    with mlflow.start_run() as run:
        mlflow.log_metrics(
            {
                "selected/dev_jmasa_f1": jmasa,
                "selected/dev_mate_f1": mate,
                "selected/dev_masc_f1": masc,
                "coverage/dev": coverage,
            }
        )
    if status != "FINISHED":
        client.set_terminated(run.info.run_id, status)
    with contextlib.suppress(mlflow.exceptions.MlflowException):  # exists already
        client.create_registered_model(NAME)
    mv = client.create_model_version(NAME, f"runs:/{run.info.run_id}/jmasa", run.info.run_id)
    client.set_model_version_tag(NAME, mv.version, "dataset.version", dataset)
    if prefix:
        client.set_model_version_tag(NAME, mv.version, "dataset.prefix", prefix)
    client.set_registered_model_alias(NAME, "challenger", mv.version)
    return int(mv.version)


def aliases() -> dict[str, int]:
    model = mlflow.MlflowClient().get_registered_model(NAME)
    return {a: int(v) for a, v in model.aliases.items()}


def tags(version: int) -> dict[str, str]:
    return mlflow.MlflowClient().get_model_version(NAME, str(version)).tags


def test_gates_use_mlflow_thresholds_and_allow_a_guard_to_drop_only_its_tolerance():
    policy = PromotionSettings(min_value=0.3, min_gain=0.0)
    champ = {"dev/jmasa_f1": 0.6, "dev/mate_f1": 0.8, "dev/masc_f1": 0.7, "dev/coverage": 0.8}
    assert metric_gates(policy, {**champ, "dev/jmasa_f1": 0.6}, champ) == []  # equal is enough
    (worse,) = metric_gates(policy, {**champ, "dev/jmasa_f1": 0.59}, champ)
    assert "dev/jmasa_f1" in worse and "0.59" in worse and "0.6" in worse
    assert metric_gates(policy, {**champ, "dev/mate_f1": 0.785}, champ) == []  # within 0.02
    (guard,) = metric_gates(policy, {**champ, "dev/mate_f1": 0.77}, champ)
    assert "dev/mate_f1" in guard
    gain = PromotionSettings(min_gain=0.05)
    (small,) = metric_gates(gain, {**champ, "dev/jmasa_f1": 0.64}, champ)
    assert "minimum absolute change" in small
    assert metric_gates(gain, {**champ, "dev/jmasa_f1": 0.66}, champ) == []
    (floor,) = metric_gates(policy, {"dev/jmasa_f1": 0.2}, None)  # no champion: the floor
    assert "threshold" in floor
    (missing,) = metric_gates(policy, {"dev/mate_f1": 0.9}, None)
    assert "missing" in missing


def test_first_champion_then_a_worse_challenger_is_rejected_with_its_numbers(settings, tmp_path):
    low = register(settings, 0.1)
    s = load_settings(DEMO, [*_overrides(tmp_path), "promotion.min_value=0.3"])
    d = promote(s, low)
    assert d.action == "rejected" and "threshold" in d.reasons[0]
    assert "champion" not in aliases()
    v1 = register(settings, 0.6)
    d1 = promote(s, v1)
    assert d1.action == "promoted" and d1.champion_version is None
    assert aliases() == {"champion": v1}  # and it left @challenger
    v2 = register(settings, 0.55)
    d2 = promote(s, v2)
    assert d2.action == "rejected" and d2.champion_version == v1
    assert aliases()["champion"] == v1 and aliases()["challenger"] == v2
    t = tags(v2)
    assert t["promotion.decision"] == "rejected" and t["promotion.champion_before"] == f"v{v1}"
    assert "dev/jmasa_f1" in t["promotion.reasons"] and "0.55" in t["promotion.reasons"]
    assert t["promotion.candidate.dev/jmasa_f1"] == "0.5500"
    assert t["promotion.champion.dev/jmasa_f1"] == "0.6000"
    run = mlflow.MlflowClient().get_run(t["promotion.run_id"])
    assert run.data.params["action"] == "rejected" and run.data.metrics["champion/dev/jmasa_f1"]
    assert promote(s, v1).action == "unchanged"  # no second event for the champion


def test_a_better_challenger_moves_champion_and_the_old_one_becomes_previous(settings):
    v1 = register(settings, 0.6)
    promote(settings, v1)
    guard = register(settings, 0.7, mate=0.7)  # better F1, MATE dropped by 0.1
    assert promote(settings, guard).action == "rejected"
    assert any("dev/mate_f1" in r for r in tags(guard)["promotion.reasons"].split(" | "))
    other = register(settings, 0.9, dataset="d2")
    d = promote(settings, other)
    assert d.action == "rejected" and "not comparable" in d.reasons[0]
    failed = register(settings, 0.9, status="FAILED")
    assert "not FINISHED" in promote(settings, failed).reasons[0]
    v2 = register(settings, 0.65)
    d = promote(settings, v2)
    assert d.action == "promoted" and "+0.0500 over champion" in d.reasons[0]
    assert aliases() == {"champion": v2, "previous": v1}
    # rollback: champion <- previous, recorded
    r = rollback(settings, reason="bad answers in production")
    assert (r.action, r.version, r.champion_version) == ("rolled_back", v1, v2)
    assert aliases() == {"champion": v1}
    assert tags(v1)["promotion.decision"] == "rolled_back"
    assert "promotion.rolled_back_at" in tags(v2)
    with pytest.raises(ValueError, match="nothing to roll back"):
        rollback(settings)
    # forced: needs a reason, records who and the gates it overrode
    with pytest.raises(ValueError, match="needs --reason"):
        promote(settings, guard, force=True)
    f = promote(settings, guard, force=True, reason="hotfix")
    assert f.action == "forced" and f.reasons[0].startswith("forced by ")
    assert any(r.startswith("(gate) ") for r in f.reasons)
    assert aliases()["champion"] == guard


def test_a_champion_from_other_data_is_rescored_on_the_challengers_before_comparing(settings):
    v1 = register(settings, 0.8, dataset="d1")
    promote(settings, v1)
    v2 = register(settings, 0.7, dataset="d2", prefix="datasets/twitter/demo/d2")
    asked = []

    def rescore(version, prefix):  # the champion on the new data: worse than it was
        asked.append((version, prefix))
        return {"dev/jmasa_f1": 0.65, "dev/mate_f1": 0.8, "dev/masc_f1": 0.7, "dev/coverage": 0.8}

    d = promote(settings, v2, rescore=rescore)
    assert asked == [(v1, "datasets/twitter/demo/d2")]
    assert d.action == "promoted" and d.champion["dev/jmasa_f1"] == 0.65
    assert "re-scored" in d.notes[0] and "re-scored" in tags(v2)["promotion.notes"]


def test_data_gates_read_the_stored_great_expectations_results(settings, tmp_path):
    from iea.store import LocalStore

    store = LocalStore(tmp_path / "gx-store")
    ok, bad = "datasets/twitter/demo/ok", "datasets/twitter/demo/bad"
    store.put(f"{ok}/validation.json", json.dumps({"train": {"success": True}}).encode())
    store.put(f"{bad}/validation.json", json.dumps({"train": {"success": False}}).encode())
    good = register(settings, 0.6, prefix=ok)
    assert promote(settings, good, store=store).action == "promoted"
    failing = register(settings, 0.7, prefix=bad)
    d = promote(settings, failing, store=store)
    assert d.action == "rejected" and "suite failed" in d.reasons[0]
    missing = register(settings, 0.7, prefix="datasets/twitter/demo/none")
    assert "no Great Expectations result" in promote(settings, missing, store=store).reasons[0]


PROMOTER = textwrap.dedent(
    """
    import json, os, sys, time, pathlib
    from flows.promotion import promote
    from iea.config import load_settings
    go, version, overrides = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[4:]
    settings = load_settings(sys.argv[3], overrides)
    (go.parent / f"ready-{os.getpid()}").touch()
    while not go.exists():
        time.sleep(0.01)
    print(json.dumps(promote(settings, version).to_json()), flush=True)
    """
)


def _promote_at_once(tmp_path: Path, versions: list[int]) -> list[dict]:
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROMOTER, str(go), str(v), DEMO, *_overrides(tmp_path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for v in versions
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < len(procs):  # all imported and waiting
        assert time.monotonic() < deadline, "the promoters did not start"
        for p in procs:
            assert p.poll() is None, p.communicate()[1][-2000:]
        time.sleep(0.05)
    go.touch()
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr[-2000:]
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    go.unlink()
    for f in tmp_path.glob("ready-*"):
        f.unlink()
    return out


def test_two_promotions_at_once_end_with_the_better_champion_and_one_event(settings, tmp_path):
    """Separate processes, released together. The same version twice: one promotion, one
    ``unchanged``. Two challengers better than the champion: whichever runs first, the better
    one ends as champion (the second reads the champion again inside the lock)."""
    v1 = register(settings, 0.5)
    promote(settings, v1)
    same = register(settings, 0.6)
    got = sorted(d["action"] for d in _promote_at_once(tmp_path, [same, same]))
    assert got == ["promoted", "unchanged"]
    assert aliases()["champion"] == same
    better, best = register(settings, 0.7), register(settings, 0.8)
    both = _promote_at_once(tmp_path, [best, better])
    assert aliases()["champion"] == best, both
    by_version = {d["version"]: d for d in both}
    assert by_version[best]["action"] == "promoted"
    # the worse one was promoted only if it went first, against the old champion
    if by_version[better]["action"] == "promoted":
        assert by_version[better]["champion_version"] == same
        assert by_version[best]["champion_version"] == better
    else:
        assert by_version[better]["champion_version"] == best


def test_registry_cli_show_promote_rollback(settings, tmp_path):
    runner = CliRunner()
    ov = ["--config", DEMO, *_overrides(tmp_path)]
    v1, v2 = register(settings, 0.6), register(settings, 0.5)
    res = runner.invoke(app, ["registry", "promote", str(v1), *ov])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["action"] == "promoted"
    res = runner.invoke(app, ["registry", "promote", str(v2), *ov])
    assert res.exit_code == 0 and json.loads(res.stdout)["action"] == "rejected"
    assert "dev/jmasa_f1" in res.stderr
    forced = runner.invoke(app, ["registry", "promote", str(v2), "--force", *ov])
    assert forced.exit_code == 1 and "--reason" in forced.stderr
    forced = runner.invoke(app, ["registry", "promote", str(v2), "--force", "--reason", "x", *ov])
    assert forced.exit_code == 0 and json.loads(forced.stdout)["action"] == "forced"
    shown = runner.invoke(app, ["registry", "show", *ov])
    assert shown.exit_code == 0, shown.output
    rows = {r["version"]: r for r in json.loads(shown.stdout)["versions"]}
    assert rows[v2]["aliases"] == "@champion" and rows[v1]["aliases"] == "@previous"
    assert rows[v2]["decision"] == "forced" and "@champion" in shown.stderr
    back = runner.invoke(app, ["registry", "rollback", "--reason", "oops", *ov])
    assert back.exit_code == 0 and json.loads(back.stdout)["version"] == v1
    again = runner.invoke(app, ["registry", "rollback", *ov])
    assert again.exit_code == 1 and "nothing to roll back" in again.stderr
    missing = runner.invoke(app, ["registry", "promote", "99", *ov])
    assert missing.exit_code == 1 and "v99" in missing.stderr
