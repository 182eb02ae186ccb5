"""The ``iea`` command: the application layer over ``iea`` (the method) and ``flows`` (wiring).

Every command prints its result as JSON on stdout and progress on stderr; a bad input exits 1
with ``error: <file:line or item>: <reason>``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from flows import set_offline_defaults

set_offline_defaults()

app = typer.Typer(
    help="iea: multimodal aspect-based sentiment analysis platform", no_args_is_help=True
)
data_app = typer.Typer(
    help="Twitter-2015/2017 data: convert, inspect, synthesize", no_args_is_help=True
)
flow_app = typer.Typer(help="Run Prefect flows", no_args_is_help=True)
config_app = typer.Typer(help="Inspect configuration", no_args_is_help=True)
fgca_app = typer.Typer(
    help="FGCA: the synthetic fine-grained alignment dataset", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(flow_app, name="flow")
app.add_typer(config_app, name="config")
app.add_typer(fgca_app, name="fgca")
train_app = typer.Typer(help="Train the aligner or the JMASA model (LoRA), evaluate, register.")
app.add_typer(train_app, name="train")

FORMAT_HELP = "tombert (TSV), tombert_txt (4-line TXT), vlp (VLP-MABSA JSON) or conll (CMMT)"


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _emit(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def _fail(err: BaseException | str) -> None:
    print(f"error: {err}", file=sys.stderr)
    raise typer.Exit(1)


def _run_flow(flow_fn, *args, **kwargs) -> None:
    """Run a flow and print its result as JSON; on failure say what failed and exit 1 (the
    flow has logged the traceback)."""
    try:
        result = flow_fn(*args, **kwargs)
    except Exception as e:
        _fail(f"{type(e).__name__}: {e}")
    _emit(result)


CONFIG_HELP = "a YAML config; repeat it to layer files, later ones overriding earlier ones"


def _config_option(required: bool = True):
    """``--config FILE``, repeatable: every command takes one or more config files."""
    return typer.Option(... if required else None, "--config", help=CONFIG_HELP)


def _configs(config: list[Path] | None) -> list[str] | None:
    """The config files as a flow takes them (a list of paths, or None)."""
    return [str(c) for c in config] if config else None


def _settings(config: list[Path] | None, overrides: list[str] | None):
    """The resolved settings, or exit 1 listing every config error at once."""
    from iea.config import ConfigError, load_settings

    try:
        return load_settings(_configs(config), overrides or [])
    except ConfigError as e:
        _fail(e)


@data_app.command("convert")
def data_convert(
    format: str = typer.Option(..., "--format", help=FORMAT_HELP),
    src: Path = typer.Option(..., "--src", help="folder holding the split files"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    images: Path | None = typer.Option(
        None, "--images", help="image folder to check every record against"
    ),
    require_images: bool = typer.Option(
        False, "--require-images", help="fail when any image is unusable"
    ),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="quarantine bad records to OUT/rejects.jsonl"
    ),
) -> None:
    """Convert a public-format dataset to canonical OUT/{train,dev,test}.jsonl + manifest.json."""
    from iea.data.convert import DataFormatError, MissingImagesError, convert
    from iea.data.twitter import FORMATS

    if format not in FORMATS:
        _fail(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    try:
        manifest = convert(
            format,
            src,
            out,
            images=images,
            require_images=require_images,
            skip_bad=skip_bad,
            log=_progress,
        )
    except (DataFormatError, MissingImagesError, FileNotFoundError) as e:
        _fail(e)
    if manifest["rejects"]["count"]:
        _progress(
            f"{manifest['rejects']['count']} bad records quarantined to {out / 'rejects.jsonl'}"
        )
    _emit(
        {
            "out": str(out),
            "version": manifest["version"],
            "counts": manifest["counts"],
            "rejects": manifest["rejects"]["count"],
            "duplicates": manifest["duplicates"],
        }
    )


@data_app.command("stats")
def data_stats(
    out: Path = typer.Argument(..., help="a folder written by 'iea data convert'"),
) -> None:
    """Per split: tweets, aspects, POS, NEU, NEG."""
    from iea.data.convert import dataset_stats

    try:
        _emit(dataset_stats(out))
    except (FileNotFoundError, ValueError) as e:
        _fail(e)


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out"),
    format: str = typer.Option("vlp", "--format", help=FORMAT_HELP),
    n_train: int = typer.Option(200),
    n_dev: int = typer.Option(50),
    n_test: int = typer.Option(50),
    seed: int = typer.Option(13),
) -> None:
    """Write a synthetic Twitter-like dataset (annotations in FORMAT + JPEG images)."""
    from iea.data.synthetic import generate

    ds = generate(out, n_train=n_train, n_dev=n_dev, n_test=n_test, seed=seed, fmt=format)
    _emit({"annotations": str(ds.annotations), "images": str(ds.images), "format": ds.format})


@app.command("eval")
def eval_cmd(
    gold: Path = typer.Option(..., "--gold", help="canonical SPLIT.jsonl"),
    pred: Path = typer.Option(
        ..., "--pred", help='PRED.jsonl: {"id", "aspects": [{"from","to","polarity"}]}'
    ),
) -> None:
    """JMASA / MATE / MASC scores of PRED against GOLD."""
    from iea.evaluate import evaluate_files

    try:
        _emit(evaluate_files(gold, pred))
    except (FileNotFoundError, ValueError) as e:
        _fail(e)


@config_app.command("show")
def config_show(
    config: list[Path] | None = _config_option(required=False),
    sources: bool = typer.Option(False, "--sources", help="say where each value came from"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Print the resolved settings (with --sources: where each value came from: default, a
    config file, an environment variable or an override)."""
    if not sources:
        _emit(_settings(config, overrides).public_dump())
        return
    from iea.config import ConfigError, setting_sources

    try:
        found = setting_sources(_configs(config), overrides or [])
    except ConfigError as e:
        _fail(e)
    flat = _settings(config, overrides).flat()
    _emit({key: {"value": flat[key], "from": src} for key, src in found.items()})


@flow_app.command("preprocess")
def flow_preprocess(
    config: list[Path] = _config_option(),
    overrides: list[str] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Run the twitter_preprocessing flow (convert, validate, version, track)."""
    _settings(config, overrides)  # all config errors before any work
    from flows.preprocess import twitter_preprocessing

    try:
        result = twitter_preprocessing(_configs(config), list(overrides or []))
    except Exception as e:  # the flow has logged the traceback; say what failed and exit 1
        _fail(f"{type(e).__name__}: {e}")
    _emit(result)
    _progress(
        f"dataset {result['version']} ({'reused' if result['reused'] else 'new'})"
        f" at {result['store_uri']}\n"
        f"MLflow run {result['run_id']} in {result['tracking_uri']} "
        f"(mlflow ui --backend-store-uri {result['tracking_uri']})"
    )


@flow_app.command("data-validation")
def flow_data_validation(
    config: list[Path] = _config_option(),
    overrides: list[str] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Run the data_validation flow: every stored dataset version against today's suites."""
    _settings(config, overrides)
    from flows.data_validation import data_validation

    _run_flow(data_validation, _configs(config), list(overrides or []))


@app.command("deploy")
def deploy_cmd(
    server: str | None = typer.Option(
        None, "--server", help="the Prefect API URL (default: PREFECT_API_URL)"
    ),
    file: Path = typer.Option(None, "--file", help="the deployment file (default: prefect.yaml)"),
    app_dir: Path | None = typer.Option(
        None, "--app-dir", help="where workers find this repository (default: the file's folder)"
    ),
    config: list[Path] = _config_option(required=False),
) -> None:
    """Create or update the work pools, concurrency limits and deployments of prefect.yaml
    on a Prefect server; running it twice leaves the same state."""
    import os

    from flows.deploy import DEFAULT_FILE, DeployError, apply, load_plan

    if server:
        os.environ["PREFECT_API_URL"] = server
    if not os.environ.get("PREFECT_API_URL"):
        _fail("no Prefect server: pass --server URL or set PREFECT_API_URL")
    try:
        plan = load_plan(file or DEFAULT_FILE, app_dir, _configs(config))
        done = apply(plan)
    except DeployError as e:
        _fail(e)
    except Exception as e:  # the server is unreachable or refused an item
        _fail(f"{type(e).__name__}: {e}")
    for kind in ("pools", "limits"):
        for name, state in done[kind].items():
            _progress(f"{kind[:-1]:<6} {name}: {state}")
    for d in plan.deployments:
        crons = ", ".join(s["cron"] for s in d.schedules) or "manual"
        _progress(f"deployment {d.flow_name}/{d.name} on {d.work_pool} ({crons})")
    _emit(done)


@app.command("interpret")
def interpret_cmd(
    image: Path = typer.Option(..., "--image", help="an image file"),
    out: Path = typer.Option(
        ..., "--out", help="folder for regions.json, regions.png, overlay.png"
    ),
    config: list[Path] | None = _config_option(required=False),
    overrides: list[str] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Segment, filter and interpret one image; write its regions and an overlay."""
    settings = _settings(config, overrides)
    from iea.data.images import ImageDecodeError
    from iea.models.refs import LOAD_COUNTS, ModelNotAvailable
    from iea.store import open_store
    from iea.vision.interpreter import ImageInterpreter, write_outputs

    before = dict(LOAD_COUNTS)
    try:
        result = ImageInterpreter(settings, open_store(settings.store)).run(image)
    except (ImageDecodeError, ModelNotAvailable) as e:
        _fail(e)
    paths = write_outputs(result, out)
    loaded = {k: v - before.get(k, 0) for k, v in LOAD_COUNTS.items() if v != before.get(k, 0)}
    _emit(
        {
            "image": str(image),
            "regions": len(result.regions),
            "kept": len(result.kept),
            "cache": result.cache,
            "models_loaded": loaded,
            "files": {k: str(v) for k, v in paths.items()},
        }
    )


@flow_app.command("interpret")
def flow_interpret(
    config: list[Path] = _config_option(),
    images: Path | None = typer.Option(
        None, "--images", help="image folder (default: the dataset's)"
    ),
    limit: int | None = typer.Option(None, "--limit", help="at most this many images"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Run the image_interpretation flow over a folder of images."""
    _settings(config, overrides)
    from flows.interpret import run_image_interpretation

    try:
        result = run_image_interpretation(
            _configs(config),
            list(overrides or []),
            images=str(images) if images else None,
            limit=limit,
        )
    except Exception as e:  # the flow has logged the traceback; say what failed and exit 1
        _fail(f"{type(e).__name__}: {e}")
    _emit(result)


@fgca_app.command("build")
def fgca_build(
    config: list[Path] = _config_option(),
    out: Path = typer.Option(
        ..., "--out", help="folder for {train,val,test}.jsonl, quarantine, stats"
    ),
    overrides: list[str] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Build FGCA with the fgca_generation flow (resumes from cached images after a crash)."""
    settings = _settings(config, overrides)
    from iea.models.refs import prepare_tiny

    rt = settings.runtime
    prepare_tiny(
        [settings.segment.sam, settings.fgca.llm, settings.interpreter.model],
        seed=rt.seed,
        cache=rt.model_cache,
        progress=_progress,
    )
    from flows.fgca import fgca_generation

    _run_flow(fgca_generation, _configs(config), list(overrides or []), out=str(out))


@fgca_app.command("validate")
def fgca_validate(
    file: Path = typer.Argument(..., help="an FGCA .jsonl file"),
    train: Path | None = typer.Option(
        None,
        "--train",
        help="train split for the class-coverage check (default: train.jsonl beside FILE)",
    ),
) -> None:
    """Run the fgca GX suite on FILE: exit 0 when it passes, 1 listing the failing rows."""
    import tempfile

    from flows.validation import validate_fgca
    from iea.align.records import FgcaRecord

    def load(path: Path) -> list[FgcaRecord]:
        rows = []
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(FgcaRecord.from_json(json.loads(line)))
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    _fail(f"{path}:{no}: not an FGCA record: {e}")
        return rows

    if not file.is_file():
        _fail(f"{file}: no such file")
    records = load(file)
    train = train or file.with_name("train.jsonl")
    train_classes = None
    if (
        any(r.split != "train" for r in records)
        and train.is_file()
        and train.resolve() != file.resolve()
    ):
        train_classes = {r.class_id for r in load(train)}
    with tempfile.TemporaryDirectory() as gx_root:
        report, _ = validate_fgca(
            records, Path(gx_root), where=str(file), train_classes=train_classes
        )
    _emit(
        {
            "file": str(file),
            "rows": len(records),
            "passed": report.success,
            "failures": report.failures,
        }
    )
    if not report.success:
        n_rows = sum(len(f["ids"]) for f in report.failures)
        _fail(f"{file}: {n_rows} failing rows\n{report.summary()}")


def _prepare(config: list[Path], overrides: list[str] | None, *, needs_images: bool = False):
    """Load the settings (every error at once), check what the command needs, and build the
    tiny models it names before any flow starts."""
    from iea.models.refs import prepare_tiny

    settings = _settings(config, overrides)
    if needs_images and settings.data.source == "files" and settings.data.images is None:
        _fail(
            f"{', '.join(map(str, config))}: data.images is not set: JMASA needs the tweets' "
            "images (pass data.images=DIR, the folder holding each tweet's image_id)"
        )
    rt = settings.runtime
    refs = [
        settings.segment.sam,
        settings.fgca.llm,
        settings.interpreter.model,
        settings.aligner.model,
    ]
    prepare_tiny(
        [*refs, settings.jmasa.model], seed=rt.seed, cache=rt.model_cache, progress=_progress
    )
    return settings


@train_app.command("aligner")
def train_aligner(
    config: list[Path] = _config_option(),
    overrides: list[str] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Build (or reuse) FGCA and LoRA-train the aligner; registers ``iea-aligner``."""
    _prepare(config, overrides)
    from flows.train import aligner_training

    _run_flow(aligner_training, _configs(config), list(overrides or []))


@train_app.command("jmasa")
def train_jmasa(
    config: list[Path] = _config_option(),
    ablation: str = typer.Option(
        "full",
        "--ablation",
        help="full, no_segmentation, no_interpretation, no_nmi, no_aligner_nmi (Table 3) or "
        "text_only",
    ),
    overrides: list[str] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Preprocess, interpret, align, build the NMI, LoRA-tune the JMASA model, evaluate on
    test at the best dev epoch; registers ``iea-jmasa``."""
    from iea.nmi import ABLATIONS

    if ablation not in ABLATIONS:
        _fail(f"unknown ablation {ablation!r}: one of {', '.join(ABLATIONS)}")
    _prepare(config, overrides, needs_images=True)
    from flows.train import jmasa_finetune

    _run_flow(jmasa_finetune, _configs(config), list(overrides or []), ablation=ablation)


EXPERIMENT_TEST_TWEETS = 200
"""The test tweets ``iea experiment ablations`` scores a synthetic world's models on: 4x the
demo's 50, the same trainings (the world draws test after train and dev). Three seeds on 50 test
tweets put 0.04 sd on ``full`` in session 22, too wide for a 0.10 margin; 200 halved it."""

experiment_app = typer.Typer(help="Experiments: the paper's claims, measured over seeds.")
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("ablations")
def experiment_ablations(
    config: list[Path] = _config_option(),
    seeds: int = typer.Option(3, "--seeds", help="JMASA training seeds 0..N-1 per row"),
    rows: str = typer.Option(
        "full,no_segmentation,no_interpretation,no_nmi,no_aligner_nmi,text_only",
        "--rows",
        help="comma-separated ablations (Table 3 rows and text_only)",
    ),
    fractions: str = typer.Option(
        "0.25,0.5", "--fractions", help="shares of the training tweets (Figure 5), besides 1.0"
    ),
    thresholds: bool = typer.Option(True, "--thresholds/--no-thresholds"),
    equal_steps: bool = typer.Option(
        True,
        "--equal-steps/--same-epochs",
        help="a data share trains epochs/share epochs (the steps of 100%) or the same epochs",
    ),
    out: Path = typer.Option(Path("outputs/experiment.md"), "--out"),
    workers: int = typer.Option(
        1, "--workers", help="trainings at once, each in its own process with cores/N threads"
    ),
    n_test: int | None = typer.Option(
        None,
        "--n-test",
        help=f"test tweets a synthetic world scores on (default {EXPERIMENT_TEST_TWEETS}; its "
        "train and dev, so every training, stay the same); not for a config that reads files",
    ),
    overrides: list[str] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Train each Table 3 row (and text-only) for several seeds, the data-efficiency rows and
    the threshold rows; print and write the mean ± sd table and which orderings hold."""
    from iea.nmi import ABLATIONS

    wanted = [r.strip() for r in rows.split(",") if r.strip()]
    bad = [r for r in wanted if r not in ABLATIONS]
    if bad:
        _fail(f"unknown rows {bad}: one of {', '.join(ABLATIONS)}")
    try:
        shares = [float(f) for f in fractions.split(",") if f.strip()]
    except ValueError:
        _fail(f"--fractions must be numbers in (0, 1], got {fractions!r}")
    if any(not 0 < f <= 1 for f in shares):
        _fail(f"--fractions must be in (0, 1], got {shares}")
    if seeds < 1:
        _fail("--seeds must be >= 1")
    if workers < 1:
        _fail("--workers must be >= 1")
    if n_test is not None and n_test < 1:
        _fail("--n-test must be >= 1")
    settings = _prepare(config, overrides, needs_images=True)
    if settings.data.source != "synthetic":
        if n_test is not None:
            _fail("--n-test sets a synthetic world's test split; this config reads files")
    elif n_test is None:
        n_test = EXPERIMENT_TEST_TWEETS
    from flows.experiment import ablation_experiment

    _run_flow(
        ablation_experiment,
        _configs(config),
        list(overrides or []),
        seeds=list(range(seeds)),
        rows=wanted,
        fractions=shares,
        thresholds=thresholds,
        out=str(out),
        equal_steps=equal_steps,
        workers=workers,
        n_test=n_test,
    )


thresholds_app = typer.Typer(help="Region-filter threshold searches (Optuna).")
app.add_typer(thresholds_app, name="thresholds")


@thresholds_app.command("search")
def thresholds_search(
    config: list[Path] = _config_option(),
    trials: int = typer.Option(12, "--trials", help="finished trials in the study, in total"),
    study: str | None = typer.Option(
        None, "--study", help="study name (default: one per trained JMASA model)"
    ),
    storage: str | None = typer.Option(
        None, "--storage", help="Optuna storage URL (default search.storage)"
    ),
    mode: str | None = typer.Option(
        None,
        "--mode",
        help="eval (a fixed model scores each trial; default search.mode) or retrain (each "
        "trial fine-tunes, pruned when it lags)",
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="eval mode's fixed model: a registry reference (models:/iea-jmasa/3, "
        "models:/iea-jmasa@champion); default the model the config trains",
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        help="workers side by side in this run (more on other machines: same --storage, "
        "--study; a Postgres URL)",
    ),
    overrides: list[str] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Search t_size / t_clarity / t_conf on dev: with the config's JMASA model fixed (eval
    mode) or fine-tuning one per trial (retrain); the config's thresholds are the first trial,
    a rerun tops the study up to --trials, and the best is scored once on test."""
    if trials < 1 or workers < 1:
        _fail("--trials and --workers must be >= 1")
    if mode is not None and mode not in ("eval", "retrain"):
        _fail(f"--mode {mode!r}: expected eval or retrain")
    overrides = [*(overrides or []), *([f"search.mode={mode}"] if mode else [])]
    settings = _prepare(config, overrides, needs_images=True)
    from flows.thresholds import check_search, threshold_search

    try:
        check_search(settings)
    except ValueError as e:
        _fail(e)
    _run_flow(
        threshold_search,
        _configs(config),
        list(overrides or []),
        trials,
        study=study,
        storage=storage,
        workers=workers,
        model=model,
    )


def _study(study: str, storage: str):
    from flows.thresholds import load_study

    try:
        return load_study(study, storage)
    except KeyError as e:
        _fail(e.args[0])


@thresholds_app.command("show")
def thresholds_show(
    study: str = typer.Option(..., "--study"),
    storage: str = typer.Option("sqlite:///mlruns/optuna.db", "--storage"),
) -> None:
    """The study's best trial, a table of every trial and where its plots are, as JSON."""
    from flows.thresholds import _clean, best_trial, f1_of, finished, pareto_front, study_table
    from iea.config import redact_url

    st = _study(study, storage)
    try:
        best = best_trial(st) if finished(st) else None
    except ValueError as e:  # none feasible: the table still shows every trial
        best = None
        _progress(str(e))
    folder = st.user_attrs.get("plots_dir")
    plots = sorted(str(p) for p in Path(folder).glob("*.png")) if folder else []
    _emit(
        {
            "study": study,
            "storage": redact_url(storage),
            "finished": finished(st),
            "best": best
            and {
                "number": best.number,
                "params": {k: _clean(v) for k, v in best.params.items()},
                "dev_jmasa_f1": f1_of(best),
                "kept_fraction": best.user_attrs.get("kept_fraction"),
            },
            "pareto_front": [
                {
                    "number": tr.number,
                    **{k: _clean(v) for k, v in tr.params.items()},
                    "dev_jmasa_f1": f1_of(tr),
                    "kept_fraction": tr.user_attrs.get("kept_fraction"),
                }
                for tr in (pareto_front(st) if best else [])
            ],
            "trials": study_table(st),
            "plots": plots,
            "dashboard": f"optuna-dashboard {redact_url(storage)}",
        }
    )
    if plots:
        _progress(f"plots: {Path(plots[0]).parent}")
    _progress(
        f"browse the study: pip install optuna-dashboard && optuna-dashboard {redact_url(storage)}"
    )


@thresholds_app.command("export")
def thresholds_export(
    study: str = typer.Option(..., "--study"),
    out: Path = typer.Option(..., "--out"),
    storage: str = typer.Option("sqlite:///mlruns/optuna.db", "--storage"),
) -> None:
    """Write the best trial's thresholds as a YAML ``filters:`` overrides file."""
    import yaml

    from flows.thresholds import best_trial, export_yaml, finished

    st = _study(study, storage)
    if not finished(st):
        _fail(f"study {study!r} has no finished trial")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        best = best_trial(st)
    except ValueError as e:
        _fail(e)
    text = export_yaml(best.params)
    out.write_text(text)
    _emit({"study": study, "out": str(out), "filters": yaml.safe_load(text)["filters"]})


@app.command("retrain")
def retrain_cmd(
    config: list[Path] = _config_option(),
    promote: bool = typer.Option(
        True, "--promote/--no-promote", help="decide @champion after registering"
    ),
    thresholds_from: str | None = typer.Option(
        None,
        "--thresholds-from",
        help="a threshold study's name (its best trial) or an exported thresholds YAML",
    ),
    overrides: list[str] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """The retrain flow: every stage trained or reused by its key, the JMASA model
    registered as @challenger, then the promotion gates (unless --no-promote)."""
    _prepare(config, overrides, needs_images=True)
    from flows.retrain import retrain

    try:
        result = retrain(_configs(config), list(overrides or []), thresholds_from, promote)
    except Exception as e:
        _fail(f"{type(e).__name__}: {e}")
    for stage, state in result["stages"].items():
        _progress(f"{stage:<11} {state}")
    _progress("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result["seconds"].items()))
    _progress(f"registered {result['uri']}; test JMASA F1 {result['test']['jmasa_f1']:.4f}")
    if result["decision"]:
        for r in result["decision"]["reasons"]:
            _progress(f"  - {r}")
    _emit(result)


registry_app = typer.Typer(
    help="The model registry: versions, champion / challenger promotion, rollback.",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")


def _table(rows: list[dict], cols: list[str]) -> str:
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in cols] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


@registry_app.command("show")
def registry_show(
    config: list[Path] = _config_option(),
    name: str = typer.Option("iea-jmasa", "--name", help="registered model name"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Versions newest first with their aliases, dev/test JMASA F1 and last decision: a
    table on stderr, JSON on stdout."""
    from flows.promotion import registry_table

    settings = _settings(config, overrides)
    rows = registry_table(settings, name)
    if not rows:
        _fail(f"no registered model {name!r} in {settings.tracking.uri}")
    for r in rows:
        r["aliases"] = ",".join("@" + a for a in r["aliases"])
    cols = ["version", "aliases", "status", "dev_jmasa_f1", "test_jmasa_f1", "decision", "at"]
    _progress(_table(rows, cols))
    _emit({"name": name, "versions": rows})


@registry_app.command("promote")
def registry_promote(
    version: int = typer.Argument(..., help="the version to promote to @champion"),
    config: list[Path] = _config_option(),
    name: str = typer.Option("iea-jmasa", "--name", help="registered model name"),
    force: bool = typer.Option(False, "--force", help="promote whatever the gates say"),
    reason: str | None = typer.Option(None, "--reason", help="why (required with --force)"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Check VERSION against @champion with the gates of ``promotion`` in the config and
    promote it or record why not (exit 0 either way; the JSON says which)."""
    if force and not reason:
        _fail("--force needs --reason: it is recorded with the decision")
    _settings(config, overrides)
    from flows.promotion import promote_version

    try:
        result = promote_version(
            _configs(config), list(overrides or []), version, force, reason, name
        )
    except Exception as e:
        _fail(f"{type(e).__name__}: {e}")
    _progress(f"{name} v{version}: {result['action']}")
    for r in result["reasons"]:
        _progress(f"  - {r}")
    _emit(result)


@registry_app.command("rollback")
def registry_rollback(
    config: list[Path] = _config_option(),
    name: str = typer.Option("iea-jmasa", "--name", help="registered model name"),
    reason: str | None = typer.Option(None, "--reason", help="why (recorded)"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Move @champion back to @previous (recorded as a decision)."""
    from flows.promotion import rollback

    settings = _settings(config, overrides)
    try:
        decision = rollback(settings, name=name, reason=reason)
    except ValueError as e:
        _fail(e)
    _progress(f"{name}: @champion is v{decision.version} again (was v{decision.champion_version})")
    _emit(decision.to_json())


@app.command("predict")
def predict_cmd(
    image: Path = typer.Option(..., "--image", exists=True, dir_okay=False),
    text: str = typer.Option(..., "--text"),
    model: str = typer.Option(
        "models:/iea-jmasa@champion",
        "--model",
        help="registry URI (models:/iea-jmasa@champion, models:/iea-jmasa/3, "
        "models:/iea-jmasa/latest) or a trained model folder",
    ),
    aligner: Path | None = typer.Option(
        None, "--aligner", help="the aligner folder, with a model folder that needs one"
    ),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="the registry's tracking store (default: --config's tracking.uri, else "
        "MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db)",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="folder for prediction.json and overlay.png"
    ),
    config: list[Path] | None = _config_option(required=False),
) -> None:
    """Aspect-polarity pairs of one tweet as JSON, each with the region that backs it."""
    tracking_uri = tracking_uri or _settings(config, None).tracking.uri
    from flows import set_offline_defaults

    set_offline_defaults()
    try:
        import mlflow

        from flows.registry import load_predictor

        mlflow.set_tracking_uri(tracking_uri)
        predictor, answered_by = load_predictor(model, aligner)
        result = {**predictor.predict(image, text), "answered_by": answered_by}
    except Exception as e:
        _fail(f"{type(e).__name__}: {e}")
    if out is not None:
        from iea.predict import draw_pairs

        out.mkdir(parents=True, exist_ok=True)
        (out / "prediction.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
        draw_pairs(image, result).save(out / "overlay.png")
        result["overlay"] = str(out / "overlay.png")
    _emit(result)


@app.command("batch-predict")
def batch_predict_cmd(
    config: list[Path] = _config_option(),
    input: Path = typer.Option(
        ..., "--input", help="JSONL of {text, image}, or a public-format file/folder (--format)"
    ),
    out: Path = typer.Option(..., "--out", help="folder for predictions.jsonl, failures.jsonl"),
    model: str = typer.Option("models:/iea-jmasa@champion", "--model"),
    images: Path | None = typer.Option(None, "--images", help="images of a --format input"),
    fmt: str | None = typer.Option(None, "--format", help=f"the input's format: {FORMAT_HELP}"),
    overlays: int = typer.Option(3, "--overlays", help="overlay pictures of the first answers"),
    chunk: int = typer.Option(32, "--chunk", help="tweets per Prefect task"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Answer every tweet of --input with the model (the @champion by default), streamed in
    chunks; tweets that fail are listed with their reasons in failures.jsonl."""
    _settings(config, overrides)
    from flows.batch import batch_predict

    try:
        result = batch_predict(
            _configs(config), list(overrides or []), str(input), str(out), model,
            str(images) if images else None, fmt, overlays, chunk,
        )  # fmt: skip
    except Exception as e:
        _fail(f"{type(e).__name__}: {e}")
    _progress(
        f"{result['answered']} answered, {result['failed']} failed"
        f" by {result['model']['model']}: {out}/predictions.jsonl"
    )
    _emit(result)


@app.command("demo")
def demo_cmd(
    config: list[Path] = _config_option(),
    out: Path = typer.Option(Path("demo-report"), "--out", help="the report's folder"),
    trials: int = typer.Option(8, "--trials", help="threshold-search trials"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Retrain and promote, search the thresholds, retrain with the best, batch-predict the
    test tweets with the champion, and write a markdown report of it all."""
    _prepare(config, overrides, needs_images=True)
    from flows.demo import demo

    try:
        result = demo(_configs(config), list(overrides or []), str(out), trials)
    except Exception as e:
        _fail(f"{type(e).__name__}: {e}")
    for n, run in enumerate(result["runs"], 1):
        d = run["decision"] or {}
        _progress(f"retrain {n}: v{run['version']} {d.get('action', '')}")
    _progress(f"done in {result['seconds']['total']:.0f} s; the report: {result['report']}")
    _emit({"report": result["report"], "seconds": result["seconds"]})


def main() -> None:
    """The ``iea`` console script: progress bars on stderr when it is a terminal."""
    from iea import progress

    bars = None
    if sys.stderr.isatty():
        from flows.progress import ConsoleBars

        bars = ConsoleBars()
        progress.install(bars)
    try:
        app()
    finally:
        if bars is not None:
            progress.remove(bars)
            bars.close()


if __name__ == "__main__":
    main()
