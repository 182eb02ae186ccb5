"""Typed settings for every stage, with each default defined exactly once.

Precedence, lowest first: the defaults below < the ecosystem's own variables
(:data:`ECOSYSTEM_ENV`: ``MLFLOW_TRACKING_URI``, ``MLFLOW_S3_ENDPOINT_URL``, ``AWS_*``) < a YAML
file (``configs/*.yaml``) < environment variables ``IEA_<SECTION>__<KEY>`` (e.g.
``IEA_STORE__BUCKET=iea``) < CLI ``key=value`` overrides (``segment.num_regions=3``). So a
config that leaves a value unset lets ``MLFLOW_TRACKING_URI`` & co. decide it, as their users
expect; :func:`setting_sources` says where each resolved value came from (``iea config show
--sources``). Every problem in every source is collected and raised together as
one :class:`ConfigError` before any work starts.

Secrets (``store.access_key``, ``store.secret_key``; :data:`SECRET_KEYS`) are ``SecretStr``:
they print as ``**********``, and :meth:`Settings.public_dump` (what goes to MLflow params, the
``config.yaml`` artifact, a trained model's ``config.json`` and ``iea config show``) leaves them
out and masks the password of every URL (``postgresql://user:***@host/db``). A saved config is
read back with :func:`saved_settings`, which takes the secrets from the environment again.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

ENV_PREFIX = "IEA_"
SECRET_KEYS = frozenset({"store.access_key", "store.secret_key"})
"""Settings that are credentials: never written anywhere (module doc)."""

ECOSYSTEM_ENV: dict[str, tuple[str, ...]] = {
    "tracking.uri": ("MLFLOW_TRACKING_URI",),
    "store.endpoint": ("MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "store.access_key": ("AWS_ACCESS_KEY_ID",),
    "store.secret_key": ("AWS_SECRET_ACCESS_KEY",),
    "store.region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
}
"""Setting -> the variables of MLflow / the AWS SDKs that set it when no config file, ``IEA_*``
variable or override does (the first one set wins). An endpoint URL's scheme sets
``store.secure`` (``https``) and is stripped (``store.endpoint`` is ``host:port``)."""

_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^\s:/@]*:)([^\s@/]+)(@)")


def redact_url(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` URL masked."""
    return _URL_PASSWORD.sub(r"\1***\3", text)


def _redact_tree(node: Any, prefix: str = "") -> Any:
    if isinstance(node, dict):
        return {
            k: (None if f"{prefix}{k}" in SECRET_KEYS else _redact_tree(v, f"{prefix}{k}."))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_redact_tree(v, prefix) for v in node]
    return redact_url(node) if isinstance(node, str) else node


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RuntimeSettings(_Section):
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` picks CUDA when available."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """``auto`` is bfloat16 on GPU, float32 on CPU."""
    trust_remote_code: bool = False
    """Let ``from_pretrained`` run code shipped with a model (off: only library code runs)."""
    model_cache: Path | None = None
    """Where ``tiny-*`` models are built (default: ``$IEA_MODEL_CACHE`` or ~/.cache/iea/models)."""
    cpu_pool: str = "cpu"
    gpu_pool: str = "gpu"
    """Prefect work pools that deployments of CPU and GPU stages are routed to."""
    task_runner: Literal["thread", "dask"] = "thread"
    """How image interpretation and batch prediction fan their chunks out: threads of this
    process (``interpreter.concurrency``), or the workers of a Dask cluster (``prefect-dask``,
    the ``worker`` extra)."""
    dask_address: str | None = None
    """``tcp://host:8786`` of a running Dask scheduler; None: a local cluster of
    ``dask_workers`` processes, started for the run and stopped after it."""
    dask_workers: int = Field(2, ge=1)
    """Worker processes of the local cluster (one thread each)."""
    handoff: str | None = None
    """``flow/deployment`` (e.g. ``jmasa_finetune/jmasa-finetune``, on the ``gpu`` pool in
    ``prefect.yaml``) that the ``retrain`` flow hands its training stages to with
    ``run_deployment``, waiting for the run and reading its result from the result storage;
    None: they run in the retrain's own process."""


class SyntheticTwitterSettings(_Section):
    """The synthetic Twitter-like dataset (``iea.data.synthetic``)."""

    n_train: int = Field(200, ge=1)
    n_dev: int = Field(50, ge=1)
    n_test: int = Field(50, ge=1)
    seed: int = 13
    image_size: tuple[int, int] = (320, 240)
    """(width, height) in pixels of the generated images."""
    text_polarity_rate: float = Field(0.3, ge=0.0, le=1.0)
    """Share of aspects whose clause carries their polarity (the rest: polarity-free text)."""
    distractors: dict[Literal["speck", "blurred", "faint"], float] = {
        "speck": 0.5,
        "blurred": 0.4,
        "faint": 0.4,
    }
    """Per image, the probability of each distractor kind (``iea.data.world``)."""
    mention_order_rate: float = Field(0.0, ge=0.0, le=1.0)
    """Share of images whose objects stand left to right in the text's mention order (the rest
    shuffled): an implicit alignment that a whole-image model can learn with enough data."""

    @model_validator(mode="after")
    def _rates_are_probabilities(self) -> SyntheticTwitterSettings:
        bad = {k: v for k, v in self.distractors.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"distractor rates must be in [0, 1], got {bad}")
        return self


class TwitterDataSettings(_Section):
    source: Literal["files", "synthetic"] = "files"
    """``files`` reads ``src``; ``synthetic`` generates a dataset under ``work_dir`` first,
    written in ``format`` and read back like real data."""
    name: str = "twitter2015"
    format: Literal["tombert", "tombert_txt", "vlp", "conll"] = "vlp"
    src: Path | None = None
    images: Path | None = None
    require_images: bool = False
    skip_bad: bool = False
    work_dir: Path = Path("outputs/work")
    synthetic: SyntheticTwitterSettings = SyntheticTwitterSettings()

    @model_validator(mode="after")
    def _src_needed_for_files(self) -> TwitterDataSettings:
        if self.source == "files" and self.src is None:
            raise ValueError("data.src is required when data.source is 'files'")
        return self


class SegmentSettings(_Section):
    sam: str = "vit_h"
    """A SAM reference: ``vit_h``/``vit_l``/``vit_b`` (with ``sam_checkpoint``) or ``tiny-sam``."""
    sam_checkpoint: Path | None = None
    num_regions: int = Field(5, ge=1, le=255)
    """L: at most L regions per image (top L-1 masks + background)."""
    min_own_share: float = Field(0.5, ge=0.0, le=1.0)
    """Skip a mask when less than this share of it is left unclaimed by better-ranked masks
    (a near-copy of a kept mask; :func:`iea.vision.segment.postprocess`). 0 = the paper's
    rule."""
    points_per_side: int = Field(32, ge=1)
    pred_iou_thresh: float = Field(0.7, ge=0.0, le=1.0)
    """The mask generator's own cut on SAM's predicted IoU (``SamAutomaticMaskGenerator``'s
    default is 0.88): a mask below it never reaches the region filters, so it must sit at or
    below ``filters.t_conf`` (checked), or ``t_conf`` could never drop a mask it keeps."""
    stability_score_thresh: float = Field(0.95, ge=0.0, le=1.0)
    max_side: int = Field(1024, ge=16)
    """Images whose longer side exceeds this are downscaled for SAM (pixels); the label map is
    mapped back to full size."""
    min_side: int = Field(32, ge=1)
    """Images whose shorter side is below this (pixels) skip SAM: one background region."""
    points_per_batch: int = Field(64, ge=1)
    box_nms_thresh: float = Field(0.7, ge=0.0, le=1.0)
    min_mask_region_area: int = Field(0, ge=0)
    generator: Literal["stock", "fast"] = "fast"
    """``stock``: segment-anything's ``SamAutomaticMaskGenerator``; ``fast``:
    :class:`iea.vision.masks.FastMaskGenerator` (stock's decisions, pre-filtered at low
    resolution, upsamples only what it keeps, on the CPU only over each mask's window; needs
    ``min_mask_region_area`` 0)."""

    @model_validator(mode="after")
    def _fast_generator_options(self) -> SegmentSettings:
        if self.generator != "stock" and self.min_mask_region_area > 0:
            raise ValueError(
                f"segment.generator {self.generator!r} does not remove small regions: set"
                " segment.min_mask_region_area to 0 or segment.generator to 'stock'"
            )
        return self


class FilterSettings(_Section):
    t_size: float = Field(25, ge=0)
    """Drop a region when min(bbox width, bbox height) < t_size (pixels)."""
    t_clarity: float = Field(100.0, ge=0)
    """Drop a region when Var(Laplacian(grayscale region)) < t_clarity."""
    t_conf: float = Field(0.7, ge=0.0, le=1.0)
    """Drop a region when SAM's predicted IoU < t_conf."""


class GridSettings(_Section):
    """A threshold's search grid: ``low``, ``low + step``, ..., up to ``high``."""

    low: float = Field(ge=0)
    high: float = Field(ge=0)
    step: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> GridSettings:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        return self


class SearchSettings(_Section):
    """The region-filter threshold search (``iea thresholds search``)."""

    t_size: GridSettings = GridSettings(low=0, high=60, step=5)
    """Pixels, integer steps."""
    t_clarity: GridSettings = GridSettings(low=0, high=300, step=25)
    """Laplacian variance units."""
    t_conf: GridSettings = GridSettings(low=0.0, high=0.95, step=0.05)
    """SAM's predicted IoU; ``segment.pred_iou_thresh`` must sit at or below ``low``."""
    sampler: Literal["tpe", "random", "nsga2"] = "tpe"
    """TPE (one or two objectives), random, or NSGA-II (two objectives)."""
    objectives: Literal["f1", "f1_and_kept"] = "f1"
    """``f1``: maximise dev JMASA F1. ``f1_and_kept``: also minimise the kept-region fraction
    (the cost of interpreting and aligning regions): a Pareto search."""
    min_kept_fraction: float = Field(0.0, ge=0.0, le=1.0)
    """A constraint: trials keeping a smaller share of regions are infeasible (never best)."""
    seed: int = 0
    """The sampler's seed."""
    storage: str = "sqlite:///mlruns/optuna.db"
    """Optuna storage URL (sqlite by default; a Postgres URL for several workers)."""
    ablation: str = "full"
    """The NMI layout the scored JMASA model reads."""
    mode: Literal["eval", "retrain"] = "eval"
    """``eval``: the config's trained JMASA model scores dev under each trial's thresholds.
    ``retrain``: each trial fine-tunes the JMASA model on the training instructions its
    thresholds give, reports dev JMASA F1 per evaluated epoch and may be pruned."""
    retrain_epochs: int | None = Field(None, ge=1)
    """Epochs of a ``retrain`` trial (None: ``jmasa.train.epochs``)."""
    retrain_max_examples: int | None = Field(None, ge=1)
    """At most this many training instructions per ``retrain`` trial (the first ones; None:
    ``jmasa.train.max_train_examples``, else all): a short schedule."""
    pruner: Literal["median", "hyperband", "none"] = "median"
    """Stops a lagging ``retrain`` trial (Optuna's MedianPruner / HyperbandPruner)."""
    plots_dir: Path = Path("outputs/thresholds")
    """Where a search writes its plots (``<plots_dir>/<study>/*.png``; also MLflow artifacts)."""


class PromotionSettings(_Section):
    """How a registered JMASA version becomes ``@champion`` (``iea registry promote``).

    Metric names are the version's run metrics on dev: ``dev/jmasa_f1``, ``dev/mate_f1``,
    ``dev/masc_f1`` (polarity macro F1 on the aspects found), ``dev/coverage`` (gold aspects
    with an aligned region)."""

    metric: str = "dev/jmasa_f1"
    """The metric a challenger must improve on the champion."""
    min_gain: float = Field(0.0, ge=0.0)
    """A challenger needs ``metric >= champion's + min_gain`` (0: at least equal)."""
    min_value: float = Field(0.0, ge=0.0, le=1.0)
    """An absolute floor on ``metric`` for every version, also the first champion."""
    guards: dict[str, float] = {"dev/mate_f1": 0.02, "dev/masc_f1": 0.02, "dev/coverage": 0.05}
    """Metric -> how far it may drop below the champion's."""
    data_gates: bool = True
    """The Great Expectations results of the version's datasets (tweets and FGCA) must have
    passed."""
    smoke_tweets: int = Field(3, ge=0)
    """Dev tweets the registered pyfunc answers in a fresh process, which must equal the
    model's in-process answers (0: no smoke prediction)."""


class LoraSettings(_Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Projections of the language model that get adapters (the vision tower gets none)."""
    modules_to_save: tuple[str, ...] = ()
    """Whole modules trained next to the adapters (e.g. ``embed_tokens``): a random tiny base
    cannot learn through LoRA alone; the paper trains adapters only."""


class TrainSettings(_Section):
    epochs: int = Field(30, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    gradient_checkpointing: bool = False
    group_by_length: bool = False
    """Steps of similar lengths (sorted within blocks of 8 steps, steps shuffled): less padding,
    but less mixed steps where length follows content; the order stays a pure function of
    (seed, epoch). On the demo's JMASA training (``configs/demo.yaml`` turns it on) four seeds
    gave the same test F1 and a loss curve within two pooled sd of the ungrouped one."""
    split_by_length: bool = True
    """A step's examples go through the model in passes of similar lengths: the same gradient,
    less padding."""
    target_logits: bool = True
    """The LM head and the fp32 loss only over target positions (in chunks); False: the HF
    default, the whole ``(batch, length, vocab)`` logits in fp32. The same loss."""
    cache_vision: bool = True
    """With the vision tower frozen (LoRA), its outputs computed once per example, not at
    every step: the same inputs to the language model."""
    max_tokens: int | None = Field(None, ge=1)
    """Longest training example in tokens (text + image tokens): longer ones are left out of
    training and listed with their length in the run's ``rejects.jsonl``. None: no cap."""
    finetune: Literal["lora", "full"] = "lora"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    checkpoint_every: int = Field(0, ge=0)
    """Optimizer steps between checkpoints (0: at epoch ends only)."""
    eval_every: int = Field(1, ge=1)
    """Epochs between dev evaluations (and best-epoch candidates); the last is always one."""
    patience: int = Field(0, ge=0)
    """Stop after this many dev evaluations in a row without a better dev metric (0: run every
    epoch). The learning-rate schedule still spans ``epochs``: the epochs that run are the full
    run's, and so is the kept model unless a later epoch would have beaten it."""
    eval_batch_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(48, ge=1)
    """Longest generated answer when evaluating and predicting (tokens)."""
    max_train_examples: int | None = Field(None, ge=1)
    """Cap on training examples (None: all), for quick runs."""
    seed: int | None = Field(None, ge=0)
    """Seed of this stage's training (initialisation of the adapters, data order); None:
    ``runtime.seed``. Experiments vary it to repeat a training over fixed upstream stages."""


class ModelStageSettings(_Section):
    model: str
    lora: LoraSettings = LoraSettings()
    train: TrainSettings = TrainSettings()
    pool: Literal["cpu", "gpu"] = "gpu"
    """Work pool kind this stage's training is deployed to (``runtime.cpu_pool``/``gpu_pool``)."""
    register_as: str | None = None
    """MLflow registered-model name (None: ``iea-aligner`` / ``iea-jmasa``)."""


class AlignerSettings(ModelStageSettings):
    """The aligner stage: a model stage plus its negatives."""

    negatives: float = Field(0.3, ge=0, le=1)
    """Probability that an FGCA row also yields a negative (its region with another image's
    text that does not name its class, target "no phrase"): in training, and in the val rows
    that dev selection scores (``iea.align.training``)."""


class InterpreterSettings(_Section):
    model: str = "Qwen/Qwen3-VL-2B-Instruct"
    max_new_tokens: int = Field(64, ge=1)
    """Upper bound on each answer's length (tokens)."""
    batch_size: int = Field(8, ge=1)
    """Regions per VLM generate call."""
    image_batch: int = Field(16, ge=1)
    """Images whose missing region crops go to the VLM together (batched by size across the
    images); bounds the decoded images and crops held at once."""
    concurrency: int = Field(2, ge=1)
    """Images processed at once by the ``image_interpretation`` flow."""
    pool: Literal["cpu", "gpu"] = "gpu"
    """Work pool kind this stage is deployed to (``runtime.cpu_pool`` / ``runtime.gpu_pool``)."""
    overlay_samples: int = Field(8, ge=0)
    """How many overlays the flow logs to MLflow."""


class FgcaSettings(_Section):
    llm: str = "Qwen/Qwen3-8B"
    """The causal LM that writes the texts (Qwen3: thinking is turned off)."""
    n_train: int = Field(2000, ge=1)
    n_val: int = Field(500, ge=1)
    n_test: int = Field(500, ge=1)
    """Images per split (scaled down, train first, when the dataset has fewer)."""
    source: Literal["files", "synthetic"] = "files"
    root: Path = Path("data/pascal-context")
    """PASCAL-Context root: trainval/*.mat, labels.txt, 59_labels.txt, JPEGImages/."""
    subset: Literal["59", "all"] = "59"
    synthetic_images: int = Field(60, ge=3)
    """Images the synthetic PASCAL-Context generator draws when ``source`` is synthetic."""
    synthetic_seed: int = Field(0, ge=0)
    """Seed of the synthetic PASCAL-Context images (the controlled world's FGCA side)."""
    min_region_area: int = Field(100, ge=1)
    """Class regions smaller than this (pixels) are not regions."""
    max_attempts: int = Field(3, ge=1)
    """Texts per image before it is quarantined (the first greedy, then seeded sampling)."""
    max_new_tokens: int = Field(64, ge=8)
    temperature: float = Field(0.8, gt=0)
    greedy_first: bool = True
    """The first text per image greedy (True), or sampled like the retries (False: varied
    sentence shapes from a small model, whose greedy text is one shape for every image)."""
    batch_size: int = Field(8, ge=1)
    """Images per LLM batch, and per cached unit of work."""
    max_quarantine_fraction: float = Field(0.5, ge=0, le=1)
    """The build fails its gate when more than this share of the images is quarantined."""
    work_dir: Path = Path("outputs/work/fgca")


class StoreSettings(_Section):
    backend: Literal["local", "s3"] = "local"
    root: Path = Path("outputs/store")
    """Local backend: the directory that holds every artifact."""
    endpoint: str | None = None
    """S3 backend: ``host:port`` of the MinIO/S3 server."""
    bucket: str = "iea"
    access_key: SecretStr | None = None
    """A secret: from ``IEA_STORE__ACCESS_KEY`` (or a config file), never written anywhere."""
    secret_key: SecretStr | None = None
    """A secret: from ``IEA_STORE__SECRET_KEY``, never written anywhere."""
    secure: bool = False
    region: str | None = None
    timeout_s: float = Field(60.0, gt=0)
    """S3 backend: seconds to connect, and between bytes of a response, before a try fails."""
    retries: int = Field(5, ge=0)
    """S3 backend: tries after the first for a request that failed in transit (reset, cut,
    timeout, HTTP 5xx such as ``503 SlowDown``), with exponential backoff from 0.2 s."""

    @model_validator(mode="after")
    def _s3_needs_endpoint(self) -> StoreSettings:
        if self.backend == "s3" and not self.endpoint:
            raise ValueError("store.endpoint is required when store.backend is 's3'")
        return self


class TrackingSettings(_Section):
    uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_root: str = "mlruns/artifacts"
    """Where a new experiment keeps its artifacts: a local folder, or a URI such as
    ``s3://iea/mlflow`` (with ``MLFLOW_S3_ENDPOINT_URL`` for MinIO). A string, not a path: a
    path would fold ``s3://`` into ``s3:/``."""
    experiment: str = "iea"


class Settings(_Section):
    runtime: RuntimeSettings = RuntimeSettings()
    data: TwitterDataSettings = TwitterDataSettings(
        src=Path("../shared/data/twitter/twitter2015/vlp_json")
    )
    segment: SegmentSettings = SegmentSettings()
    filters: FilterSettings = FilterSettings()
    interpreter: InterpreterSettings = InterpreterSettings()
    aligner: AlignerSettings = AlignerSettings(model="Qwen/Qwen3-VL-2B-Instruct")
    jmasa: ModelStageSettings = ModelStageSettings(model="Qwen/Qwen3-VL-8B-Instruct")
    fgca: FgcaSettings = FgcaSettings()
    store: StoreSettings = StoreSettings()
    tracking: TrackingSettings = TrackingSettings()
    search: SearchSettings = SearchSettings()
    promotion: PromotionSettings = PromotionSettings()

    def local_caches(self) -> list[Path]:
        """The folders a run writes on local disk, every one a cache that may be wiped: the
        work folders (generated inputs, staging, checkpoints, trained models also held in the
        store, registry downloads, GX contexts), the tiny-model cache and the Hugging Face hub
        cache. With an S3 store and S3 artifacts, everything else a run produces is in the
        bucket."""
        from iea.models.refs import cache_dir, hf_hub_cache

        return [
            Path(self.data.work_dir),
            Path(self.fgca.work_dir),
            cache_dir(self.runtime.model_cache),
            hf_hub_cache(),
        ]

    @model_validator(mode="after")
    def _generator_cut_below_t_conf(self) -> Settings:
        cut, t_conf = self.segment.pred_iou_thresh, self.filters.t_conf
        if cut > t_conf:
            raise ValueError(
                f"segment.pred_iou_thresh ({cut}) is above filters.t_conf ({t_conf}): the mask"
                " generator would drop every mask t_conf is there to judge; set"
                " segment.pred_iou_thresh <= filters.t_conf"
            )
        return self

    def public_dump(self) -> dict[str, Any]:
        """The resolved settings as JSON-able data without credentials: secrets None, URL
        passwords masked. What every record of the settings holds."""
        return _redact_tree(self.model_dump(mode="json"))

    def flat(self) -> dict[str, Any]:
        """The public settings as ``{"section.key": value}`` (for MLflow params)."""
        return _flatten(self.public_dump())


class ConfigError(ValueError):
    """Every problem found in the config sources, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


def config_paths(config: str | Path | Sequence[str | Path] | None) -> list[Path]:
    """The config files of ``config`` in order: none, one path, or a list of paths."""
    if config is None:
        return []
    if isinstance(config, (str, Path)):
        return [Path(config)]
    return [Path(c) for c in config]


def load_settings(
    config: str | Path | Sequence[str | Path] | None = None,
    overrides: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    base: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve defaults < the ecosystem's variables (:data:`ECOSYSTEM_ENV`) < ``base`` < YAML
    file(s) < ``IEA_*`` env vars < ``key=value`` overrides.

    Args:
        config: a YAML file whose nested keys mirror :class:`Settings`, a list of them (later
            files override earlier ones key by key, e.g. a config and the thresholds a search
            exported), or None.
        overrides: ``dotted.key=value`` strings; values are parsed as YAML scalars/lists.
        env: the environment to read ``IEA_SECTION__KEY`` variables from (default ``os.environ``).
        base: settings saved earlier (:meth:`Settings.public_dump`) to start from.

    Raises:
        ConfigError: listing every unreadable file, bad override, unknown key and invalid value.
    """
    settings, _ = _load(config, overrides, env, base)
    return settings


def _load(
    config: str | Path | Sequence[str | Path] | None,
    overrides: Iterable[str],
    env: Mapping[str, str] | None,
    base: Mapping[str, Any] | None,
) -> tuple[Settings, dict[str, str]]:
    """:func:`load_settings`, and the source of every key a source set."""
    problems: list[str] = []
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    env = os.environ if env is None else env
    for key, (value, name) in ecosystem_values(env).items():
        _set(merged, key, value)
        origin[key] = f"env {name}"
    for key, value in _flatten(base or {}).items():  # saved settings: like a config file
        if value is None and (key in SECRET_KEYS or key in ECOSYSTEM_ENV):
            continue  # left out or unset when saved: this environment may supply it
        _set(merged, key, copy.deepcopy(value))
        origin.pop(key, None)

    for path in config_paths(config):
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as e:
            problems.append(f"{path}: cannot read: {e.strerror or e}")
            loaded = {}
        except yaml.YAMLError as e:
            problems.append(f"{path}: not valid YAML: {e}")
            loaded = {}
        if not isinstance(loaded, dict):
            problems.append(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
            loaded = {}
        for key, value in _flatten(loaded).items():
            _set(merged, key, value)
            origin[key] = str(path)

    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        key = name[len(ENV_PREFIX) :].lower().replace("__", ".")
        _set(merged, key, _parse_scalar(raw))
        origin[key] = f"env {name}"  # the name only: never the value

    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"override {item!r}: expected key=value")
            continue
        _set(merged, key, _parse_scalar(raw))
        shown = f"{key}=***" if key in SECRET_KEYS else redact_url(item)
        origin[key] = f"override {shown!r}"

    try:
        settings = Settings.model_validate(merged)
    except ValidationError as e:
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            src = _source_of(loc, origin)
            problems.append(f"{src}: {loc}: {err['msg']}" if src else f"{loc}: {err['msg']}")
        settings = None
    if problems:
        raise ConfigError(problems)
    return settings, origin


def ecosystem_values(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """``{setting: (value, the variable it came from)}`` for :data:`ECOSYSTEM_ENV`'s variables
    set in ``env`` (module doc)."""
    out: dict[str, tuple[Any, str]] = {}
    for key, names in ECOSYSTEM_ENV.items():
        name = next((n for n in names if env.get(n)), None)
        if name is None:
            continue
        value: Any = env[name]
        if key == "store.endpoint":
            scheme, sep, rest = value.partition("://")
            if sep:
                value = rest.rstrip("/")
                out["store.secure"] = (scheme == "https", name)
        out[key] = (value, name)
    return out


def setting_sources(
    config: str | Path | Sequence[str | Path] | None = None,
    overrides: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``{"section.key": where its value came from}`` for every public setting: ``default``,
    ``env NAME`` (an ``IEA_*`` or ecosystem variable, named, never its value), a config file's
    path, or ``override 'key=value'`` (a secret's value masked).

    Raises:
        ConfigError: as :func:`load_settings`.
    """
    settings, origin = _load(config, overrides, env, None)
    return {key: origin.get(key, "default") for key in settings.flat()}


def saved_settings(saved: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Settings:
    """Settings written by :meth:`Settings.public_dump` (a trained model's ``config.json``),
    with this machine's ``IEA_*`` environment over them: the credentials they left out come
    from here."""
    return load_settings(None, (), env=env, base=saved)


def _parse_scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _source_of(loc: str, origin: Mapping[str, str]) -> str | None:
    """The source that set ``loc`` or its closest ancestor/descendant key."""
    if loc in origin:
        return origin[loc]
    hits = [
        src for key, src in origin.items() if key.startswith(loc + ".") or loc.startswith(key + ".")
    ]
    return hits[-1] if hits else None
