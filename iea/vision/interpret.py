"""Region interpretation: a frozen VLM describes each kept region and rates its sentiment.

Each region is shown to the VLM as its bounding-box crop with the pixels outside the region
set to mid-gray (128), so the model sees the region's shape and content but not its
neighbours. The answer (``prompts.INTERPRET_REGION``) is parsed into an
:class:`Interpretation`; an answer that does not parse is kept as raw text and marked
``parsed=False`` (never an error). The region's text ``E`` aggregates description and rating.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from iea.data.regions import region_crop

__all__ = ["Interpretation", "interpret_crops", "parse_answer", "region_crop"]

MAX_RAW_CHARS = 500
_SENTIMENT = {"positive": "POS", "neutral": "NEU", "negative": "NEG"}
_FIELD = re.compile(
    r"^\s*(description|sentiment|score)\s*[:=]\s*(.*?)\s*$", re.IGNORECASE | re.MULTILINE
)


@dataclass(frozen=True)
class Interpretation:
    """What the VLM said about one region.

    ``polarity`` is POS/NEU/NEG or None; ``score`` is in [-1, 1] or None; ``text`` is the
    aggregated region text ``E`` used downstream.
    """

    description: str
    polarity: str | None
    score: float | None
    parsed: bool
    raw: str

    @property
    def text(self) -> str:
        if not self.parsed:
            return self.description
        rating = {"POS": "positive", "NEU": "neutral", "NEG": "negative"}[self.polarity]
        score = "" if self.score is None else f", score {self.score:+.2f}"
        return f"{self.description} (sentiment: {rating}{score})"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "text": self.text}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Interpretation:
        return cls(d["description"], d["polarity"], d["score"], d["parsed"], d["raw"])


def parse_answer(raw: str) -> Interpretation:
    """Parse ``Description: ... / Sentiment: ... / Score: ...``.

    Parsed when a non-empty description and a known sentiment are present; the score is
    optional (None when missing or not a number) and clipped to [-1, 1].
    """
    fields: dict[str, str] = {}
    for m in _FIELD.finditer(raw):
        fields.setdefault(m.group(1).lower(), m.group(2))
    description = fields.get("description", "").strip()
    polarity = _SENTIMENT.get(fields.get("sentiment", "").strip().strip(".").lower())
    if not description or polarity is None:
        text = " ".join(raw.split())[:MAX_RAW_CHARS]
        return Interpretation(text, None, None, False, raw)
    score = None
    m = re.match(r"[-+]?\d*\.?\d+", fields.get("score", "").strip())
    if m:
        score = float(min(1.0, max(-1.0, float(m.group(0)))))
    return Interpretation(description, polarity, score, True, raw)


def interpret_crops(
    vlm, crops: Sequence[np.ndarray], prompt: str, max_new_tokens: int, batch_size: int
) -> list[Interpretation]:
    """Run the VLM over region crops in batches of ``batch_size`` (greedy, bounded); one
    Interpretation each, in the order of ``crops``.

    Crops are batched by size (pixel count, which sets the number of visual tokens), so a batch
    pads little; greedy answers do not depend on the batching (left padding,
    ``tests/model/test_models_tiny.py``)."""
    order = sorted(range(len(crops)), key=lambda i: (crops[i].shape[0] * crops[i].shape[1], i))
    answers: dict[int, Interpretation] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = [Image.fromarray(crops[i]) for i in idx]
        texts = vlm.generate(
            batch, [prompt] * len(batch), max_new_tokens=max_new_tokens, batch_size=len(batch)
        )
        answers.update(zip(idx, (parse_answer(a) for a in texts), strict=True))
    return [answers[i] for i in range(len(crops))]
