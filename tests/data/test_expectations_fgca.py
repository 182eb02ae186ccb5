"""The ``fgca`` suite: it loads whole, a clean set passes, and each check can fail."""

from __future__ import annotations

from dataclasses import replace

import pytest

from expectations import EXPECTED_CHECKS
from flows.validation import load_suite, validate_fgca
from iea.align.records import FgcaRecord

TEXT = "Lazy Sunday : the dog and the sofa by the window !"


def _rec(image, cid, phrase, split="train", text=TEXT, classes=None, region=None):
    start = text.find(phrase)
    w0 = len(text[:start].split())
    return FgcaRecord(
        image_id=image,
        region_id=cid if region is None else region,
        bbox=(0, 0, 10, 10),
        description="",
        text=text,
        phrase=phrase,
        start=start,
        end=start + len(phrase),
        word_start=w0,
        word_end=w0 + len(phrase.split()),
        class_id=cid,
        class_name=phrase,
        image_class_ids=tuple(classes or ()),
        split=split,
    )


def _clean():
    rows = []
    for image, split in (("a", "train"), ("b", "train"), ("c", "val"), ("d", "test")):
        rows += [
            _rec(image, 22, "dog", split, classes=(22, 49)),
            _rec(image, 49, "sofa", split, classes=(22, 49)),
        ]
    return rows


@pytest.fixture(scope="module")
def gx_root(tmp_path_factory):
    return tmp_path_factory.mktemp("gx")


def _failed(records, gx_root):
    report, _ = validate_fgca(records, gx_root, where="f.jsonl")
    return {f["check"]: f["ids"] for f in report.failures}, report


def test_suite_loads_every_check(gx_root):
    suite = load_suite("fgca", gx_root)
    assert len(suite.expectations) == EXPECTED_CHECKS["fgca"] == 9
    types = {e.expectation_type for e in suite.expectations}
    assert {"expect_fgca_spans_to_equal_phrases", "expect_fgca_spans_to_be_within_text"} <= types


def test_clean_records_pass(gx_root):
    failed, report = _failed(_clean(), gx_root)
    assert report.success and failed == {}


def _mutate(index, **changes):
    rows = _clean()
    rows[index] = replace(rows[index], **changes)
    return rows


@pytest.mark.parametrize(
    "rows, check, bad_row",
    [
        (_mutate(1, start=_clean()[1].start + 1), "text[start:end] == phrase", "f.jsonl:2 a/49"),
        (_mutate(2, end=len(TEXT) + 5), "0 <= start < end <= len(text)", "f.jsonl:3 b/22"),
        (_mutate(2, start=-1), "0 <= start < end <= len(text)", "f.jsonl:3 b/22"),
        (_mutate(3, region_id=22), "unique (image, region) keys", "f.jsonl:4 b/22"),
        (_mutate(5, class_id=22), "at most one record per class of an image", "f.jsonl:6 c/49"),
        (_clean()[:-1], "every class of the image has a record", "f.jsonl:7 d/22"),
        (_mutate(7, split="val"), "no image in two splits", "f.jsonl:8 d/49"),
        (_mutate(0, split="dev"), "split is train, val or test", "f.jsonl:1 a/22"),
    ],
)
def test_each_critical_check_can_fail(gx_root, rows, check, bad_row):
    failed, report = _failed(rows, gx_root)
    assert not report.success
    assert bad_row in failed[check]
    assert all(f["severity"] == "critical" for f in report.failures if f["check"] == check)


def test_warning_checks_can_fail(gx_root):
    short = "a dog"
    rows = _clean()
    rows[0] = _rec("a", 22, "dog", text=short, classes=(22,))
    rows[1] = _rec("a2", 49, "sofa", classes=(49,))
    rows.append(_rec("e", 33, "window", "test", classes=(33,)))  # class never in train
    failed, report = _failed(rows, gx_root)
    assert failed["text length within 10..400 characters"] == ["f.jsonl:1 a/22"]
    assert failed["every val/test class is also in train"] == ["f.jsonl:9 e/33"]
    severities = {f["check"]: f["severity"] for f in report.failures}
    assert severities["every val/test class is also in train"] == "warning"
