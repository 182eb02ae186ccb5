"""The ``twitter_canonical`` Great Expectations suite: loading, each check, and the real data."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from expectations import EXPECTED_CHECKS, SUITE_DIR  # noqa: E402
from flows.validation import (  # noqa: E402
    ValidationFailed,
    ValidationReport,
    load_suite,
    tweets_frame,
    validate_frame,
    validate_tweets,
)
from iea.data.records import Aspect, Tweet  # noqa: E402

SUITE = "twitter_canonical"
CUSTOM_TYPES = {
    "expect_column_values_to_be_aspect_lists",
    "expect_column_pair_aspect_spans_to_be_within_tokens",
    "expect_column_values_aspect_polarities_to_be_in_set",
    "expect_column_values_aspects_to_not_overlap",
}
TWITTER = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "twitter"


@pytest.fixture(scope="module")
def context_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gx")


def clean_tweets() -> list[Tweet]:
    return [
        Tweet(
            "t1",
            ("RT", "Obama", "meets", "Merkel"),
            "1.jpg",
            (Aspect(1, 2, "POS"), Aspect(3, 4, "NEU")),
        ),
        Tweet("t2", ("New", "York", "Knicks", "lose"), "2.jpg", (Aspect(0, 3, "NEG"),)),
        Tweet("t3", ("no", "aspects", "here"), "3.jpg", ()),
        Tweet("t4", ("Paris",), "4.png", (Aspect(0, 1, "NEU"),)),
        # adjacent spans touch but do not overlap
        Tweet("t5", ("a", "b", "c", "d"), "5.jpg", (Aspect(0, 2, "POS"), Aspect(2, 4, "NEG"))),
    ]


def clean_ids() -> set[str]:
    return {t.id for t in clean_tweets()}


def failing_ids(report: ValidationReport, expectation_type: str) -> list:
    ids = [
        i for f in report.failures if f["expectation_type"] == expectation_type for i in f["ids"]
    ]
    return ids


def assert_fails_only(report: ValidationReport, bad_id: str, *expectation_types: str) -> None:
    """``report`` failed; ``bad_id`` is listed under each of ``expectation_types``; no
    expectation raised, and no clean row is listed anywhere."""
    assert report.success is False
    for failure in report.failures:
        assert failure["exception"] is None, failure
    failed_types = {f["expectation_type"] for f in report.failures}
    for expectation_type in expectation_types:
        assert expectation_type in failed_types, (expectation_type, report.failures)
        assert bad_id in failing_ids(report, expectation_type)
    listed = {i for f in report.failures for i in f["ids"]}
    assert listed == {bad_id}, report.failures


def frame_with(row_id: str, **changes):
    """The clean frame with row ``row_id``'s columns replaced by ``changes``."""
    df = tweets_frame(clean_tweets())
    index = df.index[df["id"] == row_id][0]
    for column, value in changes.items():
        df.at[index, column] = value
    return df


# --------------------------------------------------------------------------- suite loading


def test_suite_loads_with_every_check(context_root: Path):
    suite = load_suite(SUITE, context_root)
    types = [e.expectation_type for e in suite.expectations]
    assert len(types) == EXPECTED_CHECKS[SUITE]
    assert len(types) == len(json.loads((SUITE_DIR / f"{SUITE}.json").read_text())["expectations"])
    assert set(types) >= CUSTOM_TYPES
    # it went through the context's store, not the repo dir
    assert (context_root / "gx" / "expectations" / f"{SUITE}.json").is_file()


def test_stale_stored_suite_is_overwritten(tmp_path: Path):
    stored = tmp_path / "gx" / "expectations" / f"{SUITE}.json"
    stored.parent.mkdir(parents=True)
    stored.write_text(json.dumps({"name": SUITE, "expectations": [], "meta": {}}))
    suite = load_suite(SUITE, tmp_path)
    assert len(suite.expectations) == EXPECTED_CHECKS[SUITE]


def test_count_mismatch_raises(context_root: Path, monkeypatch):
    monkeypatch.setitem(EXPECTED_CHECKS, SUITE, EXPECTED_CHECKS[SUITE] + 1)
    with pytest.raises(RuntimeError, match="expected"):
        load_suite(SUITE, context_root)


# --------------------------------------------------------------------------- clean data


def test_clean_tweets_pass(context_root: Path):
    report = validate_tweets(clean_tweets(), context_root)
    assert report.success, report.summary()
    assert report.failures == []
    assert report.n_checks == EXPECTED_CHECKS[SUITE]
    assert json.loads(json.dumps(report.result))["success"] is True
    # idempotent in the same context root
    assert validate_tweets(clean_tweets(), context_root).success


def test_frame_layout():
    df = tweets_frame(clean_tweets())
    assert list(df.columns) == ["id", "tokens", "n_tokens", "image_id", "aspects"]
    row = df.iloc[0]
    assert row["tokens"] == ["RT", "Obama", "meets", "Merkel"]
    assert row["n_tokens"] == 4
    assert row["aspects"] == [
        {"from": 1, "to": 2, "polarity": "POS"},
        {"from": 3, "to": 4, "polarity": "NEU"},
    ]


def test_parquet_round_trip_passes(context_root: Path):
    """Through parquet, lists come back as numpy arrays and still pass."""
    import pandas as pd

    buf = io.BytesIO()
    tweets_frame(clean_tweets()).to_parquet(buf)
    df = pd.read_parquet(io.BytesIO(buf.getvalue()))
    report = validate_frame(df, SUITE, context_root)
    assert report.success, report.summary()


# --------------------------------------------------------------------------- each check fails


def test_duplicate_id(context_root: Path):
    tweets = clean_tweets()
    tweets.append(Tweet("t2", ("again",), "6.jpg", ()))
    report = validate_tweets(tweets, context_root)
    assert_fails_only(report, "t2", "expect_column_values_to_be_unique")
    assert failing_ids(report, "expect_column_values_to_be_unique") == ["t2", "t2"]


def test_missing_id(context_root: Path):
    df = frame_with("t3", id=None)
    report = validate_frame(df, SUITE, context_root)
    assert report.success is False
    assert failing_ids(report, "expect_column_values_to_not_be_null") == [None]
    assert {f["expectation_type"] for f in report.failures} == {
        "expect_column_values_to_not_be_null"
    }


def test_empty_tokens(context_root: Path):
    tweets = clean_tweets()
    tweets[2] = Tweet("t3", (), "3.jpg", ())
    report = validate_tweets(tweets, context_root)
    assert_fails_only(report, "t3", "expect_column_values_to_be_between")


def test_span_past_last_token(context_root: Path):
    tweets = clean_tweets()
    tweets[3] = Tweet("t4", ("Paris",), "4.png", (Aspect(0, 2, "NEU"),))
    report = validate_tweets(tweets, context_root)
    assert_fails_only(report, "t4", "expect_column_pair_aspect_spans_to_be_within_tokens")


@pytest.mark.parametrize("span", [(1, 1), (2, 1)], ids=["empty", "reversed"])
def test_span_from_not_before_to(context_root: Path, span):
    tweets = clean_tweets()
    tweets[1] = Tweet("t2", ("New", "York", "Knicks", "lose"), "2.jpg", (Aspect(*span, "NEG"),))
    report = validate_tweets(tweets, context_root)
    assert_fails_only(report, "t2", "expect_column_pair_aspect_spans_to_be_within_tokens")


def test_negative_from(context_root: Path):
    df = frame_with("t1", aspects=[{"from": -1, "to": 1, "polarity": "POS"}])
    report = validate_frame(df, SUITE, context_root)
    assert_fails_only(report, "t1", "expect_column_pair_aspect_spans_to_be_within_tokens")


def test_bad_polarity(context_root: Path):
    tweets = clean_tweets()
    tweets[3] = Tweet("t4", ("Paris",), "4.png", (Aspect(0, 1, "positive"),))
    report = validate_tweets(tweets, context_root)
    assert_fails_only(report, "t4", "expect_column_values_aspect_polarities_to_be_in_set")


@pytest.mark.parametrize(
    "spans",
    [[(0, 2), (1, 3)], [(0, 4), (1, 2)], [(1, 2), (1, 2)]],
    ids=["crossing", "nested", "repeated"],
)
def test_overlapping_aspects(context_root: Path, spans):
    tweets = clean_tweets()
    aspects = tuple(Aspect(a, b, "POS") for a, b in spans)
    tweets[4] = Tweet("t5", ("a", "b", "c", "d"), "5.jpg", aspects)
    report = validate_tweets(tweets, context_root)
    assert_fails_only(report, "t5", "expect_column_values_aspects_to_not_overlap")


@pytest.mark.parametrize("image_id", ["", "   "], ids=["empty", "blank"])
def test_empty_image_id(context_root: Path, image_id):
    tweets = clean_tweets()
    tweets[0] = Tweet("t1", tweets[0].tokens, image_id, tweets[0].aspects)
    report = validate_tweets(tweets, context_root)
    assert_fails_only(report, "t1", "expect_column_values_to_match_regex")


def test_missing_image_id(context_root: Path):
    report = validate_frame(frame_with("t1", image_id=None), SUITE, context_root)
    assert_fails_only(report, "t1", "expect_column_values_to_not_be_null")


@pytest.mark.parametrize(
    "aspects",
    [
        None,
        "POS",
        {"from": 0, "to": 1, "polarity": "POS"},
        [{"from": 0, "to": 1}],
        [{"to": 1, "polarity": "POS"}],
        [{"from": "0", "to": 1, "polarity": "POS"}],
        [{"from": 0.0, "to": 1, "polarity": "POS"}],
        [{"from": True, "to": 1, "polarity": "POS"}],
        [{"from": 0, "to": 1, "polarity": None}],
        [[0, 1, "POS"]],
        [None],
    ],
    ids=[
        "none",
        "string",
        "bare-dict",
        "no-polarity",
        "no-from",
        "str-from",
        "float-from",
        "bool-from",
        "null-polarity",
        "list-item",
        "null-item",
    ],
)
def test_malformed_aspects(context_root: Path, aspects):
    report = validate_frame(frame_with("t3", aspects=aspects), SUITE, context_root)
    # every aspect check fails that row (none raises), the well-formedness one names it
    assert_fails_only(report, "t3", *CUSTOM_TYPES)


def test_malformed_tokens(context_root: Path):
    report = validate_frame(frame_with("t4", tokens="Paris"), SUITE, context_root)
    assert_fails_only(report, "t4", "expect_column_pair_aspect_spans_to_be_within_tokens")


def test_validation_failed_message(context_root: Path):
    tweets = clean_tweets()
    tweets[3] = Tweet("t4", ("Paris",), "4.png", (Aspect(0, 1, "BAD"),))
    report = validate_tweets(tweets, context_root)
    err = ValidationFailed(report)
    assert isinstance(err, RuntimeError)
    assert err.report is report
    assert "expect_column_values_aspect_polarities_to_be_in_set" in str(err)
    assert "t4" in str(err)
    located = ValidationFailed(report, where="staging/dev.jsonl")
    assert str(located).startswith("staging/dev.jsonl: ")


def test_failing_ids_are_capped(context_root: Path):
    tweets = [Tweet(f"x{i}", ("w",), f"{i}.jpg", (Aspect(0, 1, "BAD"),)) for i in range(120)]
    report = validate_tweets(tweets, context_root)
    [failure] = report.failures
    assert failure["unexpected_count"] == 120
    assert len(failure["ids"]) == 50
    assert "and 70 more" in report.summary()


# --------------------------------------------------------------------------- real data


@pytest.mark.real_data
@pytest.mark.parametrize("year", ["twitter2015", "twitter2017"])
@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_real_vlp_data_passes(context_root: Path, year: str, split: str):
    from iea.data.convert import read_split

    src = TWITTER / year / "vlp_json"
    if not src.is_dir():
        pytest.skip(f"{src} not available")
    tweets, rejects = read_split("vlp", src, split)
    assert tweets
    report = validate_tweets(tweets, context_root)
    assert report.success, report.summary()
    assert report.n_checks == EXPECTED_CHECKS[SUITE]


def test_missing_column_is_reported(context_root: Path):
    df = tweets_frame(clean_tweets()).drop(columns=["aspects"])
    report = validate_frame(df, SUITE, context_root)
    assert report.success is False
    failed = {f["expectation_type"]: f for f in report.failures}
    assert set(failed) == CUSTOM_TYPES
    assert all("aspects" in f["exception"] for f in failed.values())
    assert "aspects" in str(ValidationFailed(report))


VALIDATE_MANY = """
import sys
from pathlib import Path
from flows.validation import validate_tweets
from iea.data.records import Aspect, Tweet
tweet = Tweet("t1", ("I", "love", "my", "dog"), "1.jpg", (Aspect(3, 4, "POS"),))
errors = 0
for _ in range(int(sys.argv[2])):
    try:
        assert validate_tweets([tweet], Path(sys.argv[1])).success
    except Exception as exc:
        errors += 1
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
sys.exit(1 if errors else 0)
"""


def test_processes_sharing_one_context_validate_without_tripping_on_each_other(tmp_path):
    """Several trainings at once (``iea experiment ablations --workers 2``) validate their
    datasets in one GX file context; unlocked, one process read a suite file the other was
    rewriting (``ExpectationSuite() argument after ** must be a mapping, not NoneType``)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "GX_ANALYTICS_ENABLED": "false"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", VALIDATE_MANY, str(tmp_path), "30"],
            cwd=root,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
