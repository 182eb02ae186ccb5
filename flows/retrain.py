"""The ``retrain`` flow: the platform's scheduled job, from the data to a promotion decision.

With ``runtime.handoff`` the stages up to registration run as a run of that deployment on its
pool (:mod:`flows.handoff`), this flow waiting for it; without it, in this process:
preprocess (subflow) -> FGCA + aligner (subflow; reused when their inputs did not change) ->
interpret and align the tweets -> NMI -> JMASA fine-tuning -> evaluation -> register (a new
version is ``@challenger``) -> promote (:mod:`flows.promotion`). Every stage is skipped when a
result under its content key exists (the dataset version, the FGCA version, the aligner's and
the JMASA model's keys), so a rerun after a crash continues from the last finished stage, and
fine-tuning from its last checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from iea.config import config_paths, load_settings


def thresholds_config(thresholds_from: str, storage: str, work_dir: Path) -> Path:
    """A config file holding the thresholds ``thresholds_from`` names: an exported YAML of
    the threshold search (used as it is), or a study name in ``storage`` whose best trial is
    exported to ``work_dir/thresholds/<study>.yaml``.

    Raises:
        ValueError: neither a file nor a study with a finished trial in ``storage``.
    """
    path = Path(thresholds_from)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ValueError(f"thresholds_from {thresholds_from!r}: no such file")
        return path
    from flows.thresholds import best_trial, export_yaml, load_study

    try:
        study = load_study(thresholds_from, storage)
        best = best_trial(study)
    except (KeyError, ValueError) as e:
        raise ValueError(f"thresholds_from {thresholds_from!r}: {e.args[0]}") from None
    out = work_dir / "thresholds" / f"{thresholds_from}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(export_yaml(best.params))
    return out


def _state(reused: bool | None) -> str:
    return "skipped (reused)" if reused else "ran"


@flow(name="retrain", log_prints=True)
def retrain(
    config: str | list[str] | None = None,
    overrides: list[str] | None = None,
    thresholds_from: str | None = None,
    promote: bool = True,
) -> dict[str, Any]:
    """Train (or reuse) every stage for the config, register the JMASA model and, with
    ``promote``, decide whether it becomes ``@champion``.

    Returns:
        ``{"stages": {stage: "ran" | "skipped (reused)"}, "version", "uri", "dev", "test",
        "decision", "configs", "run_id", "seconds": {step: wall seconds}}``; ``decision`` is
        None without ``promote``.
    """
    from flows.promotion import promote_version
    from flows.train import jmasa_finetune

    logger = get_run_logger()
    configs = [str(p) for p in config_paths(config)]
    overrides = list(overrides or [])
    settings = load_settings(configs, overrides)  # every config error before any work
    if thresholds_from:
        extra = thresholds_config(
            thresholds_from, settings.search.storage, Path(settings.data.work_dir)
        )
        configs.append(str(extra))
        settings = load_settings(configs, overrides)
        logger.info("thresholds from %s: %s", thresholds_from, settings.filters.model_dump())
    if settings.runtime.handoff:  # the training stages on the gpu pool (flows/handoff.py)
        from flows.handoff import run_stage

        params = {"config": configs, "overrides": overrides, "register": True}
        trained = run_stage(settings.runtime.handoff, params)
    else:
        trained = jmasa_finetune(configs, overrides, register=True)
    aligner = trained["aligner"] or {}
    registered = trained["registered"]
    stages = {
        "preprocess": _state(trained["dataset_reused"]),
        "fgca": _state(aligner.get("fgca_reused")),
        "aligner": _state(aligner.get("reused")),
        "jmasa": _state(trained["reused"]),
        "register": "skipped (version exists)" if registered["reused"] else "ran",
    }
    seconds = dict(trained["seconds"])
    decision = None
    if promote:
        start = time.perf_counter()
        decision = promote_version(configs, overrides, registered["version"])
        seconds["promote"] = time.perf_counter() - start
        stages["promote"] = decision["action"]
    for stage, state in stages.items():
        logger.info("%-10s %s", stage, state)
    logger.info("seconds: %s", ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    return {
        "stages": stages,
        "version": registered["version"],
        "uri": registered["uri"],
        "dev": trained["dev"],
        "test": trained["test"],
        "decision": decision,
        "configs": configs,
        "run_id": trained["run_id"],
        "seconds": seconds,
    }
