"""Champion / challenger promotion of registered JMASA versions, with gates, and rollback.

A new ``iea-jmasa`` version is registered as ``@challenger`` (``flows/train.py``).
:func:`promote` decides whether it becomes ``@champion``, under a lock on the tracking store
(:func:`flows.locks.named_lock`: ``flock`` beside a sqlite store, ``pg_advisory_lock`` on
Postgres) inside which the champion is read again, so two promotions at once end with the better
model as champion and never both promote against the same champion. MLflow aliases are
last-writer-wins on their own.

The gates, from ``settings.promotion`` (:class:`iea.config.PromotionSettings`), each checked with
MLflow's ``validate_evaluation_results`` and a ``MetricThreshold`` where that fits:

* the version's run FINISHED;
* ``metric`` (dev JMASA F1) at least ``min_value``, and at least the champion's + ``min_gain``
  (``MetricThreshold.min_absolute_change`` when the gain is above 0; MLflow refuses a gain of 0,
  so "at least equal" is an absolute threshold at the champion's value);
* each guard metric no more than its tolerance below the champion's (an absolute threshold at
  the champion's value minus the tolerance: MLflow's relative checks cannot allow a drop);
* the GX results stored with the version's datasets (tweets, FGCA) passed;
* a smoke prediction: the registered pyfunc, loaded in a fresh process, answers a few dev
  tweets with the same pairs as the model loaded in this process;
* champion and challenger compared on the same data: a champion scored on another dataset
  version is re-scored first on the candidate's dev split with its own pipeline
  (:func:`rescore_check`), and the decision notes it.

With no champion, the first version passing the absolute gates becomes champion. The decision
(promoted or rejected, every reason, the numbers) is written as tags on the version
(``promotion.*``), as an MLflow run ``promotion[NAME vN]`` with ``decision.json``, and, inside
a Prefect flow, as a markdown artifact. On promotion the old champion becomes ``@previous`` and
the version leaves ``@challenger``; a rejected version keeps ``@challenger``.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.models import EvaluationResult, MetricThreshold
from mlflow.models.evaluation.validation import ModelValidationFailedException
from prefect import flow

from flows import tracking
from flows.locks import named_lock
from iea.config import PromotionSettings, Settings, saved_settings

NAME = "iea-jmasa"
CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"


@dataclass
class Decision:
    """What :func:`promote` or :func:`rollback` did, and why."""

    name: str
    version: int
    action: str
    """``promoted``, ``rejected``, ``forced``, ``rolled_back`` or ``unchanged``."""
    reasons: list[str]
    candidate: dict[str, float] = field(default_factory=dict)
    champion_version: int | None = None
    """The champion before the decision."""
    champion: dict[str, float] = field(default_factory=dict)
    """The champion's metrics the candidate was compared with."""
    run_id: str | None = None
    at: str = ""
    notes: list[str] = field(default_factory=list)
    """What else happened (a champion re-scored on the candidate's data)."""

    @property
    def promoted(self) -> bool:
        return self.action in ("promoted", "forced", "rolled_back")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "promoted": self.promoted}

    def markdown(self) -> str:
        """The decision as a short markdown page (the Prefect artifact)."""
        lines = [
            f"# {self.name} v{self.version}: {self.action}",
            "",
            f"Champion before: {_v(self.champion_version)}",
            "",
            "| metric | candidate | champion |",
            "|---|---|---|",
        ]
        for k in sorted(set(self.candidate) | set(self.champion)):
            c, b = self.candidate.get(k), self.champion.get(k)
            lines.append(f"| {k} | {_fmt(c)} | {_fmt(b)} |")
        lines += ["", "Reasons:", *[f"- {r}" for r in self.reasons]]
        if self.notes:
            lines += ["", "Notes:", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"


def _v(version: int | None) -> str:
    return f"v{version}" if version else "none"


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4f}"


def version_metrics(client: mlflow.MlflowClient, run_id: str) -> dict[str, float]:
    """The dev metrics of a JMASA training run, named as the policy names them:
    ``dev/<k>`` from ``selected/dev_<k>`` and ``dev/coverage`` from ``coverage/dev``."""
    m = client.get_run(run_id).data.metrics
    sel = "selected/dev_"
    out = {f"dev/{k.removeprefix(sel)}": v for k, v in m.items() if k.startswith(sel)}
    if "coverage/dev" in m:
        out["dev/coverage"] = m["coverage/dev"]
    return out


def metric_gates(
    policy: PromotionSettings, candidate: dict[str, float], champion: dict[str, float] | None
) -> list[str]:
    """The failed metric gates of ``candidate`` against ``champion`` (None: no champion yet,
    only the absolute floor), one message each from MLflow's validation."""
    th: dict[str, MetricThreshold] = {}
    main = champion.get(policy.metric) if champion else None
    if main is not None and policy.min_gain > 0:
        th[policy.metric] = MetricThreshold(
            threshold=policy.min_value, min_absolute_change=policy.min_gain, greater_is_better=True
        )
    else:
        floor = policy.min_value if main is None else max(policy.min_value, main)
        th[policy.metric] = MetricThreshold(threshold=floor, greater_is_better=True)
    if champion:
        for name, tol in policy.guards.items():
            if name in champion:
                th[name] = MetricThreshold(threshold=champion[name] - tol, greater_is_better=True)
    cand = EvaluationResult(metrics=candidate, artifacts={})
    base = EvaluationResult(metrics=champion, artifacts={}) if champion else None
    failed = []
    for name, t in th.items():
        try:
            mlflow.validate_evaluation_results({name: t}, cand, base)
        except ModelValidationFailedException as e:
            failed.append(e.message)
    return failed


def data_gates(store, tags: dict[str, str]) -> list[str]:
    """The failed data gates of a version: the GX results stored beside its tweet dataset
    (``dataset.prefix`` tag) and its FGCA (``fgca.version``) must exist and have passed."""
    failed = []
    checks = []
    if "dataset.prefix" in tags:
        checks.append(("tweets", f"{tags['dataset.prefix']}/validation.json"))
    else:
        failed.append("data gate: the version has no dataset.prefix tag (registered before it)")
    if "fgca.version" in tags:
        checks.append(("FGCA", f"datasets/fgca/{tags['fgca.version']}/validation.json"))
    for what, key in checks:
        if not store.exists(key):
            failed.append(f"data gate: no Great Expectations result for the {what} at {key}")
            continue
        result = json.loads(store.get(key).decode())
        parts = result.values() if "success" not in result else [result]
        if not all(p.get("success") for p in parts):
            failed.append(f"data gate: the {what}' Great Expectations suite failed ({key})")
    return failed


def smoke_gate(uri: str, rows: list[dict[str, str]], expected: list[list[dict]]) -> list[str]:
    """Load ``uri`` as a pyfunc in a fresh Python process, answer ``rows`` (``image``,
    ``text``) and compare each answer's pairs with ``expected``; the failures."""
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp, "in.json"), Path(tmp, "out.json")
        inp.write_text(json.dumps(rows))
        cmd = [sys.executable, "-m", "flows.smoke", uri, str(inp), str(out)]
        env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return [f"smoke: the registered pyfunc failed in a fresh process: {' | '.join(tail)}"]
        got = json.loads(out.read_text())
    failed = []
    for i, (row, g, e) in enumerate(zip(rows, got, expected, strict=True)):
        if g["pairs"] != e:
            failed.append(
                f"smoke: tweet {i} ({row['text'][:60]!r}): the pyfunc answered {g['pairs']},"
                f" the model in process {e}"
            )
    return failed


def _alias(client: mlflow.MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None


def promote(
    settings: Settings,
    version: int,
    *,
    name: str = NAME,
    force: bool = False,
    reason: str | None = None,
    smoke: Callable[[int], list[str]] | None = None,
    store=None,
    rescore: Callable[[int, str], dict[str, float]] | None = None,
) -> Decision:
    """Decide whether ``name`` version ``version`` becomes ``@champion`` (module doc).

    ``smoke(version)`` runs the smoke prediction and returns its failures (None: none is run);
    ``store`` is the artifact store holding the datasets' GX results (None: no data gates).
    ``rescore(champion_version, dataset_prefix)`` scores the champion on the dev split of the
    candidate's dataset when the two were scored on different dataset versions (None: such a
    champion fails the comparability gate).
    ``force`` promotes whatever the gates say and records who (the environment's user) and
    ``reason``.

    Raises:
        ValueError: no such version, or ``force`` without ``reason``.
    """
    if force and not reason:
        raise ValueError("a forced promotion needs --reason: it is recorded with the decision")
    tracking.configure(settings)
    client = mlflow.MlflowClient()
    policy = settings.promotion
    try:
        mv = client.get_model_version(name, str(version))
    except mlflow.exceptions.MlflowException as e:
        raise ValueError(f"{name} v{version}: {e.message}") from None
    with named_lock(settings.tracking.uri, f"promotion-{name}"):
        champ = _alias(client, name, CHAMPION)  # read again inside the lock
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        if champ is not None and int(champ.version) == version:
            return Decision(
                name, version, "unchanged", [f"v{version} is already @champion"], {}, version
            )
        reasons: list[str] = []
        run = client.get_run(mv.run_id)
        if run.info.status != "FINISHED":
            reasons.append(f"run {mv.run_id} is {run.info.status}, not FINISHED")
        candidate = version_metrics(client, mv.run_id)
        champion = version_metrics(client, champ.run_id) if champ is not None else {}
        notes: list[str] = []
        if champ is not None:
            ours, theirs = mv.tags.get("dataset.version"), champ.tags.get("dataset.version")
            prefix = mv.tags.get("dataset.prefix")
            if ours != theirs and (rescore is None or prefix is None):
                reasons.append(
                    f"champion v{champ.version} was scored on dataset version {theirs}, this one"
                    f" on {ours}: not comparable"
                    + (" (the version has no dataset.prefix tag)" if rescore else "")
                )
            elif ours != theirs:
                champion = rescore(int(champ.version), prefix)
                notes.append(
                    f"champion v{champ.version} (scored on dataset version {theirs}) re-scored on"
                    f" this version's dev split, dataset version {ours}"
                )
        reasons += metric_gates(policy, candidate, champion if champ is not None else None)
        if store is not None:
            reasons += data_gates(store, dict(mv.tags))
        if smoke is not None and not reasons:  # the costly check last, only when it can matter
            reasons += smoke(version)
        if force:
            action = "forced"
            reasons = [f"forced by {_who()}: {reason}", *[f"(gate) {r}" for r in reasons]]
        elif reasons:
            action = "rejected"
        else:
            action = "promoted"
            gain = candidate.get(policy.metric, float("nan")) - champion.get(policy.metric, 0.0)
            reasons = [
                f"{policy.metric} {candidate.get(policy.metric, float('nan')):.4f}"
                + (
                    f", {gain:+.4f} over champion v{champ.version}"
                    if champ is not None
                    else " (first champion)"
                )
                + "; every gate passed"
            ]
        decision = Decision(
            name,
            version,
            action,
            reasons,
            candidate,
            int(champ.version) if champ is not None else None,
            champion,
            at=now,
            notes=notes,
        )
        if decision.promoted:
            if champ is not None:
                client.set_registered_model_alias(name, PREVIOUS, champ.version)
            client.set_registered_model_alias(name, CHAMPION, str(version))
            challenger = _alias(client, name, CHALLENGER)
            if challenger is not None and int(challenger.version) == version:
                client.delete_registered_model_alias(name, CHALLENGER)
        _record(settings, client, decision)
    return decision


def rollback(settings: Settings, *, name: str = NAME, reason: str | None = None) -> Decision:
    """``@champion`` back to ``@previous`` (recorded like a promotion); the rolled-back
    version loses its alias and ``@previous`` is cleared.

    Raises:
        ValueError: no ``@champion`` or no ``@previous`` to go back to.
    """
    tracking.configure(settings)
    client = mlflow.MlflowClient()
    with named_lock(settings.tracking.uri, f"promotion-{name}"):
        champ, prev = _alias(client, name, CHAMPION), _alias(client, name, PREVIOUS)
        if champ is None or prev is None:
            raise ValueError(
                f"{name}: nothing to roll back to (@champion "
                f"{'v' + str(champ.version) if champ else 'unset'}, @previous unset)"
            )
        client.set_registered_model_alias(name, CHAMPION, prev.version)
        client.delete_registered_model_alias(name, PREVIOUS)
        decision = Decision(
            name,
            int(prev.version),
            "rolled_back",
            [
                f"rollback by {_who()}: v{champ.version} -> v{prev.version}"
                + (f": {reason}" if reason else "")
            ],
            version_metrics(client, prev.run_id),
            int(champ.version),
            version_metrics(client, champ.run_id),
            at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        client.set_model_version_tag(name, champ.version, "promotion.rolled_back_at", decision.at)
        _record(settings, client, decision)
    return decision


def _who() -> str:
    try:
        return os.environ.get("IEA_USER") or getpass.getuser()
    except Exception:  # no user name in a container: say so rather than fail
        return "unknown user"


def _record(settings: Settings, client: mlflow.MlflowClient, d: Decision) -> None:
    """The decision as version tags, an MLflow run (``decision.json``) and, inside a Prefect
    flow run, a markdown artifact."""
    with tracking.start_run(
        settings,
        f"promotion[{d.name} v{d.version}]",
        tags={"stage": "promotion", "promotion.action": d.action},
    ) as run:
        mlflow.log_params(
            {
                "model": d.name,
                "version": d.version,
                "action": d.action,
                "champion_before": d.champion_version or "none",
            }
        )
        mlflow.log_metrics({f"candidate/{k}": v for k, v in d.candidate.items()})
        mlflow.log_metrics({f"champion/{k}": v for k, v in d.champion.items()})
        d.run_id = run.info.run_id
        mlflow.log_dict(d.to_json(), "decision.json")
    tags = {
        "promotion.decision": d.action,
        "promotion.reasons": " | ".join(d.reasons)[:4900],
        "promotion.at": d.at,
        "promotion.champion_before": _v(d.champion_version),
        "promotion.run_id": d.run_id,
        **({"promotion.notes": " | ".join(d.notes)[:4900]} if d.notes else {}),
        **{f"promotion.candidate.{k}": f"{v:.4f}" for k, v in d.candidate.items()},
        **{f"promotion.champion.{k}": f"{v:.4f}" for k, v in d.champion.items()},
    }
    for k, v in tags.items():
        client.set_model_version_tag(d.name, str(d.version), k, v)
    try:
        from prefect.artifacts import create_markdown_artifact
        from prefect.context import FlowRunContext

        if FlowRunContext.get() is not None:
            create_markdown_artifact(
                markdown=d.markdown(),
                key=f"promotion-{d.name}-v{d.version}".lower(),
                description=f"{d.name} v{d.version}: {d.action}",
            )
    except ImportError:
        pass


def registry_table(settings: Settings, name: str = NAME) -> list[dict[str, Any]]:
    """Every version of ``name``, newest first: aliases, run status, dev and test JMASA F1,
    the last promotion decision and its reasons."""
    tracking.configure(settings)
    client = mlflow.MlflowClient()
    aliases: dict[str, list[str]] = {}
    try:
        for alias, v in client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(v), []).append(alias)
    except mlflow.exceptions.MlflowException:
        return []
    rows = []
    for mv in sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: -int(v.version)):
        run = client.get_run(mv.run_id) if mv.run_id else None
        m = run.data.metrics if run else {}
        rows.append(
            {
                "version": int(mv.version),
                "aliases": sorted(aliases.get(str(mv.version), [])),
                "status": run.info.status if run else "no run",
                "dev_jmasa_f1": m.get("selected/dev_jmasa_f1"),
                "test_jmasa_f1": m.get("test/jmasa_f1"),
                "ablation": mv.tags.get("ablation"),
                "dataset": mv.tags.get("dataset.version"),
                "decision": mv.tags.get("promotion.decision"),
                "reasons": mv.tags.get("promotion.reasons"),
                "at": mv.tags.get("promotion.at"),
            }
        )
    return rows


def smoke_check(settings: Settings, name: str = NAME) -> Callable[[int], list[str]]:
    """The smoke prediction of a version: ``settings.promotion.smoke_tweets`` dev tweets of
    the version's own dataset, answered by the model loaded here and by the registered pyfunc
    in a fresh process (:func:`smoke_gate`)."""

    def run(version: int) -> list[str]:
        from flows.preprocess import prepare_source, split_tweets
        from flows.registry import download_dir, resolve
        from iea.predict import JmasaPredictor

        uri = f"models:/{name}/{version}"
        reg = resolve(uri, download_dir(settings.data.work_dir, uri))
        prefix = reg.tags.get("dataset.prefix")
        if prefix is None:
            return ["smoke: the version has no dataset.prefix tag: no tweets to ask it"]
        trained = saved_settings(reg.trained_settings)
        tweets = split_tweets(trained.store, prefix, "dev")
        _, images = prepare_source(trained)
        rows = [
            {"image": str(Path(images) / t.image_id), "text": " ".join(t.tokens)}
            for t in tweets[: settings.promotion.smoke_tweets]
        ]
        here = JmasaPredictor(trained, reg.model_dir, reg.aligner_dir)
        expected = [here.predict(r["image"], r["text"])["pairs"] for r in rows]
        return smoke_gate(reg.uri, rows, expected)

    return run


def rescore_check(settings: Settings, name: str = NAME) -> Callable[[int, str], dict]:
    """Score a registered version on the dev split stored at a dataset prefix, with its own
    pipeline (its aligner, interpreter, segmentation and filter settings) on the cached stages
    (:func:`flows.thresholds.gather_regions`): the metrics :func:`version_metrics` names, for
    comparing a champion with a challenger trained on newer data."""

    def run(version: int, dataset_prefix: str) -> dict[str, float]:
        import logging

        from flows.preprocess import split_tweets
        from flows.thresholds import THRESHOLDS, _registered, model_evaluator
        from iea.vision.filters import Thresholds

        model = _registered(settings, f"models:/{name}/{version}", logging.getLogger(__name__))
        own = saved_settings(json.loads((Path(model["model_dir"]) / "config.json").read_text()))
        here = {"store": settings.store, "data": settings.data, "runtime": settings.runtime}
        mixed = own.model_copy(update=here)  # its pipeline, this machine's data and caches
        tweets = split_tweets(settings.store, dataset_prefix, "dev")
        ablation = settings.search.ablation  # the model's own: _registered checked it
        evaluate = model_evaluator(mixed, model, tweets, ablation)
        th = Thresholds(**{n: getattr(own.filters, n) for n in THRESHOLDS})
        res = evaluate(th)
        return {
            **{f"dev/{k}": v for k, v in res.metrics.items()},
            "dev/coverage": evaluate.split.coverage(th),
        }

    return run


@flow(name="promote", log_prints=True)
def promote_version(
    config: str | list[str] | None,
    overrides: list[str] | None,
    version: int,
    force: bool = False,
    reason: str | None = None,
    name: str = NAME,
) -> dict[str, Any]:
    """:func:`promote` with every gate of the config's policy (data gates on the config's
    store, the smoke prediction unless ``promotion.smoke_tweets`` is 0); the decision as JSON."""
    from iea.config import load_settings
    from iea.store import open_store

    settings = load_settings(config, overrides or [])
    policy = settings.promotion
    decision = promote(
        settings,
        version,
        name=name,
        force=force,
        reason=reason,
        smoke=smoke_check(settings, name) if policy.smoke_tweets and not force else None,
        store=open_store(settings.store) if policy.data_gates else None,
        rescore=rescore_check(settings, name),
    )
    return decision.to_json()
