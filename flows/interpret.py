"""Prefect flow ``image_interpretation``: every image of a dataset through the interpreter stage.

Images are processed in chunks mapped over the task runner ``runtime.task_runner`` selects
(:mod:`flows.runners`): a thread pool of ``interpreter.concurrency`` workers that share one
:class:`ImageInterpreter` (models load once, on the first cache miss), or the processes of a
Dask cluster (one interpreter per process). Per-image results go to the store under
``interpretations/<run key>/``, and the sampled overlays under ``.../overlays/`` (so a worker
on another machine needs no shared disk); images that cannot be decoded are listed in
``quarantine.jsonl`` there with their reason, and the run goes on. MLflow gets the counts,
images/s and regions/s, and the overlays.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import mlflow
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows import tracking
from flows.preprocess import prepare_source
from iea.config import Settings, load_settings
from iea.data.images import ImageDecodeError
from iea.keys import digest, interpreter_fields, segment_fields
from iea.progress import report
from iea.store import open_store
from iea.vision.interpreter import ImageInterpreter, write_outputs

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_INTERPRETERS: dict[str, ImageInterpreter] = {}


def work_pool_for(settings: Settings) -> str:
    """The Prefect work pool this stage's deployment runs on (``interpreter.pool``)."""
    rt = settings.runtime
    return rt.gpu_pool if settings.interpreter.pool == "gpu" else rt.cpu_pool


def _interpreter(settings: Settings) -> ImageInterpreter:
    key = settings.model_dump_json()
    if key not in _INTERPRETERS:  # one per settings per process: models stay loaded
        _INTERPRETERS[key] = ImageInterpreter(settings, open_store(settings.store))
    return _INTERPRETERS[key]


@task(cache_policy=NONE)
def interpret_chunk(
    settings: Settings, paths: list[str], run_key: str, overlays: int
) -> list[dict]:
    """Interpret a chunk of images, ``interpreter.image_batch`` at a time (their missing crops
    in one VLM pass); returns one summary per image (or its error). The first
    ``overlays`` images that decode get an overlay under ``interpretations/<run_key>/overlays/``
    in the store."""
    from iea.store import put_tree

    interp = _interpreter(settings)
    store = interp.store
    out = []
    step = settings.interpreter.image_batch
    for start in range(0, len(paths), step):
        group = paths[start : start + step]
        t0 = time.perf_counter()
        results = interp.run_many([Path(p) for p in group])  # one VLM pass for the group
        seconds = (time.perf_counter() - t0) / len(group)
        for p, result in zip(group, results, strict=True):
            if isinstance(result, ImageDecodeError):
                out.append({"image": p, "error": str(result)})
                continue
            doc = result.to_json()
            store.put(
                f"interpretations/{run_key}/{result.image_sha256}.json", json.dumps(doc).encode()
            )
            if overlays > 0:
                with tempfile.TemporaryDirectory() as tmp:
                    write_outputs(result, Path(tmp))
                    put_tree(store, f"interpretations/{run_key}/overlays/{Path(p).stem}", tmp)
                overlays -= 1
            out.append(
                {
                    "image": p,
                    "regions": len(result.regions),
                    "kept": len(result.kept),
                    "dropped": Counter(r for why in result.reasons for r in why),
                    "unparsed": sum(not i.parsed for i in result.interpretations.values()),
                    "cache": result.cache,
                    "seconds": seconds,  # the group's time, shared
                }
            )
    return out


@flow(name="image_interpretation", log_prints=True)
def image_interpretation(
    config: str | list[str] | None = None,
    overrides: list[str] | None = None,
    images: str | None = None,
    limit: int | None = None,
) -> dict:
    """Run the interpreter over ``images`` (a folder; default: the dataset's image folder).

    Returns:
        ``{"images", "regions", "kept", "errors", "images_per_s", "regions_per_s", "run_id",
        "store_prefix", "work_pool"}``.
    """
    settings = load_settings(config, overrides or [])
    logger = get_run_logger()
    folder = Path(images) if images else prepare_source(settings)[1]
    if folder is None or not Path(folder).is_dir():
        raise FileNotFoundError(
            f"image folder {folder} not found (set data.images or pass images=)"
        )
    paths = sorted(str(p) for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[
        :limit
    ]
    # what changes the outputs (iea/keys.py), not concurrency or the overlays logged
    run_key = digest(
        {
            "segment": segment_fields(settings),
            "filters": settings.filters.model_dump(mode="json"),
            "interpreter": interpreter_fields(settings),
            "dtype": settings.runtime.dtype,
            "seed": settings.runtime.seed,
        }
    )
    n_chunks = max(1, min(len(paths), settings.interpreter.concurrency * 4))
    chunks = [paths[i::n_chunks] for i in range(n_chunks) if paths[i::n_chunks]]
    n_samples = settings.interpreter.overlay_samples
    logger.info("interpreting %d images from %s in %d chunks", len(paths), folder, len(chunks))

    per_chunk = -(-n_samples // len(chunks)) if chunks else 0  # ceil: spread over the chunks
    with tempfile.TemporaryDirectory() as overlays:
        t0 = time.perf_counter()
        futures = [interpret_chunk.submit(settings, chunk, run_key, per_chunk) for chunk in chunks]
        rows = []
        for f in futures:
            rows += f.result()
            report("interpret images", len(rows), len(paths))
        elapsed = time.perf_counter() - t0
        ok = [r for r in rows if "error" not in r]
        errors = [r for r in rows if "error" in r]
        store = open_store(settings.store)
        prefix = f"interpretations/{run_key}"
        for key in store.list(f"{prefix}/overlays/"):
            if key.endswith("/overlay.png"):
                store.get_file(key, Path(overlays) / key.removeprefix(f"{prefix}/overlays/"))
        store.put(
            f"{prefix}/quarantine.jsonl", "".join(json.dumps(e) + "\n" for e in errors).encode()
        )
        n_regions = sum(r["regions"] for r in ok)
        dropped = sum((Counter(r["dropped"]) for r in ok), Counter())
        summary = {
            "images": len(ok),
            "regions": n_regions,
            "kept": sum(r["kept"] for r in ok),
            "unparsed": sum(r["unparsed"] for r in ok),
            "errors": len(errors),
            "segmentation_cache_hits": sum(r["cache"]["segmentation"] == "hit" for r in ok),
            "images_per_s": len(ok) / elapsed if elapsed else 0.0,
            "regions_per_s": n_regions / elapsed if elapsed else 0.0,
            **{f"dropped.{k}": v for k, v in dropped.items()},
        }
        with tracking.start_run(
            settings, "image_interpretation", tags={"stage": "interpret"}
        ) as run:
            mlflow.log_metrics(summary)
            mlflow.set_tags({"work_pool": work_pool_for(settings), "store_prefix": prefix})
            for sample in sorted(Path(overlays).glob("*/overlay.png"))[:n_samples]:
                mlflow.log_artifact(str(sample), f"overlays/{sample.parent.name}")
            if errors:
                mlflow.log_text("".join(json.dumps(e) + "\n" for e in errors), "quarantine.jsonl")
    for e in errors:
        logger.warning("quarantined %s", e["error"])
    return {
        **summary,
        "run_id": run.info.run_id,
        "store_prefix": prefix,
        "work_pool": work_pool_for(settings),
    }


def run_image_interpretation(
    config: str | list[str] | None, overrides: list[str], **kwargs
) -> dict:
    """Run the flow on the task runner of ``runtime.task_runner`` (threads:
    ``interpreter.concurrency`` of them)."""
    from flows.runners import task_runner

    settings = load_settings(config, overrides)
    runner = task_runner(settings, settings.interpreter.concurrency)
    return image_interpretation.with_options(task_runner=runner)(config, overrides, **kwargs)
