"""Recipes for the tiny models that learn the controlled world, all in one pattern.

A recipe is the real architecture at a small size, trained offline from a seed on data the
recipe generates (:mod:`iea.data.world`), saved in the layout its loader reads, with a
``train_report.json`` of its held-out quality. :func:`build` runs one: it trains, evaluates on
held-out data the training never saw, and writes the report next to the weights. The model
cache (:mod:`iea.models.refs`) calls it once per ``<name>-seed<seed>-v<version>`` folder.

The recipes: :mod:`iea.recipes.sam` (``tiny-sam-world``), :mod:`iea.recipes.interpreter`
(``tiny-qwen3-vl-interp``) and :mod:`iea.recipes.copier` (``tiny-qwen3-fgca``, the FGCA text
writer). The VLM recipe trains through the project's engine (:mod:`iea.models.finetune`), as the
aligner and the JMASA model do; SAM has its own loss (masks and IoU head), and the copier, a
text-only causal LM, keeps its packed next-token loop (the engine encodes image-text chats).
The model registry (:data:`iea.models.tiny.TINY_BUILDERS`) names each builder by module path,
so ``iea.models`` never imports this package (which uses it).

Every recipe is deterministic by seed on one machine (torch's CPU kernels with a fixed thread
count); the reports record the measured quality, never a target.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPORT = "train_report.json"


def write_report(path: str | Path, report: dict[str, Any]) -> dict[str, Any]:
    """Write ``report`` as ``path/train_report.json`` (sorted keys); returns it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / REPORT).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def read_report(path: str | Path) -> dict[str, Any]:
    """The ``train_report.json`` of a built tiny model (``{}`` when there is none)."""
    f = Path(path) / REPORT
    return json.loads(f.read_text()) if f.is_file() else {}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), seconds)``."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0
