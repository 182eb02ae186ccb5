"""The ``batch_predict`` flow: every tweet of an input answered by one model, streamed.

Requests come from :func:`iea.batch.read_requests` (a JSONL of text + image path, or a
public-format dataset with its images) ``chunk`` at a time, each chunk a Prefect task; answers
and failures are appended to ``predictions.jsonl.partial`` / ``failures.jsonl.partial`` and
renamed into place when the run ends, so a crashed run never leaves a file that looks
complete. Memory holds one chunk, whatever the input's length. With ``runtime.task_runner:
dask`` the chunks go to the workers of a Dask cluster (:mod:`flows.runners`), at most
``2 * runtime.dask_workers`` in flight, each worker loading the version once; answers are
written in input order as with threads.

``OUT/predictions.jsonl``: one line per answered tweet, ``{"id", "where", "image", "text",
"pairs" (each with the regions that back it), "regions", "output", "parsed", "ablation",
"model"}``. ``OUT/failures.jsonl``: ``{"where", "reason", "id", "image"}`` per tweet with no
answer. ``OUT/overlays/<n>.png`` for the first ``overlays`` answers. ``OUT/summary.json``:
counts, pairs per polarity, failure reasons, the model version. The run is logged to MLflow
(``batch_predict``: the model as a param, the counts as metrics, the summary, failures and
overlays as artifacts).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
from pathlib import Path
from typing import Any

import mlflow
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows import tracking
from iea.batch import Failed, Request, Summary, read_requests
from iea.config import load_settings
from iea.progress import report

_PREDICTORS: dict[tuple[str, str], Any] = {}


def _predictor(model: str, tracking_uri: str):
    """The registered ``model``'s predictor, loaded once per process (a Dask worker's tasks
    share it)."""
    key = (model, tracking_uri)
    if key not in _PREDICTORS:
        from flows.registry import load_predictor

        mlflow.set_tracking_uri(tracking_uri)
        _PREDICTORS[key] = load_predictor(model)[0]
    return _PREDICTORS[key]


@task(cache_policy=NONE, task_run_name="predict-chunk-{index}")
def predict_chunk(
    predictor, chunk: list[Request | Failed], index: int, tracking_uri: str | None = None
) -> list[dict[str, Any]]:
    """``{"ok": answer}`` or ``{"failed": Failed}`` per item of ``chunk``, in order: a tweet
    whose image cannot be read, or whose prediction raises, fails alone. ``predictor`` is a
    loaded predictor, or a model URI loaded here from ``tracking_uri`` (on a Dask worker)."""
    if isinstance(predictor, str):
        predictor = _predictor(predictor, tracking_uri)
    todo = [item for item in chunk if not isinstance(item, Failed)]
    try:  # the chunk's tweets in one batched pass; a tweet that fails, fails alone
        answers = iter(predictor.predict_many([(item.image, item.text) for item in todo]))
    except Exception:  # a failure of the whole pass (a model error): each tweet on its own
        answers = iter(_one_by_one(predictor, todo))
    out = []
    for item in chunk:
        if isinstance(item, Failed):
            out.append({"failed": item})
            continue
        answer = next(answers)
        if isinstance(answer, Exception):  # one tweet's failure, with its reason
            reason = f"{type(answer).__name__}: {answer}"
            out.append({"failed": Failed(item.where, reason, item.id, item.image)})
            continue
        out.append({"ok": {"id": item.id, "where": item.where, "image": item.image, **answer}})
    return out


def _one_by_one(predictor, items: list[Request]) -> list[dict[str, Any] | Exception]:
    out: list[dict[str, Any] | Exception] = []
    for item in items:
        try:
            out.append(predictor.predict(item.image, item.text))
        except Exception as e:
            out.append(e)
    return out


def _count_lines(path: Path) -> int | None:
    if not path.is_file():
        return None
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


@flow(name="batch_predict", log_prints=True)
def batch_predict(
    config: str | list[str] | None,
    overrides: list[str] | None,
    input: str,
    out: str,
    model: str = "models:/iea-jmasa@champion",
    images: str | None = None,
    fmt: str | None = None,
    overlays: int = 3,
    chunk: int = 32,
) -> dict[str, Any]:
    """Answer every tweet of ``input`` with ``model`` into ``out`` (module doc).

    Returns:
        The summary: ``{"requests", "answered", "failed", "pairs", "tweets_with_pairs",
        "polarity", "failure_reasons", "model", "out", "run_id"}``.
    """
    from flows.registry import load_predictor, version_of
    from flows.runners import task_runner
    from iea.predict import draw_pairs

    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    settings = load_settings(config, overrides or [])
    logger = get_run_logger()
    tracking.configure(settings)
    requests = read_requests(input, images, fmt)  # raises on a missing input before any work
    first = list(itertools.islice(requests, 1))
    fan_out = settings.runtime.task_runner != "thread"
    if fan_out and model.startswith("models:/"):  # each worker loads it once (module doc)
        name, version = version_of(model)
        predictor = f"models:/{name}/{version}"  # the alias resolved once, for every chunk
        answered_by = {"model": predictor, "name": name, "version": version}
    elif fan_out:
        predictor, answered_by = model, {"model": model}
    else:
        predictor, answered_by = load_predictor(model)
    total = _count_lines(Path(input)) if fmt is None else None
    dst = Path(out)
    (dst / "overlays").mkdir(parents=True, exist_ok=True)
    preds_part, fails_part = dst / "predictions.jsonl.partial", dst / "failures.jsonl.partial"
    summary, drawn = Summary(), 0
    stream = itertools.chain(first, requests)
    with (
        tracking.start_run(settings, "batch_predict", tags={"stage": "batch_predict"}) as run,
        preds_part.open("w", encoding="utf-8") as preds,
        fails_part.open("w", encoding="utf-8") as fails,
    ):
        mlflow.log_params({"model": answered_by["model"], "input": str(input), "out": str(dst)})

        def write(rows: list[dict[str, Any]]) -> None:
            nonlocal drawn
            for row in rows:
                if "failed" in row:
                    summary.add_failure(row["failed"])
                    fails.write(json.dumps(row["failed"].to_json(), ensure_ascii=False) + "\n")
                    continue
                answer = {**row["ok"], "model": answered_by["model"]}
                summary.add_answer(answer)
                preds.write(json.dumps(answer, ensure_ascii=False) + "\n")
                if drawn < overlays:
                    draw_pairs(answer["image"], answer).save(dst / "overlays" / f"{drawn}.png")
                    drawn += 1
            preds.flush()
            fails.flush()
            done = summary.requests
            logger.info(
                "batch: %d%s tweets, %d answered, %d failed",
                done,
                f"/{total}" if total else "",
                summary.answered,
                summary.failed,
            )
            report("batch predict", done, total)  # a bar on the CLI, counts in Prefect

        with contextlib.ExitStack() as stack:
            runner = stack.enter_context(task_runner(settings, 1)) if fan_out else None
            window: collections.deque = collections.deque()  # chunks in flight, input order
            ahead = 2 * settings.runtime.dask_workers
            for index in itertools.count():
                items = list(itertools.islice(stream, chunk))
                if not items:
                    break
                if runner is None:
                    write(predict_chunk(predictor, items, index))
                    continue
                params = {
                    "predictor": predictor,
                    "chunk": items,
                    "index": index,
                    "tracking_uri": mlflow.get_tracking_uri(),
                }
                window.append(runner.submit(predict_chunk, params))
                while len(window) > ahead:  # memory holds a bounded number of chunks
                    write(window.popleft().result())
            while window:
                write(window.popleft().result())
        result = {**summary.to_json(), "model": answered_by}
        mlflow.log_metrics({k: v for k, v in summary.to_json().items() if isinstance(v, int)})
        mlflow.log_metrics({f"polarity/{k}": v for k, v in summary.polarity.items()})
        mlflow.log_dict(result, "summary.json")
        run_id = run.info.run_id
    os.replace(preds_part, dst / "predictions.jsonl")  # published only when complete
    os.replace(fails_part, dst / "failures.jsonl")
    (dst / "summary.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    with mlflow.start_run(run_id=run_id):
        mlflow.log_artifact(str(dst / "failures.jsonl"))
        if drawn:
            mlflow.log_artifacts(str(dst / "overlays"), "overlays")
    return {**result, "out": str(dst), "run_id": run_id}
