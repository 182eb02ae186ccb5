"""Custom Great Expectations for the list-valued ``aspects`` column of canonical tweet frames.

Importing this module registers four metrics and four expectations with GX (registration is a
side effect of class creation).  Each aspect is a ``{"from": int, "to": int, "polarity": str}``
dict whose span is ``tokens[from:to]`` (end exclusive).

Every check is total: a malformed value (``None``, a non-list, a list holding a non-dict, a dict
missing a key or holding a non-int bound) makes that row *fail*, it never raises.  The metrics set
``filter_column_isnull = False`` so a missing ``aspects`` value is judged (and fails) instead of
being silently skipped, which is what GX does by default for column map metrics.

Only the pandas engine is implemented: the frames are built in memory by ``flows.validation``.
Import it through :func:`expectations.register_custom_expectations` (which also keeps GX's
analytics off) before any suite that uses these types is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from numbers import Integral
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

# GX is banned outside flows/ (iea/ is the method); this package is GX's by definition.
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import (
    ColumnMapExpectation,
    ColumnPairMapExpectation,
)
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnMapMetricProvider,
    ColumnPairMapMetricProvider,
    column_condition_partial,
    column_pair_condition_partial,
)

# numpy arrays show up when a frame went through parquet.
_SEQUENCE_TYPES: tuple[type, ...] = (list, tuple, np.ndarray)
_BOOL_TYPES: tuple[type, ...] = (bool, np.bool_)

ASPECT_KEYS: tuple[str, ...] = ("from", "to", "polarity")


# --------------------------------------------------------------------------- value predicates
# Plain functions, so they can be unit-tested and reused without GX.


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, _BOOL_TYPES)


def _aspect_list(value: Any) -> list[Mapping] | None:
    """The aspects of one row if ``value`` is a well-formed aspect list, else None."""
    if not isinstance(value, _SEQUENCE_TYPES):
        return None
    items = list(value)
    for item in items:
        if not isinstance(item, Mapping) or any(key not in item for key in ASPECT_KEYS):
            return None
        if not (_is_int(item["from"]) and _is_int(item["to"])):
            return None
        if not isinstance(item["polarity"], str):
            return None
    return items


def aspects_well_formed(value: Any) -> bool:
    """A list of ``{"from": int, "to": int, "polarity": str}`` dicts (possibly empty)."""
    return _aspect_list(value) is not None


def aspect_polarities_in_set(value: Any, value_set: Any) -> bool:
    """Every aspect's polarity is in ``value_set``."""
    aspects = _aspect_list(value)
    if aspects is None:
        return False
    allowed = set(value_set or ())
    return all(a["polarity"] in allowed for a in aspects)


def aspects_do_not_overlap(value: Any) -> bool:
    """No two aspect spans ``[from, to)`` share a token (touching spans are fine)."""
    aspects = _aspect_list(value)
    if aspects is None:
        return False
    spans = sorted((int(a["from"]), int(a["to"])) for a in aspects)
    for previous, current in pairwise(spans):
        # The next span must start at or after the previous one ends; a repeated span counts
        # as an overlap even when it is empty.
        if current[0] < previous[1] or current == previous:
            return False
    return True


def aspect_spans_within_tokens(aspects_value: Any, tokens_value: Any) -> bool:
    """Every aspect satisfies ``0 <= from < to <= len(tokens)``."""
    aspects = _aspect_list(aspects_value)
    if aspects is None or not isinstance(tokens_value, _SEQUENCE_TYPES):
        return False
    n_tokens = len(tokens_value)
    return all(0 <= int(a["from"]) < int(a["to"]) <= n_tokens for a in aspects)


def _map_bool(series: pd.Series, fn, *args: Any) -> pd.Series:
    """``fn`` applied per value as a bool Series aligned with ``series`` (exceptions -> False)."""

    def safe(value: Any) -> bool:
        try:
            return bool(fn(value, *args))
        except Exception:  # a check must fail the row, never the whole validation
            return False

    return pd.Series([safe(v) for v in series], index=series.index, dtype=bool)


# --------------------------------------------------------------------------- metrics


class ColumnValuesAspectsWellFormed(ColumnMapMetricProvider):
    condition_metric_name = "column_values.iea_aspects_well_formed"
    filter_column_isnull = False

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        return _map_bool(column, aspects_well_formed)


class ColumnValuesAspectPolaritiesInSet(ColumnMapMetricProvider):
    condition_metric_name = "column_values.iea_aspect_polarities_in_set"
    condition_value_keys = ("value_set",)
    filter_column_isnull = False

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, value_set, **kwargs):
        return _map_bool(column, aspect_polarities_in_set, value_set)


class ColumnValuesAspectsDoNotOverlap(ColumnMapMetricProvider):
    condition_metric_name = "column_values.iea_aspects_do_not_overlap"
    filter_column_isnull = False

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        return _map_bool(column, aspects_do_not_overlap)


class ColumnPairValuesAspectSpansWithinTokens(ColumnPairMapMetricProvider):
    condition_metric_name = "column_pair_values.iea_aspect_spans_within_tokens"
    condition_domain_keys = (
        "batch_id",
        "table",
        "column_A",
        "column_B",
        "row_condition",
        "condition_parser",
        "ignore_row_if",
    )
    condition_value_keys = ()

    # noinspection PyPep8Naming
    @column_pair_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_A, column_B, **kwargs):
        values = pd.Series(list(zip(column_A, column_B, strict=True)), index=column_A.index)
        return _map_bool(values, lambda pair: aspect_spans_within_tokens(*pair))


# --------------------------------------------------------------------------- expectations
# The snake_case of each class name is the expectation ``type`` used in the suite JSON.

_LIBRARY_METADATA: dict[str, Any] = {
    "maturity": "experimental",
    "tags": ["iea", "twitter", "aspects"],
    "contributors": ["iea"],
    "requirements": [],
}


class ExpectColumnValuesToBeAspectLists(ColumnMapExpectation):
    """Each value is a list of ``{"from": int, "to": int, "polarity": str}`` dicts.

    Type: ``expect_column_values_to_be_aspect_lists``.  Missing values fail.
    """

    map_metric = "column_values.iea_aspects_well_formed"
    success_keys = ("mostly",)
    args_keys = ("column",)
    library_metadata: ClassVar[dict[str, Any]] = _LIBRARY_METADATA


class ExpectColumnValuesAspectPolaritiesToBeInSet(ColumnMapExpectation):
    """Every aspect's ``polarity`` in each value is in ``value_set``.

    Type: ``expect_column_values_aspect_polarities_to_be_in_set``.  Malformed values fail.
    """

    value_set: list[str]

    map_metric = "column_values.iea_aspect_polarities_in_set"
    success_keys = ("value_set", "mostly")
    args_keys = ("column", "value_set")
    library_metadata: ClassVar[dict[str, Any]] = _LIBRARY_METADATA


class ExpectColumnValuesAspectsToNotOverlap(ColumnMapExpectation):
    """No two aspect spans within one value share a token.

    Type: ``expect_column_values_aspects_to_not_overlap``.  Malformed values fail.
    """

    map_metric = "column_values.iea_aspects_do_not_overlap"
    success_keys = ("mostly",)
    args_keys = ("column",)
    library_metadata: ClassVar[dict[str, Any]] = _LIBRARY_METADATA


class ExpectColumnPairAspectSpansToBeWithinTokens(ColumnPairMapExpectation):
    """Every aspect in ``column_A`` satisfies ``0 <= from < to <= len(column_B)``.

    Type: ``expect_column_pair_aspect_spans_to_be_within_tokens``; ``column_A`` holds the
    aspect lists, ``column_B`` the token lists.  Malformed values (either column) fail, and by
    default (``ignore_row_if="neither"``) so do missing ones.
    """

    ignore_row_if: Literal["both_values_are_missing", "either_value_is_missing", "neither"] = (
        "neither"
    )

    map_metric = "column_pair_values.iea_aspect_spans_within_tokens"
    success_keys = ("column_A", "column_B", "ignore_row_if", "mostly")
    args_keys = ("column_A", "column_B")
    library_metadata: ClassVar[dict[str, Any]] = _LIBRARY_METADATA


CUSTOM_EXPECTATION_TYPES: tuple[str, ...] = (
    "expect_column_values_to_be_aspect_lists",
    "expect_column_values_aspect_polarities_to_be_in_set",
    "expect_column_values_aspects_to_not_overlap",
    "expect_column_pair_aspect_spans_to_be_within_tokens",
)
