"""The aligner's instruction format and answer decoding (pure: no model, no pixels).

The aligner is a LoRA-tuned VLM that maps ``[I, R, E, T]`` (whole image, region crop, region
description, text) to the phrase of ``T`` that the region shows, or to "no phrase". Layout of
one example (``<image>`` / ``<region k>`` are :class:`iea.nmi.ImagePart` placeholders that the
training engine replaces with the whole image and the crop of region ``k``)::

    {ALIGNER_HEADER}
    <image>
    Region: <region k>
    Description: E
    Text: w0 w1 w2 ...
    {ANSWER_LINE}

``T`` is written as its words joined by single spaces (``text.split()`` for FGCA, the tweet's
``tokens`` at inference), so the word indices below are the ones the model sees. ``E`` is cleaned
by :func:`iea.nmi.clean_description` (whitespace collapsed, cut to
:data:`iea.nmi.MAX_DESCRIPTION_CHARS`).

Target (the answer) format: ``"{words} [{word_start}-{word_end}]"``, e.g.
``"potted plant [3-5]"`` for words ``[3, 5)`` (0-based, end exclusive, as everywhere in
``iea``), the words being exactly ``" ".join(words[word_start:word_end])``; or
:data:`NO_PHRASE`. Writing both the words and the indices makes the decode unambiguous when the
phrase occurs twice (the indices pick the occurrence) and checkable (the words must match). The
words come first: a model generating left to right copies the phrase from the text before it
counts its position, rather than committing to a count first (with the indices first, a tiny
demo aligner answered "none" for a third of the tweet regions it should align; aligner-v1).
Digits, ``-`` and brackets are short, common tokens for every BPE tokenizer.

:func:`decode_answer` accepts only that format (on the answer's first non-empty line); see it for
the one fallback.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from iea.align.records import FgcaRecord
from iea.nmi import ImagePart, TextPart, clean_description

ALIGNER_VERSION = "aligner-v2"
NO_PHRASE = "none"
ALIGNER_HEADER = "Find the phrase of the text that the image region shows."
ANSWER_LINE = (
    "Answer with the words of the text that the region shows, as words [start-end] "
    "(words counted from 0, end excluded), or none."
)

# At most 6 digits per index: a longer number is junk anyway, and int() of a 4301+ digit
# string raises ValueError (Python's int max_str_digits), which decode_answer must never do.
_ANSWER_RE = re.compile(r"(.*?)\s*\[\s*([0-9]{1,6})\s*-\s*([0-9]{1,6})\s*\]")


class AlignedSpan(NamedTuple):
    """A decoded alignment: words ``tokens[word_start:word_end]`` (end exclusive), the same
    phrase as chars ``[start, end)`` of ``" ".join(tokens)``, and ``phrase`` (the tokens joined
    by single spaces, in their original case)."""

    word_start: int
    word_end: int
    start: int
    end: int
    phrase: str


@dataclass(frozen=True)
class AlignerExample:
    """One aligner sample: the input parts, the target (``""`` at inference) and its region.

    ``key`` is ``"{image_id}/{region_id}"``; the images to pass alongside are the whole image of
    ``image_id`` then the crop of ``region_id``.
    """

    parts: tuple[TextPart | ImagePart, ...]
    target: str
    key: str
    image_id: str
    region_id: int
    version: str = ALIGNER_VERSION

    def to_messages(self) -> list[dict[str, Any]]:
        """Qwen-VL style content list: ``{"type": "image"}`` per image part, in order, and
        ``{"type": "text", "text": ...}`` per text part (two images: whole image, region)."""
        return [
            {"type": "image"} if isinstance(p, ImagePart) else {"type": "text", "text": p.text}
            for p in self.parts
        ]

    def text_only(self) -> str:
        """The input as one string, images shown as ``<image>`` / ``<region k>`` (for logs)."""
        return "".join(
            p.text
            if isinstance(p, TextPart)
            else ("<image>" if p.kind == "image" else f"<region {p.region_id}>")
            for p in self.parts
        )


def format_target(words: Sequence[str], word_start: int, word_end: int) -> str:
    """The answer text for words ``[word_start, word_end)`` of ``words``.

    Raises:
        ValueError: when the span is empty or out of range.
    """
    if not 0 <= word_start < word_end <= len(words):
        raise ValueError(
            f"word span [{word_start}, {word_end}) is empty or out of range for {len(words)} words"
        )
    return f"{' '.join(words[word_start:word_end])} [{word_start}-{word_end}]"


def _build(
    words: Sequence[str], image_id: str, region_id: int, description: str, target: str
) -> AlignerExample:
    parts = (
        TextPart(ALIGNER_HEADER + "\n"),
        ImagePart("image"),
        TextPart("\nRegion: "),
        ImagePart("region", region_id),
        TextPart(
            f"\nDescription: {clean_description(description)}\n"
            f"Text: {' '.join(words)}\n{ANSWER_LINE}"
        ),
    )
    return AlignerExample(parts, target, f"{image_id}/{region_id}", image_id, region_id)


def example_from_fgca(record: FgcaRecord) -> AlignerExample:
    """The training example of one FGCA record; the target is its word span (never NO_PHRASE).

    Raises:
        ValueError: naming the record key, when the word span is empty or out of range for
            ``record.text.split()``, or its words do not contain ``record.phrase``.
    """
    key = f"{record.image_id}/{record.region_id}"
    words = record.text.split()
    if not 0 <= record.word_start < record.word_end <= len(words):
        raise ValueError(
            f"FGCA record {key}: word span [{record.word_start}, {record.word_end}) is empty or "
            f"out of range for {len(words)} words"
        )
    phrase = " ".join(record.phrase.split())
    span_words = " ".join(words[record.word_start : record.word_end])
    # "contains", not "equals": text.split() keeps punctuation on words ("plant," holds "plant").
    if not phrase or phrase not in span_words:
        raise ValueError(
            f"FGCA record {key}: words [{record.word_start}, {record.word_end}) "
            f"{span_words!r} do not contain the phrase {record.phrase!r}"
        )
    target = format_target(words, record.word_start, record.word_end)
    return _build(words, record.image_id, record.region_id, record.description, target)


def example_for_region(
    text_tokens: Sequence[str], image_id: str, region_id: int, description: str
) -> AlignerExample:
    """The inference example of one region of a tweet (target ``""``).

    Args:
        text_tokens: the tweet's tokens (``Tweet.tokens``); the model sees them joined by spaces.
        image_id: the tweet's image id.
        region_id: the region's id (``Region.id``).
        description: the region's text ``E`` (``Interpretation.text``).

    Raises:
        ValueError: when a token is empty or contains whitespace (the word indices the model
            sees would then differ from ``text_tokens``), naming the token.
    """
    for i, t in enumerate(text_tokens):
        if not t or t.split() != [t]:
            raise ValueError(f"{image_id}/{region_id}: token {i} {t!r} is empty or has spaces")
    return _build(text_tokens, image_id, region_id, description, "")


def _span(tokens: Sequence[str], ws: int, we: int) -> AlignedSpan:
    start = len(" ".join(tokens[:ws])) + (1 if ws > 0 else 0)
    phrase = " ".join(tokens[ws:we])
    return AlignedSpan(ws, we, start, start + len(phrase), phrase)


def _norm(words: Sequence[str]) -> list[str]:
    return " ".join(words).casefold().split()


def decode_answer(answer: str, tokens: Sequence[str]) -> AlignedSpan | None:
    """Parse an aligner answer into a span of ``tokens``; never raises.

    The answer's first non-empty line must be ``"{words} [{word_start}-{word_end}]"`` (leading
    and trailing whitespace allowed). The span is kept when ``0 <= word_start < word_end <=
    len(tokens)`` and ``words`` equals ``tokens[word_start:word_end]`` up to case and whitespace.

    Fallback: when the indices are wrong (out of range, empty, or pointing at other words) but
    ``words`` occurs in ``tokens`` exactly once (same comparison), that occurrence is used: the
    words are what the model read off the text, the indices what it counted, and counting is the
    weaker skill. Twice or more is ambiguous and gives None.

    Args:
        answer: the generated text.
        tokens: the words of the text the example was built from.

    Returns:
        The :class:`AlignedSpan`, or None for NO_PHRASE, empty or junk answers, missing words,
        and wrong words.
    """
    lines = [line for line in answer.splitlines() if line.strip()]
    if not lines:
        return None
    m = _ANSWER_RE.fullmatch(lines[0].strip())
    if m is None:  # NO_PHRASE and junk alike
        return None
    ws, we = int(m.group(2)), int(m.group(3))
    written = _norm([m.group(1)])
    if not written:
        return None
    if 0 <= ws < we <= len(tokens) and _norm(tokens[ws:we]) == written:
        return _span(tokens, ws, we)
    # _norm per token, so a token's normalised words are compared as a unit.
    normed = [_norm([t]) for t in tokens]
    hits = []
    for i in range(len(tokens)):
        got: list[str] = []
        j = i
        while j < len(tokens) and len(got) < len(written):
            got.extend(normed[j])
            j += 1
        if got == written and normed[i]:
            hits.append((i, j))
    return _span(tokens, *hits[0]) if len(hits) == 1 else None


def span_accuracy(
    predictions: Sequence[AlignedSpan | None], gold: Sequence[tuple[int, int] | None]
) -> float:
    """Exact word-span accuracy: ``(word_start, word_end)`` equal, or both None.

    Returns:
        The share of correct items in [0, 1]; 0.0 for no items.

    Raises:
        ValueError: when the two sequences differ in length.
    """
    if len(predictions) != len(gold):
        raise ValueError(f"{len(predictions)} predictions for {len(gold)} gold spans")
    if not gold:
        return 0.0
    correct = 0
    for p, g in zip(predictions, gold, strict=True):
        if p is None or g is None:
            correct += p is None and g is None
        else:
            correct += (p.word_start, p.word_end) == (g[0], g[1])
    return correct / len(gold)


def coverage(
    gold: dict[str, Sequence[tuple[int, int]]], aligned: dict[str, Sequence[tuple[int, int]]]
) -> float:
    """The paper's Table 4 coverage: the share of gold aspects that some kept region aligns to.

    A gold aspect ``[gs, ge)`` of tweet ``t`` counts as covered when some aligned word span
    ``[as, ae)`` of ``t`` overlaps it (``as < ge and gs < ae``): an alignment to "the dog" still
    puts the region next to the aspect "dog". Aligned spans of tweets without gold are ignored.

    Args:
        gold: tweet id -> gold aspect word spans (end exclusive).
        aligned: tweet id -> word spans of its kept, aligned regions (an :class:`AlignedSpan`
            also works: only its first two fields are read).

    Returns:
        Covered / total gold aspects in [0, 1]; 0.0 when there are no gold aspects.

    Raises:
        ValueError: for an empty or negative gold span, naming the tweet.
    """
    total = covered = 0
    for tid, spans in gold.items():
        mine = aligned.get(tid, ())
        for gs, ge in spans:
            if not 0 <= gs < ge:
                raise ValueError(f"tweet {tid}: gold span [{gs}, {ge}) is empty or negative")
            total += 1
            covered += any(a[0] < ge and gs < a[1] for a in mine)
    return covered / total if total else 0.0


def alignment_precision(
    gold: dict[str, Sequence[tuple[int, int]]], aligned: dict[str, Sequence[tuple[int, int]]]
) -> float:
    """The share of aligned regions whose word span overlaps a gold aspect of their tweet.

    The other side of :func:`coverage`: a region aligned to a word that is no aspect ("today")
    puts a region where the instruction has nothing to say about it. It does not check that the
    region shows that aspect (that needs region labels, which real tweets lack). Tweets missing
    from ``gold`` count as having no aspects.

    Returns:
        Overlapping / total aligned spans in [0, 1]; 1.0 when nothing is aligned (no false
        alignment was made).
    """
    total = hits = 0
    for tid, spans in aligned.items():
        mine = gold.get(tid, ())
        for a in spans:
            total += 1
            hits += any(a[0] < ge and gs < a[1] for gs, ge in mine)
    return hits / total if total else 1.0
