"""Aligner instruction layout, target format, answer decoding and its metrics (pure, no model)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iea.align.aligner import (
    ALIGNER_HEADER,
    ALIGNER_VERSION,
    ANSWER_LINE,
    NO_PHRASE,
    AlignedSpan,
    coverage,
    decode_answer,
    example_for_region,
    example_from_fgca,
    format_target,
    span_accuracy,
)
from iea.align.records import FgcaRecord
from iea.nmi import MAX_DESCRIPTION_CHARS, ImagePart, TextPart

TOKENS = tuple("the dog sat by the potted plant near the dog bowl".split())


def _fgca_record(text: str, phrase: str, occurrence: int = 0, **kw) -> FgcaRecord:
    """A hand-made FGCA record whose char and word spans point at the n-th ``phrase``."""
    start = -1
    for _ in range(occurrence + 1):
        start = text.index(phrase, start + 1)
    end = start + len(phrase)
    word_start = len(text[:start].split())
    word_end = word_start + len(phrase.split())
    fields = dict(
        image_id="2008_000123",
        region_id=4,
        bbox=(1, 2, 30, 40),
        description="a green plant in a pot",
        text=text,
        phrase=phrase,
        start=start,
        end=end,
        word_start=word_start,
        word_end=word_end,
        class_id=7,
        class_name=phrase.lower(),
        image_class_ids=(7,),
        split="train",
    )
    return FgcaRecord(**{**fields, **kw})


# --- layout -------------------------------------------------------------------------------


def test_fgca_example_layout_and_messages():
    rec = _fgca_record("My  dog sleeps next to the potted plant.", "potted plant")
    ex = example_from_fgca(rec)
    assert ex.key == "2008_000123/4" and ex.image_id == "2008_000123" and ex.region_id == 4
    assert ex.version == ALIGNER_VERSION
    assert ex.target == "potted plant. [6-8]"
    assert ex.parts == (
        TextPart(ALIGNER_HEADER + "\n"),
        ImagePart("image"),
        TextPart("\nRegion: "),
        ImagePart("region", 4),
        TextPart(
            "\nDescription: a green plant in a pot\n"
            f"Text: My dog sleeps next to the potted plant.\n{ANSWER_LINE}"
        ),
    )
    msgs = ex.to_messages()
    assert sum(m["type"] == "image" for m in msgs) == 2
    assert [m["type"] for m in msgs] == ["text", "image", "text", "image", "text"]
    assert msgs[-1]["text"] == ex.parts[-1].text
    assert ex.text_only().startswith(ALIGNER_HEADER + "\n<image>\nRegion: <region 4>\n")


def test_region_example_cleans_description_and_has_no_target():
    desc = "a  brown\n dog " + "very " * 100
    ex = example_for_region(TOKENS, "t1.jpg", 9, desc)
    assert ex.target == "" and ex.key == "t1.jpg/9"
    assert sum(m["type"] == "image" for m in ex.to_messages()) == 2
    tail = ex.parts[-1].text
    described = tail.split("\n")[1]
    assert described.startswith("Description: a brown dog very")
    assert len(described) <= len("Description: ") + MAX_DESCRIPTION_CHARS
    assert described.endswith("...")
    assert f"\nText: {' '.join(TOKENS)}\n" in tail


def test_region_example_empty_description():
    ex = example_for_region(["a", "dog"], "t1.jpg", 0, "   ")
    assert ex.parts[-1].text.startswith("\nDescription: \nText: a dog\n")


@pytest.mark.parametrize("bad", ["", "two words", "tab\there"])
def test_region_example_rejects_tokens_with_spaces(bad):
    with pytest.raises(ValueError, match="t1.jpg/3: token 1"):
        example_for_region(["a", bad, "c"], "t1.jpg", 3, "E")


# --- target round trip ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "phrase", "occurrence"),
    [
        ("A dog and a cat on the sofa", "cat", 0),
        ("The Potted Plant sits near the TV monitor today", "TV monitor", 0),
        ("dog", "dog", 0),
        ("a dog chases another dog", "dog", 1),
        ("a dog chases another dog", "dog", 0),
    ],
)
def test_fgca_target_round_trips(text, phrase, occurrence):
    rec = _fgca_record(text, phrase, occurrence)
    ex = example_from_fgca(rec)
    span = decode_answer(ex.target, text.split())
    assert span == AlignedSpan(rec.word_start, rec.word_end, rec.start, rec.end, phrase)
    assert text[span.start : span.end] == phrase


def test_phrase_twice_indices_pick_the_occurrence():
    first = decode_answer("dog [1-2]", TOKENS)
    second = decode_answer("dog [9-10]", TOKENS)
    assert first == AlignedSpan(1, 2, 4, 7, "dog")
    assert second == AlignedSpan(9, 10, 41, 44, "dog")
    joined = " ".join(TOKENS)
    assert joined[second.start : second.end] == "dog"
    assert decode_answer(format_target(TOKENS, 9, 11), TOKENS) == AlignedSpan(
        9, 11, 41, 49, "dog bowl"
    )


def test_decode_is_case_and_space_insensitive_but_returns_token_case():
    tokens = ["I", "love", "New", "York"]
    assert decode_answer("  new   YORK  [ 2 - 4 ] \nmore text", tokens) == AlignedSpan(
        2, 4, 7, 15, "New York"
    )


def test_format_target_rejects_bad_span():
    with pytest.raises(ValueError, match=r"\[2, 2\)"):
        format_target(TOKENS, 2, 2)
    with pytest.raises(ValueError, match=r"\[10, 12\)"):
        format_target(TOKENS, 10, 12)


def test_fgca_bad_word_span_names_record():
    rec = _fgca_record("A dog and a cat", "cat")
    with pytest.raises(ValueError, match="2008_000123/4.*'and'.*'cat'"):
        example_from_fgca(dataclasses.replace(rec, word_start=2, word_end=3))
    with pytest.raises(ValueError, match="2008_000123/4.*out of range"):
        example_from_fgca(dataclasses.replace(rec, word_start=4, word_end=6))
    with pytest.raises(ValueError, match="2008_000123/4.*empty"):
        example_from_fgca(dataclasses.replace(rec, word_start=4, word_end=4))


# --- decode: invalid answers and the fallback ---------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "   \n\n ",
        NO_PHRASE,
        "None.",
        "no phrase",
        "dog",  # words without indices
        "1-2",  # indices without words
        "1-2:",
        "    [1-2]",
        "1:2 dog",
        "-1-2: dog bowl x",
        "cat [1-2]",  # wrong words, not in the text
        "cat [20-30]",  # out of range, words not in the text
        "the [1-2]",  # wrong words that occur twice
        "dog [50-51]",  # out of range, words occur twice
        "the [3-1]",
        "9" * 5000 + "-1: dog",  # the old format, indices first
        "dog [" + "9" * 5000 + "-1]",  # int() of this would raise
        "dog bowl [1-" + "9" * 7 + "]",
        "dog bowl x [-1-2]",
        "dog [1-2] and more",  # the bracket must end the line
        "\x00\x1cdog [1-2]",
    ],
)
def test_decode_invalid_gives_none(answer):
    assert decode_answer(answer, TOKENS) is None


def test_decode_with_no_tokens_gives_none():
    assert decode_answer("dog [0-1]", []) is None


@pytest.mark.parametrize(
    ("answer", "span"),
    [
        ("potted plant [0-1]", (5, 7)),  # indices point at other words
        ("potted plant [5-6]", (5, 7)),  # off by one
        ("Dog Bowl [40-42]", (9, 11)),  # out of range
        ("potted plant [7-5]", (5, 7)),  # empty span
        ("sat by [1-2]", (2, 4)),
    ],
)
def test_decode_fallback_to_unique_occurrence(answer, span):
    got = decode_answer(answer, TOKENS)
    assert got is not None and (got.word_start, got.word_end) == span
    assert got.phrase == " ".join(TOKENS[span[0] : span[1]])
    assert " ".join(TOKENS)[got.start : got.end] == got.phrase


@settings(max_examples=300, deadline=None)
@given(answer=st.text(), tokens=st.lists(st.text(min_size=0, max_size=6), max_size=8))
def test_decode_never_raises(answer, tokens):
    got = decode_answer(answer, tokens)
    if got is not None:
        assert 0 <= got.word_start < got.word_end <= len(tokens)
        assert " ".join(tokens)[got.start : got.end] == got.phrase


@settings(max_examples=200, deadline=None)
@given(
    tokens=st.lists(st.sampled_from(["a", "B", "dog", "Dog", "x-1:", "é"]), min_size=1),
    data=st.data(),
)
def test_target_always_round_trips(tokens, data):
    ws = data.draw(st.integers(0, len(tokens) - 1))
    we = data.draw(st.integers(ws + 1, len(tokens)))
    got = decode_answer(format_target(tokens, ws, we), tokens)
    assert got is not None and (got.word_start, got.word_end) == (ws, we)


# --- metrics --------------------------------------------------------------------------------


def _aspan(ws: int, we: int) -> AlignedSpan:
    return AlignedSpan(ws, we, 0, 0, "")


def test_span_accuracy():
    preds = [_aspan(0, 2), None, _aspan(3, 4), None, _aspan(1, 2)]
    gold = [(0, 2), None, (3, 5), (1, 2), None]
    assert span_accuracy(preds, gold) == pytest.approx(2 / 5)
    assert span_accuracy([None], [None]) == 1.0
    assert span_accuracy([], []) == 0.0


def test_span_accuracy_length_mismatch():
    with pytest.raises(ValueError, match="2 predictions for 1 gold"):
        span_accuracy([None, None], [None])


def test_coverage():
    gold = {"t1": [(0, 1), (3, 5)], "t2": [(2, 3)], "t3": [(0, 2)], "t4": []}
    aligned = {
        "t1": [(4, 6)],  # overlaps (3, 5) only
        "t2": [(0, 2), (3, 4)],  # touches but never overlaps (2, 3)
        "t3": [(0, 2)],
        "t9": [(0, 1)],  # no gold: ignored
    }
    assert coverage(gold, aligned) == pytest.approx(2 / 4)
    assert coverage({"t1": [(0, 1)]}, {"t1": [_aspan(0, 3)]}) == 1.0
    assert coverage({}, aligned) == 0.0
    assert coverage({"t4": []}, {}) == 0.0


def test_coverage_rejects_empty_gold_span():
    with pytest.raises(ValueError, match=r"tweet t1: gold span \[2, 2\)"):
        coverage({"t1": [(2, 2)]}, {})


def test_alignment_precision_counts_regions_aligned_off_the_aspects():
    from iea.align.aligner import alignment_precision

    gold = {"t1": [(0, 1), (3, 5)], "t2": [(2, 3)]}
    aligned = {
        "t1": [(4, 6), (1, 2)],  # the first overlaps (3, 5); the second sits on no aspect
        "t2": [(2, 3)],
        "t9": [(0, 1)],  # a tweet without gold aspects: a false alignment
    }
    assert alignment_precision(gold, aligned) == pytest.approx(2 / 4)
    assert alignment_precision(gold, {}) == 1.0
    assert alignment_precision(gold, {"t2": [_aspan(1, 3)]}) == 1.0
