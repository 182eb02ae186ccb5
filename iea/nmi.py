"""Nearest-to-Match Instruction (NMI): the VLM input ``X = [I, c1, U1, c2, U2, ..., Un, cm]``.

Each ``U = [P, R, E]`` is an aligned phrase ``P`` of the tweet, followed by the crop ``R`` of its
image region and the region's description ``E``; the unaligned text ``c_i`` stays in order and the
whole image ``I`` comes first. The builder never touches pixels: images are :class:`ImagePart`
placeholders that the training engine replaces with the whole image and the region crops (in
``Instruction.region_ids`` order after the whole image).

Layout of ``"full"`` (``<image>`` / ``<region k>`` are the image placeholders, as in
:meth:`Instruction.text_only`)::

    {NMI_HEADER}
    <image>
    Text: w1 w2 w3 [region: <region 4> E4] w4 ...

* A region group is ``" [region: "`` + region image + ``" " + E + "]"``, inserted right after the
  last word of the region's phrase (``tokens[word_end - 1]``). Only the occurrence given by the
  span gets it, even when the same phrase appears elsewhere in the text.
* Several regions on the same phrase each get their own group, ordered by score (descending),
  then region id. Regions on different (possibly overlapping) spans are ordered by span end, then
  span start; each group is inserted after its own phrase end.
* ``E`` is cleaned: whitespace collapsed, ``[``/``]`` replaced by ``(``/``)`` so that a group's
  closing bracket is always its own, cut to :data:`MAX_DESCRIPTION_CHARS` at a word boundary
  (marked ``...``). An empty ``E`` gives the group ``[region: <region k>]``.
* No aligned region: header, whole image, plain text.
* The header depends on the ablation only (never on whether a tweet has regions):
  :data:`NMI_HEADER` for ``full`` / ``no_interpretation`` / ``no_segmentation``,
  :data:`APPENDED_HEADER` for ``no_nmi``, :data:`TASK_HEADER` for ``no_aligner_nmi`` and
  ``text_only``.

Ablations (the paper's Table 3 rows), selected by name from :data:`ABLATIONS`:

* ``no_segmentation``: the ``full`` layout; what differs is upstream: without SAM, the whole
  image is the one region that is interpreted, aligned and placed next to its phrase (the
  paper's mildest ablation: Table 3, 0.702 against full 0.717 on Twitter-2015).
* ``no_interpretation``: region groups next to their phrases, without ``E``.
* ``no_nmi``: the plain text, then (when there are regions) a line ``Regions:`` followed by all
  region groups (with ``E``) in ascending region id order, instead of next to their phrases.
* ``no_aligner_nmi``: whole image and plain text only (no region images, no descriptions).
* ``text_only``: not a row of the paper's Table 3, a floor beside it: the text alone, no image.

Spans are validated for every ablation, so one bad alignment fails the same way everywhere.
The target is ``iea.metrics.format_pairs`` of the gold (aspect term, polarity) pairs, the term
being ``" ".join(tokens[start:end])``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from iea.data.records import POLARITIES, Tweet
from iea.metrics import format_pairs

NMI_VERSION = "nmi-v2"
ABLATIONS: tuple[str, ...] = (
    "full",
    "no_segmentation",
    "no_interpretation",
    "no_nmi",
    "no_aligner_nmi",
    "text_only",
)
TASK_HEADER = "Find every aspect term in the text and its sentiment (POS, NEU or NEG)."
NMI_HEADER = TASK_HEADER + " Each region of the image follows the phrase it shows."
APPENDED_HEADER = TASK_HEADER + " The regions of the image follow the text."
MAX_DESCRIPTION_CHARS = 200
_ELLIPSIS = "..."


@dataclass(frozen=True)
class AlignedRegion:
    """One image region aligned to a phrase of a tweet.

    ``word_start``/``word_end`` index ``tweet.tokens`` (end exclusive). ``bbox`` is XYWH in image
    pixels (used by the engine to crop; the builder only carries it). ``score`` orders several
    regions on the same phrase (higher first).
    """

    region_id: int
    word_start: int
    word_end: int
    description: str
    bbox: tuple[int, int, int, int]
    score: float = 1.0

    def __post_init__(self) -> None:
        if len(self.bbox) != 4:
            raise ValueError(f"region {self.region_id}: bbox must be XYWH, got {self.bbox!r}")
        if not math.isfinite(self.score):
            raise ValueError(f"region {self.region_id}: score must be finite, got {self.score!r}")


@dataclass(frozen=True)
class TextPart:
    """A run of instruction text."""

    text: str


@dataclass(frozen=True)
class ImagePart:
    """An image placeholder: the whole image (``region_id`` None) or one region's crop."""

    kind: Literal["image", "region"]
    region_id: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("image", "region"):
            raise ValueError(f"kind must be 'image' or 'region', got {self.kind!r}")
        if self.kind == "image" and self.region_id is not None:
            raise ValueError(f"the whole image takes no region_id, got {self.region_id!r}")
        if self.kind == "region" and not isinstance(self.region_id, int):
            raise ValueError(f"a region image needs an int region_id, got {self.region_id!r}")


Part = TextPart | ImagePart


@dataclass(frozen=True)
class Instruction:
    """A built NMI sample: the input parts, the target text and the region image order."""

    parts: tuple[Part, ...]
    target: str
    tweet_id: str
    region_ids: tuple[int, ...]
    ablation: str = "full"
    version: str = NMI_VERSION

    def to_messages(self) -> list[dict[str, Any]]:
        """Qwen-VL style content list: ``{"type": "image"}`` per image part, in order, and
        ``{"type": "text", "text": ...}`` per text part. The images to pass alongside are the
        whole image, then the crops of ``region_ids`` in that order."""
        return [
            {"type": "image"} if isinstance(p, ImagePart) else {"type": "text", "text": p.text}
            for p in self.parts
        ]

    def text_only(self) -> str:
        """The input as one string, images shown as ``<image>`` / ``<region k>`` (for logs)."""
        return "".join(_render(p) for p in self.parts)


def _render(part: Part) -> str:
    if isinstance(part, TextPart):
        return part.text
    return "<image>" if part.kind == "image" else f"<region {part.region_id}>"


def clean_description(text: str, max_chars: int = MAX_DESCRIPTION_CHARS) -> str:
    """Collapse whitespace, turn ``[``/``]`` into ``(``/``)`` and cut to ``max_chars``.

    Args:
        text: a region description ``E``.
        max_chars: the longest result (>= 4); a longer text is cut at a word boundary where
            possible and ends with ``...``.

    Returns:
        The cleaned description (possibly empty).

    Raises:
        ValueError: when ``max_chars`` < 4.
    """
    if max_chars < len(_ELLIPSIS) + 1:
        raise ValueError(f"max_chars must be >= {len(_ELLIPSIS) + 1}, got {max_chars}")
    text = " ".join(text.split()).replace("[", "(").replace("]", ")")
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - len(_ELLIPSIS)]
    if " " in cut and text[len(cut)] != " ":
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip() + _ELLIPSIS


def build_target(tweet: Tweet) -> str:
    """The gold aspect-polarity pairs of ``tweet`` as ``iea.metrics.format_pairs`` text.

    Raises:
        ValueError: when a gold span is empty or out of range, or a polarity is unknown.
    """
    pairs = []
    for a in sorted(tweet.aspects):  # text order: the answer parser assigns occurrences so
        if not 0 <= a.start < a.end <= len(tweet.tokens):
            raise ValueError(
                f"tweet {tweet.id}: gold aspect span [{a.start}, {a.end}) is empty or out of "
                f"range for {len(tweet.tokens)} tokens"
            )
        if a.polarity not in POLARITIES:
            raise ValueError(f"tweet {tweet.id}: unknown polarity {a.polarity!r}")
        pairs.append((" ".join(tweet.tokens[a.start : a.end]), a.polarity))
    return format_pairs(pairs)


def build_instruction(
    tweet: Tweet, aligned: Sequence[AlignedRegion], *, ablation: str = "full"
) -> Instruction:
    """Build the NMI input and target of one tweet.

    Args:
        tweet: the tweet (tokens and gold aspects).
        aligned: its aligned regions, in any order; spans index ``tweet.tokens``.
        ablation: one of :data:`ABLATIONS` (see the module docstring for each layout).

    Returns:
        The :class:`Instruction`; ``region_ids`` lists the region images in the order their
        placeholders appear (empty for ``no_aligner_nmi``).

    Raises:
        ValueError: for an unknown ablation (all are listed), a region span that is empty or out
            of range, or a repeated region id (naming the tweet and region), or a bad gold aspect.
    """
    if ablation not in _LAYOUTS:
        raise ValueError(f"unknown ablation {ablation!r}; expected one of {ABLATIONS}")
    _check_regions(tweet, aligned)
    parts = _merge(_LAYOUTS[ablation](tweet.tokens, aligned))
    region_ids = tuple(
        p.region_id for p in parts if isinstance(p, ImagePart) and p.region_id is not None
    )
    return Instruction(parts, build_target(tweet), tweet.id, region_ids, ablation)


def _check_regions(tweet: Tweet, aligned: Sequence[AlignedRegion]) -> None:
    seen: set[int] = set()
    for r in aligned:
        if not 0 <= r.word_start < r.word_end <= len(tweet.tokens):
            raise ValueError(
                f"tweet {tweet.id}: region {r.region_id} span [{r.word_start}, {r.word_end}) is "
                f"empty or out of range for {len(tweet.tokens)} tokens"
            )
        if r.region_id in seen:
            raise ValueError(f"tweet {tweet.id}: region id {r.region_id} is aligned twice")
        seen.add(r.region_id)


def _group(region: AlignedRegion, *, describe: bool) -> list[Part]:
    text = clean_description(region.description) if describe else ""
    tail = f" {text}]" if text else "]"
    return [TextPart(" [region: "), ImagePart("region", region.region_id), TextPart(tail)]


def _start(header: str) -> list[Part]:
    return [TextPart(header + "\n"), ImagePart("image"), TextPart("\nText:")]


def _words(tokens: Sequence[str]) -> list[Part]:
    return [TextPart(" " + w) for w in tokens]


def _inline(
    tokens: Sequence[str], aligned: Sequence[AlignedRegion], *, describe: bool
) -> list[Part]:
    # (end, start) orders groups that share an insertion point; score desc then region_id
    # orders regions on the same phrase, so the layout never depends on the input order.
    order = sorted(aligned, key=lambda r: (r.word_end, r.word_start, -r.score, r.region_id))
    after: dict[int, list[AlignedRegion]] = {}
    for r in order:
        after.setdefault(r.word_end - 1, []).append(r)
    parts = _start(NMI_HEADER)
    for i, w in enumerate(tokens):
        parts.append(TextPart(" " + w))
        for r in after.get(i, ()):
            parts.extend(_group(r, describe=describe))
    return parts


def _layout_plain(tokens: Sequence[str], aligned: Sequence[AlignedRegion]) -> list[Part]:
    return _start(TASK_HEADER) + _words(tokens)


def _layout_text_only(tokens: Sequence[str], aligned: Sequence[AlignedRegion]) -> list[Part]:
    return [TextPart(TASK_HEADER + "\nText:"), *_words(tokens)]


def _layout_no_nmi(tokens: Sequence[str], aligned: Sequence[AlignedRegion]) -> list[Part]:
    parts = _start(APPENDED_HEADER) + _words(tokens)
    if aligned:
        parts.append(TextPart("\nRegions:"))
    for r in sorted(aligned, key=lambda r: r.region_id):
        parts.extend(_group(r, describe=True))
    return parts


_LAYOUTS = {
    "full": partial(_inline, describe=True),
    "no_segmentation": partial(_inline, describe=True),
    "no_interpretation": partial(_inline, describe=False),
    "no_nmi": _layout_no_nmi,
    "no_aligner_nmi": _layout_plain,
    "text_only": _layout_text_only,
}


def _merge(parts: Sequence[Part]) -> tuple[Part, ...]:
    """Join adjacent text parts so the content list alternates text and images."""
    out: list[Part] = []
    for p in parts:
        if isinstance(p, TextPart) and out and isinstance(out[-1], TextPart):
            out[-1] = TextPart(out[-1].text + p.text)
        elif not (isinstance(p, TextPart) and not p.text):
            out.append(p)
    return tuple(out)
