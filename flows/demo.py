"""``make demo``: the platform's three jobs on the demo world, and a report of what they made.

1. ``retrain`` (:mod:`flows.retrain`): every stage trained (or reused), the JMASA model
   registered and promoted by the gates (the first version that passes becomes champion);
2. a short threshold search (:mod:`flows.thresholds`) on the champion's cached stages;
3. ``retrain`` again with the best thresholds the search found other than the config's (a
   changed setting): the new version is compared with the champion by the gates, promoted or
   rejected with its reasons;
4. ``retrain`` a third time with that recipe cut to ``short_epochs`` epochs of fine-tuning
   (every other stage reused): a cheaper recipe the gates judge like any other; on the demo it
   is worse on dev and is rejected, so the report shows both outcomes;
5. ``batch_predict`` (:mod:`flows.batch`) of the test tweets with whatever is champion;
6. ``<out>/README.md``: metrics per stage, the promotion decisions, the search's plots,
   alignment overlays, the ablation table last measured (``EXPERIMENTS.md``; the demo does not
   train the ablations), and the commands that open the Prefect, MLflow and Optuna dashboards
   on what it made.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from iea.config import config_paths, load_settings, redact_url


@flow(name="demo", log_prints=True)
def demo(
    config: str | list[str] | None,
    overrides: list[str] | None = None,
    out: str = "demo-report",
    trials: int = 8,
    short_epochs: int = 3,
) -> dict[str, Any]:
    """Run the demo's jobs (module doc) and write the report under ``out``.

    Returns:
        ``{"report", "runs": [the three retrains], "search", "batch", "seconds"}``.
    """
    from flows.batch import batch_predict
    from flows.retrain import retrain
    from flows.thresholds import threshold_search
    from iea.store import open_store

    logger = get_run_logger()
    t0 = time.perf_counter()
    configs = [str(p) for p in config_paths(config)]
    overrides = list(overrides or [])
    settings = load_settings(configs, overrides)
    dst = Path(out)
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "img").mkdir(parents=True)
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[name] = time.perf_counter() - start
        logger.info("demo: %s done in %.0f s", name, timings[name])
        return result

    first = timed("retrain", retrain, configs, overrides, promote=True)
    study = f"demo-{first['version']}"
    search = timed(
        "threshold search",
        threshold_search,
        configs,
        overrides,
        trials=trials,
        study=study,
        model=first["uri"],
    )
    changed = best_other_thresholds(study, settings, dst / "thresholds.yaml")
    second = timed(
        "retrain with other thresholds",
        retrain,
        configs,
        overrides,
        thresholds_from=str(changed),
        promote=True,
    )
    third = timed(
        f"retrain with {short_epochs} epochs",
        retrain,
        configs,
        [*overrides, f"jmasa.train.epochs={short_epochs}"],
        thresholds_from=str(changed),
        promote=True,
    )
    runs = [first, second, third]
    # the test tweets as a batch: text + image path, one JSON line each
    store = open_store(settings.store)
    from flows.preprocess import prepare_source, twitter_preprocessing

    data = twitter_preprocessing(configs, overrides)
    _, images = prepare_source(settings)
    images = Path(images).resolve()  # the batch input lives elsewhere: absolute paths
    lines = [
        json.loads(x) for x in store.get(f"{data['store_prefix']}/test.jsonl").decode().splitlines()
    ]
    batch_in = dst / "batch-input.jsonl"
    batch_in.write_text(
        "".join(
            json.dumps(
                {
                    "id": t["id"],
                    "text": " ".join(t["tokens"]),
                    "image": str(Path(images) / t["image_id"]),
                }
            )
            + "\n"
            for t in lines
        )
    )
    batch = timed(
        "batch prediction",
        batch_predict,
        configs,
        overrides,
        str(batch_in),
        str(dst / "batch"),
        overlays=4,
    )
    timings["total"] = time.perf_counter() - t0
    report = write_report(settings, dst, runs, search, batch, timings)
    logger.info("demo report: %s", report)
    return {
        "report": str(report),
        "runs": runs,
        "search": search,
        "batch": batch,
        "seconds": timings,
    }


def best_other_thresholds(study: str, settings, out: Path) -> Path:
    """The best finished trial of ``study`` whose thresholds are not the config's, exported to
    ``out``: the second retrain's changed setting, so it always makes a new version for the
    gates to judge (the search's best may be the config's own thresholds).

    Raises:
        ValueError: every finished trial kept the config's thresholds.
    """
    import optuna

    from flows.thresholds import THRESHOLDS, export_yaml, f1_of, load_study

    st = load_study(study, settings.search.storage)
    config = {n: float(getattr(settings.filters, n)) for n in THRESHOLDS}
    done = [t for t in st.trials if t.state == optuna.trial.TrialState.COMPLETE]
    others = [t for t in done if {n: float(t.params[n]) for n in THRESHOLDS} != config]
    if not others:
        raise ValueError(f"study {study!r}: every trial tried the config's thresholds")
    best = max(others, key=lambda t: (f1_of(t), -t.number))
    out.write_text(export_yaml(best.params))
    return out


EXPERIMENTS_MD = Path(__file__).resolve().parents[1] / "EXPERIMENTS.md"
"""The repository's experiment log, where ``iea experiment ablations`` results are recorded."""
TABLE3 = "## 600 training tweets, and a SAM that marks faint blobs unsure"
"""The heading of the ablation table the report quotes."""


def ablation_section(experiments: Path, heading: str = TABLE3) -> list[str]:
    """Report lines quoting the ablation table under ``heading`` in ``experiments``: its
    command and its first markdown table, said to be quoted (the demo does not train the
    ablations: each row is its own model over seeds, 18 to 64 minutes on 2 cores). A missing
    file or section is said as such."""
    intro = [
        "Not trained by the demo (each row is its own model over seeds: 18 to 64 minutes on 2",
        f"cores). The last measured table, quoted from `EXPERIMENTS.md` ({heading[3:]}):",
        "",
    ]
    if not experiments.is_file():
        return [f"No `EXPERIMENTS.md` next to this installation ({experiments}) to quote."]
    text = experiments.read_text().split("\n")
    try:
        start = text.index(next(x for x in text if x.startswith(heading)))
    except StopIteration:
        return [f"`EXPERIMENTS.md` has no section {heading[3:]!r} to quote."]
    body = []
    for line in text[start + 1 :]:
        if line.startswith("## "):
            break
        body.append(line)
    command, table, inside = [], [], False
    for line in body:
        if line.startswith("```"):
            command.append(line)
            if inside:
                break
            inside = True
        elif inside:
            command.append(line)
    for line in body:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    return [*intro, *command, "", *table]


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def write_report(settings, dst: Path, runs: list[dict], search: dict, batch: dict, timings) -> Path:
    """``dst/README.md`` with its pictures under ``dst/img`` (module doc)."""
    from flows.promotion import registry_table

    lines = ["# iea demo report", ""]
    lines += [
        "What `make demo` just ran on the demo world (synthetic tweets and images, tiny models on",
        "CPU): a retrain promoted by the gates, a threshold search, a second retrain with the",
        "best other thresholds the search found and a third with that recipe's fine-tuning cut",
        "short, each judged by the same gates, and a batch prediction with the champion.",
        "",
        "## Time",
        "",
        "| step | seconds |",
        "|---|---|",
        *[f"| {k} | {v:.0f} |" for k, v in timings.items()],
        "",
        *[
            f"Retrain {n}, seconds per stage: "
            + ", ".join(f"{k} {v:.0f}" for k, v in r.get("seconds", {}).items())
            + "."
            for n, r in enumerate(runs, 1)
        ],
        "",
        "## Metrics per stage",
        "",
        "| run | stages | version | dev JMASA F1 | test JMASA F1 | test MATE F1"
        " | test MASC acc | decision |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, r in enumerate(runs, 1):
        stages = ", ".join(f"{k}: {v}" for k, v in r["stages"].items())
        decision = r["decision"]["action"] if r["decision"] else "—"
        lines.append(
            f"| {n} | {stages} | v{r['version']} | {_f(r['dev'].get('jmasa_f1'))}"
            f" | {_f(r['test'].get('jmasa_f1'))} | {_f(r['test'].get('mate_f1'))}"
            f" | {_f(r['test'].get('masc_acc'))} | {decision} |"
        )
    lines += ["", "## Promotion decisions", ""]
    for n, r in enumerate(runs, 1):
        d = r["decision"]
        if not d:
            continue
        before = f"v{d['champion_version']}" if d["champion_version"] else "none"
        lines.append(f"**Run {n}: v{d['version']} {d['action']}** (champion before: {before})")
        lines += ["", *[f"- {reason}" for reason in d["reasons"]], ""]
    lines += [
        "| version | aliases | dev JMASA F1 | test JMASA F1 | decision |",
        "|---|---|---|---|---|",
    ]
    for row in registry_table(settings):
        aliases = " ".join("@" + a for a in row["aliases"])
        lines.append(
            f"| v{row['version']} | {aliases} | {_f(row['dev_jmasa_f1'])}"
            f" | {_f(row['test_jmasa_f1'])} | {row['decision'] or '—'} |"
        )
    lines += [
        "",
        "## Threshold search",
        "",
        f"Study `{search['study']}` ({search['finished']} trials, model {search['model']}): first"
        f" trial (the config's thresholds) dev JMASA F1 {_f(search['first']['dev_jmasa_f1'])};"
        f" best `{search['best']['params']}` dev {_f(search['best']['dev_jmasa_f1'])}, test"
        f" {_f(search['test']['jmasa_f1'])}, keeping {_f(search['best']['kept_fraction'])} of the"
        " regions.",
        "",
    ]
    for p in search["plots"]:
        name = f"search-{Path(p).name}"
        shutil.copy(p, dst / "img" / name)
        lines += [f"![{Path(p).stem}](img/{name})", ""]
    lines += [
        "## Batch prediction",
        "",
        f"{batch['answered']} of {batch['requests']} test tweets answered by"
        f" {batch['model']['model']} ({batch['failed']} failed), {batch['pairs']} pairs:"
        f" {batch['polarity']}. Predictions: `batch/predictions.jsonl`.",
        "",
        "Alignment overlays: each region the aligner placed is boxed and labelled with its",
        "phrase, coloured by the pair it backs (green POS, blue NEU, red NEG; yellow: aligned,",
        "backing no pair).",
        "",
    ]
    for p in sorted((dst / "batch" / "overlays").glob("*.png")):
        lines += [f"![overlay {p.stem}](batch/overlays/{p.name})", ""]
    tracking = redact_url(settings.tracking.uri)
    lines += ["## The ablation table", "", *ablation_section(EXPERIMENTS_MD), ""]
    lines += [
        "## Look at it",
        "",
        "```bash",
        f".venv/bin/mlflow ui --backend-store-uri {tracking}   # runs, models, registry",
        ".venv/bin/prefect server start   # the flow runs, at http://127.0.0.1:4200",
        f"pip install optuna-dashboard && optuna-dashboard {redact_url(search['storage'])}",
        "```",
        "",
    ]
    report = dst / "README.md"
    report.write_text("\n".join(lines))
    return report
