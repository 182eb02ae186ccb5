"""Custom Great Expectations for FGCA span rows (columns ``text``, ``start``, ``end``, ``phrase``).

Both checks are total: a row with a missing value, a non-string text or a non-integer bound
fails; nothing raises. Imported by :func:`expectations.register_custom_expectations`.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, ClassVar

import pandas as pd
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import MulticolumnMapExpectation
from great_expectations.expectations.metrics.map_metric_provider import (
    MulticolumnMapMetricProvider,
)
from great_expectations.expectations.metrics.map_metric_provider.multicolumn_condition_partial import (  # noqa: E501
    multicolumn_condition_partial,
)


def span_within_text(text: Any, start: Any, end: Any) -> bool:
    """``0 <= start < end <= len(text)`` with integer bounds and a string text."""
    ints = all(isinstance(v, Integral) and not isinstance(v, bool) for v in (start, end))
    return isinstance(text, str) and ints and 0 <= start < end <= len(text)


def span_equals_phrase(text: Any, start: Any, end: Any, phrase: Any) -> bool:
    """``text[start:end] == phrase`` for a valid span."""
    return span_within_text(text, start, end) and text[start:end] == phrase


def _rows(frame: pd.DataFrame, fn) -> pd.Series:
    return pd.Series([bool(fn(*row)) for row in frame.itertuples(index=False)], index=frame.index)


class FgcaSpanWithinText(MulticolumnMapMetricProvider):
    condition_metric_name = "multicolumn_values.iea_fgca_span_within_text"
    condition_domain_keys = (
        "batch_id",
        "table",
        "column_list",
        "row_condition",
        "condition_parser",
        "ignore_row_if",
    )
    filter_column_isnull = False

    @multicolumn_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_list, **kwargs):
        return _rows(column_list, span_within_text)


class FgcaSpanEqualsPhrase(MulticolumnMapMetricProvider):
    condition_metric_name = "multicolumn_values.iea_fgca_span_equals_phrase"
    condition_domain_keys = (
        "batch_id",
        "table",
        "column_list",
        "row_condition",
        "condition_parser",
        "ignore_row_if",
    )
    filter_column_isnull = False

    @multicolumn_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_list, **kwargs):
        return _rows(column_list, span_equals_phrase)


_LIBRARY_METADATA: dict[str, Any] = {
    "maturity": "experimental",
    "tags": ["iea", "fgca", "spans"],
    "contributors": ["iea"],
    "requirements": [],
}


class ExpectFgcaSpansToBeWithinText(MulticolumnMapExpectation):
    """``0 <= start < end <= len(text)`` on every row; ``column_list`` is
    ``[text, start, end]``. Type: ``expect_fgca_spans_to_be_within_text``."""

    ignore_row_if: str = "never"
    map_metric = "multicolumn_values.iea_fgca_span_within_text"
    success_keys = ("column_list", "ignore_row_if", "mostly")
    args_keys = ("column_list",)
    library_metadata: ClassVar[dict[str, Any]] = _LIBRARY_METADATA


class ExpectFgcaSpansToEqualPhrases(MulticolumnMapExpectation):
    """``text[start:end] == phrase`` on every row; ``column_list`` is
    ``[text, start, end, phrase]``. Type: ``expect_fgca_spans_to_equal_phrases``."""

    ignore_row_if: str = "never"
    map_metric = "multicolumn_values.iea_fgca_span_equals_phrase"
    success_keys = ("column_list", "ignore_row_if", "mostly")
    args_keys = ("column_list",)
    library_metadata: ClassVar[dict[str, Any]] = _LIBRARY_METADATA
