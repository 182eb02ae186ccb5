"""FGCA text synthesis: one LLM text per image containing every class phrase, and phrase spans.

Locating a phrase (:func:`locate`):

* case-insensitive, the text's own spelling kept: the caller reads ``text[start:end]``, which
  equals the phrase up to case (``"Dog"`` for the phrase ``"dog"``);
* whole words only: the character before the match and the one after it must be the start/end
  of the text or a non-alphanumeric character (``"cat"`` is not found in ``"category"`` nor in
  ``"bobcat"``, but is in ``"cat,"``, ``"#cat"`` or ``"cat's"``); a phrase that itself starts or
  ends with a non-alphanumeric character needs no boundary on that side. Spaces inside a phrase
  must be matched exactly (``"potted plant"`` is not ``"potted  plant"``);
* several occurrences: the FIRST occurrence (leftmost) that does not overlap a span already
  taken by another phrase of the same image;
* word span: the indices, in ``text.split()``, of the words overlapping the character span
  (end exclusive); punctuation glued to a word belongs to it (``"dog,"`` is the word of
  ``"dog"``).

Several phrases of one image (:func:`locate_all`) are located LONGEST FIRST (ties: in the order
given), each taking its span, so ``"potted plant"`` is placed before ``"plant"`` and ``"plant"``
must then be found elsewhere (a text saying only "potted plant" lacks a separate "plant").

Synthesis (:func:`synthesize`): attempt 1 is greedy for every item (batched; with
``greedy_first=False`` it samples too, seed ``seed + 1``); items whose text misses a phrase are
retried together, attempt ``k`` sampling with seed ``seed + k``, until every phrase is found or
``max_attempts`` is reached. Greedy text from a small model tends to be one sentence shape for
every image; sampling every attempt gives an aligner texts as varied as its model writes. A
failed item keeps every attempt's text and the phrases missing from its last one, for the
quarantine record.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from iea.align.prompts import build_prompt, prompt_phrases


class Span(NamedTuple):
    """Where a phrase sits in a text: characters ``[start, end)`` and words
    ``[word_start, word_end)`` of ``text.split()``."""

    start: int
    end: int
    word_start: int
    word_end: int


_WORD = re.compile(r"\S+")


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _word_span(text: str, start: int, end: int) -> tuple[int, int]:
    first = last = None
    for k, m in enumerate(_WORD.finditer(text)):
        if m.end() > start and m.start() < end:
            if first is None:
                first = k
            last = k
        elif m.start() >= end:
            break
    if first is None:  # cannot happen for a non-blank match; keep a valid empty span
        return 0, 0
    return first, last + 1


def locate(text: str, phrase: str, taken: Iterable[tuple[int, int]] = ()) -> Span | None:
    """The span of ``phrase`` in ``text`` (rules in the module docstring), or None.

    Args:
        text: the synthesized text.
        phrase: the class phrase (e.g. ``"potted plant"``).
        taken: ``(start, end)`` character spans already given to other phrases of the same
            image; a match overlapping one of them is skipped.

    Returns:
        ``Span(start, end, word_start, word_end)`` of the first acceptable occurrence, or None
        when there is none (also for an empty phrase or a non-string text).
    """
    if not isinstance(text, str) or not isinstance(phrase, str) or not phrase.strip():
        return None
    taken = [(int(s), int(e)) for s, e in taken]
    pattern = re.compile(re.escape(phrase), re.IGNORECASE)
    need_left = phrase[0].isalnum()
    need_right = phrase[-1].isalnum()
    pos = 0
    while True:
        m = pattern.search(text, pos)
        if m is None:
            return None
        start, end = m.span()
        pos = start + 1
        if need_left and start > 0 and text[start - 1].isalnum():
            continue
        if need_right and end < len(text) and text[end].isalnum():
            continue
        if any(_overlaps((start, end), t) for t in taken):
            continue
        return Span(start, end, *_word_span(text, start, end))


def locate_all(text: str, phrases: Sequence[str]) -> dict[str, Span | None]:
    """Every phrase's span (None when missing), located longest first so that a phrase
    contained in a longer one (``"plant"`` in ``"potted plant"``) cannot take the longer
    one's words. The dict follows the order of ``phrases`` (duplicates collapse to one key)."""
    unique = list(dict.fromkeys(phrases))
    taken: list[tuple[int, int]] = []
    found: dict[str, Span | None] = {}
    for p in sorted(unique, key=len, reverse=True):  # stable: ties keep the given order
        span = locate(text, p, taken)
        found[p] = span
        if span is not None:
            taken.append((span.start, span.end))
    return {p: found[p] for p in unique}


@dataclass
class SynthesisResult:
    """The outcome for one image.

    ``text`` is the last attempt's text (thinking block and surrounding whitespace removed);
    ``spans`` maps every phrase (as given; phrases equal up to case share one span) to its
    :class:`Span` when all were found, and is empty otherwise; ``missing`` lists the phrases
    not found in the last attempt; ``texts`` holds every attempt's text in order
    (``texts[-1] == text``); ``reason`` says why a result is not ``ok``.
    """

    image_id: str
    text: str = ""
    spans: dict[str, Span] = field(default_factory=dict)
    attempts: int = 0
    missing: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    phrases: list[str] = field(default_factory=list)
    """The phrases asked for, in the order given."""

    @property
    def ok(self) -> bool:
        """Attempted, nothing missing, a span for every phrase."""
        return self.attempts > 0 and not self.missing and bool(self.spans)

    @property
    def reason(self) -> str:
        """Why it failed (``""`` when ok), for the quarantine record."""
        if self.ok:
            return ""
        if self.attempts == 0:
            return "not attempted"
        if not self.text:
            return f"empty text after {self.attempts} attempt(s)"
        return f"missing phrase(s) {self.missing} after {self.attempts} attempt(s)"

    def to_json(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "phrases": list(self.phrases),
            "text": self.text,
            "spans": {p: list(s) for p, s in self.spans.items()},
            "attempts": self.attempts,
            "missing": list(self.missing),
            "texts": list(self.texts),
            "ok": self.ok,
            "reason": self.reason,
        }


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def synthesize(
    llm: Any,
    items: Sequence[tuple[str, Sequence[str], Sequence[str]]],
    *,
    seed: int,
    max_new_tokens: int,
    max_attempts: int,
    batch_size: int,
    temperature: float = 0.8,
    greedy_first: bool = True,
) -> list[SynthesisResult]:
    """Write one text per image with ``llm`` and locate its phrases, retrying misses.

    Args:
        llm: an object with ``generate_text(prompts, max_new_tokens, *, batch_size, do_sample,
            temperature, seed) -> list[str]`` (e.g. :class:`iea.models.vlm.CausalLanguageModel`,
            whose chat template is applied with thinking off).
        items: ``(image_id, phrases, descriptions)`` per image; see
            :func:`iea.align.prompts.build_prompt` for the last two (phrases equal up to case
            are asked for once).
        seed: attempt ``k >= 2`` samples with seed ``seed + k`` (attempt 1 is greedy).
        max_new_tokens: the most new tokens per text.
        max_attempts: attempts per item (>= 1), the first included.
        batch_size: prompts per generation batch.
        temperature: sampling temperature of the retries.
        greedy_first: attempt 1 greedy (True) or sampled with seed ``seed + 1`` (False).

    Returns:
        One :class:`SynthesisResult` per item, in order. Bad model output (empty, junk,
        phrases missing) never raises: it shows as ``ok == False`` with ``missing`` and
        ``texts``.

    Raises:
        ValueError: bad arguments or items (no phrases, an empty phrase, a wrong number of
            descriptions), checked before anything is generated.
    """
    _check_int("max_new_tokens", max_new_tokens, 1)
    _check_int("max_attempts", max_attempts, 1)
    _check_int("batch_size", batch_size, 1)
    _check_int("seed", seed, -(2**62))
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    if not (0 < temperature < float("inf")):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    from iea.models.vlm import strip_thinking  # here: it imports torch; locate() needs none

    prompts: list[str] = []
    listed: list[list[str]] = []
    results: list[SynthesisResult] = []
    for item in items:
        image_id, phrases, descriptions = item
        pairs = prompt_phrases(list(phrases), list(descriptions))
        prompts.append(build_prompt(list(phrases), list(descriptions)))
        listed.append([p for p, _ in pairs])
        results.append(SynthesisResult(image_id=str(image_id), phrases=list(phrases)))
    pending = list(range(len(results)))
    for attempt in range(1, max_attempts + 1):
        if not pending:
            break
        sampling = attempt > 1 or not greedy_first
        texts = llm.generate_text(
            [prompts[i] for i in pending],
            max_new_tokens,
            batch_size=batch_size,
            do_sample=sampling,
            temperature=temperature,
            seed=seed + attempt if sampling else None,
        )
        still: list[int] = []
        for i, raw in zip(pending, texts, strict=True):
            rep = {p.lower(): p for p in listed[i]}
            text = strip_thinking(raw if isinstance(raw, str) else "")
            res = results[i]
            res.attempts = attempt
            res.text = text
            res.texts.append(text)
            found = locate_all(text, listed[i])
            spans = {p: found[rep[p.lower()]] for p in dict.fromkeys(res.phrases)}
            res.missing = [p for p, s in spans.items() if s is None]
            if res.missing:
                res.spans = {}
                still.append(i)
            else:
                res.spans = {p: s for p, s in spans.items() if s is not None}
        pending = still
    return results
