"""Great Expectations data validation for canonical tweets.

The suites live in the repo (``expectations/<name>.json``); at run time they are copied into a
*file* data context under a runtime directory (``context_root``, e.g. ``mlruns/gx`` or a test's
tmp dir) and loaded through it, so what runs is exactly what is committed.  GX is imported
lazily (it takes seconds) inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core import ExpectationSuite
    from great_expectations.data_context import FileDataContext

    from iea.align.records import FgcaRecord
    from iea.data.records import Tweet


from expectations import EXPECTED_CHECKS, SUITE_DIR, register_custom_expectations, suite_path

__all__ = ["EXPECTED_CHECKS", "SUITE_DIR", "register_custom_expectations", "suite_path"]

DATASOURCE_NAME = "iea_frames"
ASSET_NAME = "frame"
BATCH_DEFINITION_NAME = "whole_frame"
MAX_LISTED_IDS = 50
FRAME_COLUMNS: tuple[str, ...] = ("id", "tokens", "n_tokens", "image_id", "aspects")


@dataclass
class ValidationReport:
    """The outcome of validating one frame against one suite.

    ``failures`` has one dict per failed expectation: ``expectation_type``, ``check`` (its
    description from the suite's ``meta``), ``columns``, ``unexpected_count``, ``ids`` (the
    failing rows' ids, at most :data:`MAX_LISTED_IDS`) and ``exception`` (the error message when
    the expectation itself raised, else None).  ``result`` is GX's JSON-serialisable
    validation result.
    """

    success: bool
    n_checks: int
    failures: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        if self.success:
            return f"all {self.n_checks} checks passed"
        lines = [f"{len(self.failures)} of {self.n_checks} checks failed:"]
        for f in self.failures:
            where = ", ".join(f["columns"]) or "table"
            what = f["check"] or f["expectation_type"]
            if f["exception"]:
                lines.append(f"- {what} [{f['expectation_type']}] on {where}: {f['exception']}")
                continue
            count = f["unexpected_count"]
            ids = ", ".join(str(i) for i in f["ids"])
            more = (count or 0) - len(f["ids"])
            if more > 0:
                ids += f", ... and {more} more"
            lines.append(
                f"- {what} [{f['expectation_type']}] on {where}: {count} rows"
                + (f" (ids: {ids})" if ids else "")
            )
        return "\n".join(lines)


class ValidationFailed(RuntimeError):
    """Data failed its expectation suite; ``report`` holds the details.

    The message lists each failed check with its failing ids, prefixed by ``where`` (e.g. the
    file that was validated) when given.
    """

    def __init__(self, report: ValidationReport, where: str | None = None):
        self.report = report
        self.where = where
        summary = report.summary()
        super().__init__(f"{where}: {summary}" if where else summary)


# --------------------------------------------------------------------------- frames


def tweets_frame(tweets: Iterable[Tweet]) -> pd.DataFrame:
    """One row per tweet: ``id``, ``tokens`` (list), ``n_tokens``, ``image_id``, ``aspects``
    (list of ``{"from", "to", "polarity"}`` dicts, as in :meth:`Tweet.to_json`)."""
    import pandas as pd

    rows = []
    for tweet in tweets:
        obj = tweet.to_json()
        rows.append(
            {
                "id": obj["id"],
                "tokens": obj["tokens"],
                "n_tokens": len(obj["tokens"]),
                "image_id": obj["image_id"],
                "aspects": obj["aspects"],
            }
        )
    frame = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
    return frame.astype({"n_tokens": "int64"})


# --------------------------------------------------------------------------- context + suite


def _context(context_root: Path) -> FileDataContext:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context_root = Path(context_root)
    context_root.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=context_root)
    # tqdm bars on every validation would flood flow logs.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


@contextlib.contextmanager
def _context_lock(context_root: Path):
    """Hold an exclusive ``flock`` on ``<context_root>/.iea-gx.lock`` (released when the process
    dies): GX's file context rewrites suite and config files in place, so two processes using
    one context at once can read a half-written file. Processes and threads take turns."""
    import fcntl

    context_root = Path(context_root)
    context_root.mkdir(parents=True, exist_ok=True)
    with open(context_root / ".iea-gx.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load_suite(context: FileDataContext, name: str) -> ExpectationSuite:
    if name not in EXPECTED_CHECKS:
        raise KeyError(f"unknown expectation suite {name!r} (known: {sorted(EXPECTED_CHECKS)})")
    register_custom_expectations()  # before loading: GX drops unknown expectation types
    text = suite_path(name).read_text(encoding="utf-8")
    saved_types = [e["type"] for e in json.loads(text)["expectations"]]

    # Copy the committed JSON verbatim into the context's expectations store (overwriting any
    # stale copy), then load it back the way GX loads any stored suite.
    store = context.expectations_store
    key = store.get_key(name=name, id=None)
    store.store_backend.set(store.key_to_tuple(key), text.rstrip("\n"))
    suite = context.suites.get(name)

    loaded_types = [e.expectation_type for e in suite.expectations]
    expected = EXPECTED_CHECKS[name]
    if len(loaded_types) != expected:
        lost = sorted(set(saved_types) - set(loaded_types))
        raise RuntimeError(
            f"expectation suite {name!r} loaded with {len(loaded_types)} expectations, "
            f"expected {expected} ({len(saved_types)} in {suite_path(name)}); "
            f"missing types: {lost or 'none'} (unregistered custom expectations are dropped "
            "silently by GX; is expectations.EXPECTED_CHECKS up to date?)"
        )
    return suite


def load_suite(name: str, context_root: Path) -> ExpectationSuite:
    """Suite ``name`` from ``expectations/<name>.json``, loaded through a file data context at
    ``context_root``.  Raises RuntimeError if it loads with a number of expectations other than
    ``EXPECTED_CHECKS[name]`` (GX drops expectations whose types it does not know)."""
    with _context_lock(context_root):
        return _load_suite(_context(context_root), name)


def _batch_definition(context: FileDataContext):
    try:
        datasource = context.data_sources.get(DATASOURCE_NAME)
    except KeyError:
        datasource = context.data_sources.add_pandas(name=DATASOURCE_NAME)
    try:
        asset = datasource.get_asset(ASSET_NAME)
    except LookupError:
        asset = datasource.add_dataframe_asset(name=ASSET_NAME)
    try:
        return asset.get_batch_definition(BATCH_DEFINITION_NAME)
    except KeyError:
        return asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION_NAME)


# --------------------------------------------------------------------------- validation


def _json_scalar(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, list | tuple | dict):
        with contextlib.suppress(ValueError, TypeError):
            value = value.item()  # numpy scalar -> python
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _columns(kwargs: dict[str, Any]) -> list[str]:
    if "column" in kwargs:
        return [kwargs["column"]]
    if "column_A" in kwargs:
        return [kwargs["column_A"], kwargs["column_B"]]
    return list(kwargs.get("column_list") or [])


def _failure(
    expectation_result: dict[str, Any], id_column: str, max_ids: int | None = MAX_LISTED_IDS
) -> dict[str, Any]:
    config = expectation_result.get("expectation_config") or {}
    kwargs = config.get("kwargs") or {}
    result = expectation_result.get("result") or {}
    exception = expectation_result.get("exception_info") or {}
    if exception and not exception.get("raised_exception"):
        # Suite-level results map each metric to its exception info.
        raised = [
            v for v in exception.values() if isinstance(v, dict) and v.get("raised_exception")
        ]
        exception = raised[0] if raised else {}
    index_list: Sequence[Any] = result.get("unexpected_index_list") or []
    ids = []
    for entry in index_list:
        if max_ids is not None and len(ids) >= max_ids:
            break
        ids.append(_json_scalar(entry.get(id_column) if isinstance(entry, dict) else entry))
    return {
        "expectation_type": config.get("type"),
        "check": (config.get("meta") or {}).get("check"),
        "severity": config.get("severity") or "critical",
        "columns": _columns(kwargs),
        "unexpected_count": result.get("unexpected_count"),
        "ids": ids,
        "exception": (
            exception.get("exception_message") if exception.get("raised_exception") else None
        ),
    }


def validate_frame(
    df: pd.DataFrame,
    suite_name: str,
    context_root: Path,
    id_column: str = "id",
    max_ids: int | None = MAX_LISTED_IDS,
) -> ValidationReport:
    """Validate ``df`` against suite ``suite_name``; failing rows are named by ``id_column``
    (at most ``max_ids`` per check; None lists them all).

    Uses a pandas datasource / dataframe asset / whole-dataframe batch definition in the file
    context at ``context_root`` (created on first use, reused afterwards; processes sharing the
    context take turns, see :func:`_context_lock`).
    """
    if id_column not in df.columns:
        raise ValueError(f"id column {id_column!r} not in frame columns {list(df.columns)}")
    with _context_lock(context_root):  # one process at a time in a file context
        context = _context(context_root)
        suite = _load_suite(context, suite_name)
        batch = _batch_definition(context).get_batch(batch_parameters={"dataframe": df})
        result = batch.validate(
            suite,
            result_format={
                "result_format": "COMPLETE",
                "unexpected_index_column_names": [id_column],
                "return_unexpected_index_query": False,
            },
        )
    result_dict = result.to_json_dict()
    failures = [
        _failure(r, id_column, max_ids)
        for r in result_dict.get("results", [])
        if not r.get("success")
    ]
    return ValidationReport(
        success=bool(result_dict.get("success")) and not failures,
        n_checks=len(suite.expectations),
        failures=failures,
        result=result_dict,
    )


def validate_tweets(tweets: Iterable[Tweet], context_root: Path) -> ValidationReport:
    """Validate canonical tweets against the ``twitter_canonical`` suite."""
    return validate_frame(tweets_frame(tweets), "twitter_canonical", context_root)


def fgca_frame(
    records: Sequence[FgcaRecord], where: str = "", train_classes: set[int] | None = None
) -> pd.DataFrame:
    """FGCA rows plus the derived columns the ``fgca`` suite checks.

    ``row`` names each record (``<where>:<line> <image_id>/<region_id>``, line = 1-based
    position); ``classes_with_records`` and ``image_classes`` are the sorted class ids of the
    image's records and of the image itself (as strings); ``splits_of_image`` counts the splits
    the image appears in; ``class_seen_in_train`` is True when some train row (of ``records``,
    plus ``train_classes`` when given) has the class.
    """
    import pandas as pd

    df = pd.DataFrame([r.to_json() for r in records])
    if df.empty:
        return df
    prefix = f"{where}:" if where else "line "
    df["row"] = [f"{prefix}{i + 1} {r.image_id}/{r.region_id}" for i, r in enumerate(records)]
    df["start"] = df["start"].astype(object)
    df["end"] = df["end"].astype(object)
    by_image = df.groupby("image_id")["class_id"].agg(lambda s: ",".join(map(str, sorted(s))))
    df["classes_with_records"] = df["image_id"].map(by_image)
    df["image_classes"] = [",".join(map(str, sorted(r.image_class_ids))) for r in records]
    df["splits_of_image"] = df["image_id"].map(df.groupby("image_id")["split"].nunique())
    seen = set(df.loc[df["split"] == "train", "class_id"]) | set(train_classes or ())
    df["class_seen_in_train"] = df["class_id"].isin(seen)
    return df.drop(columns=["bbox", "image_class_ids"])


def validate_fgca(
    records: Sequence[FgcaRecord],
    context_root: Path,
    where: str = "",
    train_classes: set[int] | None = None,
) -> tuple[ValidationReport, pd.DataFrame]:
    """Validate FGCA records against the ``fgca`` suite; every failing row is listed."""
    frame = fgca_frame(records, where, train_classes)
    return validate_frame(frame, "fgca", context_root, id_column="row", max_ids=None), frame
