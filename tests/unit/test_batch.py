"""Batch prediction's inputs and summary (:mod:`iea.batch`)."""

from __future__ import annotations

import json

import pytest

from iea.batch import Failed, Request, Summary, read_requests


def test_jsonl_requests_stream_in_order_and_bad_lines_fail_with_their_place(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text(
        "\n".join(
            [
                json.dumps({"text": "my dog is great", "image": "a.jpg"}),
                "{not json",
                json.dumps({"text": "  ", "image": "b.jpg", "id": "t2"}),
                json.dumps({"text": "no image here"}),
                "",
                json.dumps([1, 2]),
                json.dumps({"id": "t6", "text": "the bus", "image": "/abs/c.jpg"}),
            ]
        )
        + "\n"
    )
    items = list(read_requests(f))
    assert [type(i) for i in items] == [Request, Failed, Failed, Failed, Failed, Request]
    first, last = items[0], items[-1]
    assert first.image == str(tmp_path / "a.jpg") and first.where == f"{f}:1" and first.id
    assert (last.id, last.image, last.where) == ("t6", "/abs/c.jpg", f"{f}:7")
    assert [(i.where, i.reason.split(":")[0]) for i in items[1:5]] == [
        (f"{f}:2", "not JSON"),
        (f"{f}:3", "no text"),
        (f"{f}:4", "no image path"),
        (f"{f}:6", "not a JSON object"),
    ]
    assert items[2].id == "t2"


def test_requests_are_read_lazily(tmp_path):
    """The first request comes before the file is read to its end (a file of any length
    needs the memory of one chunk)."""
    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps({"text": "a b", "image": "x.jpg"}) + "\n")
    gen = read_requests(f)
    assert isinstance(next(gen), Request)
    with f.open("a") as fh:  # appended after the first read: still seen
        fh.write(json.dumps({"text": "c d", "image": "y.jpg"}) + "\n")
    assert next(gen).text == "c d"


def test_a_format_input_needs_its_images_and_a_missing_input_is_named(tmp_path, twitter_root):
    with pytest.raises(FileNotFoundError, match="nope"):
        list(read_requests(tmp_path / "nope"))
    src = twitter_root / "twitter2015" / "vlp_json"
    with pytest.raises(ValueError, match="needs --images"):
        list(read_requests(src, fmt="vlp"))
    with pytest.raises(ValueError, match="unknown format"):
        list(read_requests(src, tmp_path, fmt="csv"))
    items = read_requests(src, tmp_path / "imgs", fmt="vlp")
    first = next(items)
    assert isinstance(first, Request) and first.image.startswith(str(tmp_path / "imgs"))


def test_summary_counts_answers_pairs_and_failure_reasons():
    s = Summary()
    s.add_answer({"pairs": [{"polarity": "POS"}, {"polarity": "NEG"}]})
    s.add_answer({"pairs": []})
    s.add_failure(Failed("f:3", "ImageDecodeError: cannot read"))
    s.add_failure(Failed("f:4", "no text"))
    assert s.to_json() == {
        "requests": 4,
        "answered": 2,
        "failed": 2,
        "pairs": 2,
        "tweets_with_pairs": 1,
        "polarity": {"NEG": 1, "POS": 1},
        "failure_reasons": {"ImageDecodeError": 1, "no text": 1},
    }
