"""Content keys of the stages' results: exactly what changes a result, and nothing else.

A key is a digest of

* the data it reads (a dataset or FGCA version, an image's bytes),
* the settings that change the result (:func:`interpreter_fields`, ...; a setting that only
  changes logging or scheduling, such as ``interpreter.overlay_samples``, ``concurrency`` or a
  work pool, is left out),
* the identity of every model it loads (a tiny model's recipe hash, :func:`model_identity`),
* and the **code** that computes it (:func:`code_digest`): every ``iea`` module the stage's
  modules import, transitively, parsed, with comments, docstrings and formatting dropped. A
  changed helper or prompt changes the key of every stage that imports it; a reworded comment
  changes none. ``iea.config`` is left out: the settings' values are in the key already.

Hand-bumped constants (``PROMPT_VERSION``, ``NMI_VERSION``...) stay as names in the records,
but a key no longer depends on anyone remembering to bump them.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from iea.config import Settings

STAGE_CODE: dict[str, tuple[str, ...]] = {
    "segment": ("iea.vision.segment",),
    "interpret": ("iea.vision.interpreter",),
    "fgca": ("iea.align.build",),
    "aligner": ("iea.align.training", "iea.align.aligner", "iea.models.finetune"),
    "align_answers": ("iea.jmasa",),
    "jmasa": ("iea.jmasa", "iea.nmi", "iea.models.finetune"),
}
"""The modules each stage runs (the rest is found through their imports)."""

NOT_CODE = frozenset({"iea.config"})
"""Modules whose edits change no result by themselves (module doc)."""


def _origin(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return None
    return Path(spec.origin) if spec is not None and spec.origin else None


def _imports(module: str, tree: ast.Module) -> set[str]:
    """The modules of ``module``'s own package (``iea``) it imports, anywhere in its body
    (also inside functions)."""
    root = module.split(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == root}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative imports: iea uses none
                raise ValueError(f"{module}: a relative import; key code needs absolute ones")
            base = node.module or ""
            if base.split(".")[0] != root:
                continue
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names if _origin(f"{base}.{a.name}")}
    return {m for m in out if _origin(m) is not None}


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


@functools.cache
def _module_code(module: str) -> tuple[str, frozenset[str]]:
    """``(normalised code, iea modules it imports)`` of one module, read once per process."""
    path = _origin(module)
    if path is None:
        raise ValueError(f"module {module!r} not found")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    deps = frozenset(_imports(module, tree))
    code = ast.dump(_strip_docstrings(tree), annotate_fields=False, include_attributes=False)
    return code, deps


def code_closure(roots: tuple[str, ...]) -> list[str]:
    """``roots`` and every ``iea`` module they import, transitively, less :data:`NOT_CODE`."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        m = todo.pop()
        if m in seen or m in NOT_CODE:
            continue
        seen.add(m)
        todo.extend(_module_code(m)[1])
    return sorted(seen)


@functools.cache
def code_digest(roots: tuple[str, ...]) -> str:
    """16 hex digits over the normalised code of :func:`code_closure` (``roots``); computed
    once per process (a key is asked for every region)."""
    h = hashlib.sha256()
    for m in code_closure(tuple(roots)):
        h.update(m.encode() + b"\0" + _module_code(m)[0].encode() + b"\0")
    return h.hexdigest()[:16]


def stage_code(stage: str) -> str:
    """:func:`code_digest` of a stage of :data:`STAGE_CODE`."""
    return code_digest(STAGE_CODE[stage])


def model_identity(ref: str, seed: int) -> str:
    """What a model reference loads: a tiny model's name with its recipe hash (its weights
    change with the recipe, not the name), else the reference itself."""
    from iea.models.refs import TINY_BUILDERS, tiny_identity

    return tiny_identity(ref, seed=seed) if ref in TINY_BUILDERS else ref


def interpreter_fields(settings: Settings) -> dict[str, Any]:
    """The interpreter settings that change a region's description and rating (not
    ``concurrency``, ``pool``, ``overlay_samples``)."""
    i, rt = settings.interpreter, settings.runtime
    return {
        "model": model_identity(i.model, rt.seed),
        "max_new_tokens": i.max_new_tokens,
        "batch_size": i.batch_size,
        "code": stage_code("interpret"),
    }


def segment_fields(settings: Settings) -> dict[str, Any]:
    """The segmentation settings that change the regions (not ``points_per_batch``, which
    only splits the same prompts into batches)."""
    s = settings.segment.model_dump(mode="json", exclude={"points_per_batch"})
    return {
        **s,
        "sam": model_identity(settings.segment.sam, settings.runtime.seed),
        "code": stage_code("segment"),
    }


def train_fields(stage: str, settings: Settings) -> dict[str, Any]:
    """A model stage's training recipe: base model identity, LoRA, training settings (less
    ``eval_every`` at 1 and ``patience`` at 0, which keys made before they existed lack), seed,
    dtype."""
    s = getattr(settings, stage)
    train = s.train.model_dump(mode="json")
    for name, before in (("eval_every", 1), ("patience", 0)):
        if train.get(name) == before:
            del train[name]
    return {
        "model": model_identity(s.model, settings.runtime.seed),
        "lora": s.lora.model_dump(mode="json"),
        "train": train,
        "seed": settings.runtime.seed,
        "dtype": settings.runtime.dtype,
    }


def digest(parts: dict[str, Any]) -> str:
    """16 hex digits of ``parts`` as sorted JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def aligner_key(settings: Settings, fgca_version: str, extra: dict | None = None) -> str:
    """The trained aligner: FGCA version, training recipe, negatives, and the code of its
    training, answer format and engine (``extra``: more parts from the caller)."""
    return digest(
        {
            "stage": "aligner",
            "data": fgca_version,
            **train_fields("aligner", settings),
            "negatives": settings.aligner.negatives,
            "code": stage_code("aligner"),
            **(extra or {}),
        }
    )


def jmasa_key(settings: Settings, data_version: str, ablation: str, aligner: str | None) -> str:
    """The trained JMASA model: dataset version, training recipe, ablation, the aligner's key
    (None without regions), what makes the regions (segmentation, filters, interpreter) and
    the code of the NMI, the instruction and the engine."""
    return digest(
        {
            "stage": "jmasa",
            "data": data_version,
            **train_fields("jmasa", settings),
            "ablation": ablation,
            "aligner": aligner,
            "segment": segment_fields(settings),
            "filters": settings.filters.model_dump(mode="json"),
            "interpreter": interpreter_fields(settings),
            "code": stage_code("jmasa"),
        }
    )
