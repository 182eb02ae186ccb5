"""Models named by a reference: a hub id, a local directory or a ``tiny-…`` name.

``load_vlm``/``load_causal_lm`` return ``(model, processor|tokenizer)``;
``VisionLanguageModel``/``CausalLanguageModel`` wrap them for batched greedy generation.
See :mod:`iea.models.refs` and :mod:`iea.models.tiny`.
"""

from iea.models.refs import (
    LOAD_COUNTS,
    ModelNotAvailable,
    kind_of,
    load_causal_lm,
    load_vlm,
    resolve_device,
    resolve_dtype,
)
from iea.models.vlm import CausalLanguageModel, VisionLanguageModel

__all__ = [
    "LOAD_COUNTS",
    "CausalLanguageModel",
    "ModelNotAvailable",
    "VisionLanguageModel",
    "kind_of",
    "load_causal_lm",
    "load_vlm",
    "resolve_device",
    "resolve_dtype",
]
