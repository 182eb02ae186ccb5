"""The FGCA synthesis prompt, in one place.

One prompt per image: it asks for one short tweet-like text containing every class phrase of
the image verbatim, lists the phrases on one line, then gives one line per phrase with its region
description ``E``::

    Write one short, natural, tweet-like text about a photo. Answer with the text only. The
    text must contain each of these phrases exactly as written: dog, potted plant
    Regions:
    - dog: a brown dog on the grass
    - potted plant

* Phrases are listed in alphabetical order (case-insensitive), whatever order they come in,
  with their descriptions: one image always gets the same prompt, and the trained tiny copier
  (:mod:`iea.recipes.copier`) writes them in that order. Phrases equal up to case are listed once.
* Each phrase is written unquoted after a space, so a byte-level BPE tokenizer cuts it into the
  same tokens as in running text (`` dog`` rather than ``"dog``).
* Descriptions come from a VLM and may be empty, very long or junk: control characters are
  dropped, whitespace (newlines included) collapsed, and the result cut to
  :data:`MAX_DESCRIPTION_CHARS` (ending in ``...``); an empty one leaves the bare
  ``- <phrase>`` line, so the prompt keeps exactly one line per phrase whatever the VLM said.
* The constant instruction comes first, so a batch of prompts shares one prefix.

``FGCA_PROMPT_VERSION`` names this text: change it whenever the template or the way lines are
built changes (cached syntheses key on it; the tiny copier is trained on it, so its cached build
must then be rebuilt too).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

FGCA_PROMPT_VERSION = "fgca-synth-v1"

FGCA_PROMPT_TEMPLATE = (
    "Write one short, natural, tweet-like text about a photo. Answer with the text only. "
    "The text must contain each of these phrases exactly as written: {phrases}\n"
    "Regions:\n"
    "{regions}"
)
"""``{phrases}``: the phrases joined by ``, ``; ``{regions}``: one line per phrase
(:data:`REGION_LINE`, or :data:`REGION_LINE_BARE` when the description is empty)."""

REGION_LINE = "- {phrase}: {description}"
REGION_LINE_BARE = "- {phrase}"
MAX_DESCRIPTION_CHARS = 80
"""Longer descriptions are cut to this many characters (``...`` included)."""


def clean_description(text: str | None, max_chars: int = MAX_DESCRIPTION_CHARS) -> str:
    """One line of at most ``max_chars`` characters (``""`` when nothing is left)."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    text = "".join(
        " " if ch.isspace() else ch
        for ch in text
        if ch.isspace() or not unicodedata.category(ch).startswith("C")
    )
    text = " ".join(text.split())
    if len(text) > max_chars:
        text = text[: max(0, max_chars - 3)].rstrip() + "..."
    return text


def prompt_phrases(
    phrases: Sequence[str], descriptions: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """The ``(phrase, cleaned description)`` pairs a prompt lists, in its order.

    Sorted by phrase (case-insensitive, stable); of phrases equal up to case the first is kept
    with its description.

    Raises:
        ValueError: no phrases, an empty or multi-line phrase, or a descriptions list whose
            length is neither 0 nor ``len(phrases)``.
    """
    phrases = list(phrases)
    descriptions = list(descriptions)
    if not phrases:
        raise ValueError("a prompt needs at least one phrase")
    if descriptions and len(descriptions) != len(phrases):
        raise ValueError(
            f"one description per phrase: got {len(descriptions)} descriptions for "
            f"{len(phrases)} phrases"
        )
    for p in phrases:
        if not isinstance(p, str) or not p.strip() or p != " ".join(p.split()):
            raise ValueError(f"phrases must be non-empty single-spaced strings, got {p!r}")
    descriptions = descriptions or [""] * len(phrases)
    first: dict[str, tuple[str, str]] = {}
    for p, d in zip(phrases, descriptions, strict=True):
        first.setdefault(p.lower(), (p, clean_description(d)))
    return sorted(first.values(), key=lambda pd: pd[0].lower())


def build_prompt(phrases: Sequence[str], descriptions: Sequence[str] = ()) -> str:
    """The synthesis prompt for one image.

    Args:
        phrases: the class phrases present in the image (e.g. ``["dog", "potted plant"]``), in
            any order; non-empty, single-spaced.
        descriptions: the region description of each phrase (same length), or empty for none;
            each may be empty or junk (see :func:`clean_description`).

    Raises:
        ValueError: see :func:`prompt_phrases`.
    """
    pairs = prompt_phrases(phrases, descriptions)
    lines = [
        REGION_LINE.format(phrase=p, description=d) if d else REGION_LINE_BARE.format(phrase=p)
        for p, d in pairs
    ]
    return FGCA_PROMPT_TEMPLATE.format(
        phrases=", ".join(p for p, _ in pairs), regions="\n".join(lines)
    )
