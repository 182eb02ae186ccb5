import json
import random

import pytest

from iea.data.records import Aspect, Tweet
from iea.data.synthetic import make_tweet
from iea.data.twitter import FORMATS, Reject, read_file, split_file, write_file


def _tweets(n=30, seed=1):
    rng = random.Random(seed)
    return [make_tweet(rng, i) for i in range(n)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_every_format(tmp_path, fmt):
    tweets = _tweets()
    path = split_file(fmt, tmp_path, "train")
    write_file(fmt, path, tweets)
    back = read_file(fmt, path)
    assert back == tweets


def test_same_id_from_every_format(tmp_path):
    tweets = _tweets(10)
    ids = set()
    for fmt in FORMATS:
        path = split_file(fmt, tmp_path / fmt, "dev")
        write_file(fmt, path, tweets)
        ids.add(tuple(t.id for t in read_file(fmt, path)))
    assert len(ids) == 1


def test_repeated_tweet_is_kept_with_a_unique_id(tmp_path):
    t = _tweets(1)[0]
    path = split_file("vlp", tmp_path, "train")
    write_file("vlp", path, [t, t])
    a, b = read_file("vlp", path)
    assert a.id == t.id and b.id == f"{t.id}-2" and a.tokens == b.tokens


def test_tsv_rows_of_one_tweet_are_grouped(tmp_path):
    p = tmp_path / "train.tsv"
    p.write_text(
        "index\t#1 Label\t#2 ImageID\t#3 String\t#3 String\n"
        "1\t2\t1.jpg\tRT @ x : $T$ is everything # MCM\tChuck Bass\n"
        "2\t1\t1.jpg\tRT @ x : Chuck Bass is everything $T$\t# MCM\n"
        "3\t0\t2.jpg\t$T$ is closed\tNew York City\n"
    )
    a, b = read_file("tombert", p)
    assert a.tokens == ("RT", "@", "x", ":", "Chuck", "Bass", "is", "everything", "#", "MCM")
    assert a.aspects == (Aspect(4, 6, "POS"), Aspect(8, 10, "NEU"))
    assert b.aspects == (Aspect(0, 3, "NEG"),) and b.image_id == "2.jpg"


HEADER = "index\t#1 Label\t#2 ImageID\t#3 String\t#3 String\n"


@pytest.mark.parametrize(
    "row, reason",
    [
        ("1\t2\t1.jpg\t$T$ wins\n", "expected 5 tab-separated columns, got 4"),
        ("1\t5\t1.jpg\t$T$ wins\tBob\n", "unknown label '5'"),
        ("1\t2\t1.jpg\tno marker here\tBob\n", "exactly once, found 0"),
        ("1\t2\t1.jpg\t$T$ and $T$\tBob\n", "exactly once, found 2"),
        ("1\t2\t1.jpg\t$T$ wins\t \n", "empty target"),
        ("1\t2\t\t$T$ wins\tBob\n", "empty image id"),
    ],
)
def test_bad_tsv_rows_are_rejected_with_their_line(tmp_path, row, reason):
    p = tmp_path / "train.tsv"
    p.write_text(HEADER + "1\t2\t1.jpg\t$T$ wins\tAnn\n" + row)
    items = read_file("tombert", p)
    (good,) = [i for i in items if isinstance(i, Tweet)]
    (bad,) = [i for i in items if isinstance(i, Reject)]
    assert good.tokens == ("Ann", "wins")
    assert isinstance(bad, Reject) and bad.line == 3 and reason in bad.reason
    assert bad.raw == row.rstrip("\n")


def test_bad_encoding_is_rejected(tmp_path):
    p = tmp_path / "train.tsv"
    p.write_bytes(HEADER.encode() + b"1\t2\t1.jpg\t$T$ wins \xff\xfe\tAnn\n")
    (bad,) = read_file("tombert", p)
    assert isinstance(bad, Reject) and bad.line == 2 and "invalid UTF-8" in bad.reason


def test_txt_bad_polarity(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text("$T$ wins\nAnn\n1\n1.jpg\n$T$ loses\nBob\n9\n2.jpg\n$T$ x\n")
    items = read_file("tombert_txt", p)
    assert [i.tokens for i in items if isinstance(i, Tweet)] == [("Ann", "wins")]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [(r.line, r.reason.split(" (")[0]) for r in rejects] == [
        (7, "unknown polarity '9'"),
        (9, "incomplete record: 1 of 4 lines"),
    ]


def _vlp(tmp_path, items):
    p = tmp_path / "train.json"
    p.write_text(json.dumps(items))
    return p


GOOD = {
    "words": ["Ann", "wins"],
    "image_id": "1.jpg",
    "aspects": [{"from": 0, "to": 1, "polarity": "POS"}],
}


@pytest.mark.parametrize(
    "aspect, reason",
    [
        ({"from": 0, "to": 5, "polarity": "POS"}, "outside the 2 tokens"),
        ({"from": 1, "to": 1, "polarity": "POS"}, "outside the 2 tokens"),
        ({"from": 0, "to": 1, "polarity": "GOOD"}, "unknown polarity"),
        ({"from": "0", "to": 1, "polarity": "POS"}, "must be integers"),
        ({"from": 0, "to": 1, "polarity": "POS", "term": ["Bob"]}, "does not match"),
    ],
)
def test_bad_vlp_items(tmp_path, aspect, reason):
    bad = {**GOOD, "aspects": [aspect]}
    items = read_file("vlp", _vlp(tmp_path, [GOOD, bad, GOOD]))
    assert [type(i).__name__ for i in items] == ["Tweet", "Reject", "Tweet"]
    assert "item 1" in items[1].reason and reason in items[1].reason


def test_broken_json_resynchronises_and_keeps_the_text(tmp_path):
    text = json.dumps([GOOD, GOOD, GOOD], indent=1)
    second = text.index('{\n  "words"', 10)
    broken = text[:second] + text[second:].replace('"image_id"', '"image_id" "oops"', 1)
    p = tmp_path / "train.json"
    p.write_text(broken)
    items = read_file("vlp", p)
    assert [type(i).__name__ for i in items] == ["Tweet", "Reject", "Tweet"]
    assert items[1].reason.startswith("bad JSON in item 1") and '"oops"' in items[1].raw
    assert items[1].line == broken[:second].count("\n") + 1


def test_json_not_a_list(tmp_path):
    p = tmp_path / "train.json"
    p.write_text('{"words": []}')
    (bad,) = read_file("vlp", p)
    assert "top-level list" in bad.reason


def test_conll_blocks(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text(
        "IMGID:1\nChuck\tB-POS\tB-AE\nBass\tI-POS\tI-AE\nrocks\tO\tO\n\n"
        "IMGID:2\nBad\tI-NEG\tI-AE\n\n"
        "IMGID:3\nx\tB-MAYBE\tO\n\n"
        "IMGID:4\nx\ty\tz\tw\n\n"
        "1\tO\tO\n"
    )
    good, *bad = read_file("conll", p)
    assert good.image_id == "1.jpg" and good.aspects == (Aspect(0, 2, "POS"),)
    assert [(r.line, r.reason) for r in bad] == [
        (7, "I-NEG does not continue a B-/I-NEG span"),
        (10, "unknown tag 'B-MAYBE'"),
        (13, "expected 2 or 3 tab-separated columns, got 4"),
        (15, "block does not start with 'IMGID:<id>'"),
    ]


def test_writers_refuse_what_the_format_cannot_hold(tmp_path):
    t = Tweet("x", ("a", "b"), "1.jpg", (Aspect(0, 2, "POS"), Aspect(1, 2, "NEG")))
    with pytest.raises(ValueError, match="overlapping"):
        write_file("conll", tmp_path / "t.txt", [t])
    with pytest.raises(ValueError, match="unknown format"):
        write_file("xml", tmp_path / "t.xml", [t])


def test_invalid_utf8_in_json_rejects_only_that_item(tmp_path):
    p = tmp_path / "train.json"
    body = json.dumps([GOOD, {**GOOD, "words": ["Ann", "XX"]}, GOOD], indent=1).encode()
    p.write_bytes(body.replace(b'"XX"', b'"\xff\xfe"'))
    items = read_file("vlp", p)
    assert [type(i).__name__ for i in items] == ["Tweet", "Reject", "Tweet"]
    assert items[1].reason == "item 1: invalid UTF-8 in a string value"
    second = body.index(b'{\n  "words"', 5)
    assert items[1].line == body[:second].count(b"\n") + 1
