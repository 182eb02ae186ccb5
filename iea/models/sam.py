"""SAM models by reference: ``vit_h`` / ``vit_l`` / ``vit_b`` (+ checkpoint) or ``tiny-sam``.

``tiny-sam-world`` is that architecture trained on the controlled world
(:mod:`iea.recipes.sam`), built once into the model cache by :func:`iea.models.refs.ensure_tiny`.
Real variants are built by segment-anything's own registry (``sam_model_registry``) from their
official ``.pth`` checkpoints. ``tiny-sam`` is the same architecture (segment-anything's
``ImageEncoderViT`` / ``PromptEncoder`` / ``MaskDecoder`` classes) at small sizes, randomly
initialised from a seed, saved once to the model cache as ``spec.json`` + ``sam.pth`` and loaded
back from that checkpoint file like a real one. A local directory holding those two files is a
reference too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import torch

from iea.models.refs import LOAD_COUNTS, ModelNotAvailable, cache_dir, ensure_tiny, resolve_device
from iea.models.tiny import TINY_BUILDERS

SAM_VARIANTS: tuple[str, ...] = ("vit_h", "vit_l", "vit_b")
TINY_SAM_VERSION = 1
TINY_SAM_SPEC: dict[str, Any] = {
    "encoder_embed_dim": 64,
    "encoder_depth": 2,
    "encoder_num_heads": 2,
    "encoder_global_attn_indexes": [1],
    "image_size": 256,
    "window_size": 4,
    "prompt_embed_dim": 32,
    "decoder_mlp_dim": 64,
    "decoder_num_heads": 2,
    "iou_head_hidden_dim": 32,
}


def build_sam_from_spec(spec: dict[str, Any], checkpoint: Path | None = None):
    """segment-anything's ``_build_sam`` with every size a parameter (``spec`` keys above)."""
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    image_size, patch = spec["image_size"], 16
    embed = spec["prompt_embed_dim"]
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=spec["encoder_depth"],
            embed_dim=spec["encoder_embed_dim"],
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=spec["encoder_num_heads"],
            patch_size=patch,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=spec["encoder_global_attn_indexes"],
            window_size=spec["window_size"],
            out_chans=embed,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=embed,
            image_embedding_size=(image_size // patch, image_size // patch),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2,
                embedding_dim=embed,
                mlp_dim=spec["decoder_mlp_dim"],
                num_heads=spec["decoder_num_heads"],
            ),
            transformer_dim=embed,
            iou_head_depth=3,
            iou_head_hidden_dim=spec["iou_head_hidden_dim"],
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    sam.eval()
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        sam.load_state_dict(state)
    return sam


def tiny_sam_dir(seed: int = 0, cache: Path | None = None) -> Path:
    """Build ``tiny-sam`` for ``seed`` into the cache once (atomically); return its folder."""
    root = Path(cache) if cache is not None else cache_dir()
    path = root / f"tiny-sam-seed{seed}-v{TINY_SAM_VERSION}"
    if (path / "sam.pth").is_file():
        return path
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".build-tiny-sam-"))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            sam = build_sam_from_spec(TINY_SAM_SPEC)
        torch.save(sam.state_dict(), tmp / "sam.pth")
        (tmp / "spec.json").write_text(json.dumps(TINY_SAM_SPEC, indent=2))
        try:
            os.replace(tmp, path)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_sam(
    ref: str,
    checkpoint: Path | None = None,
    *,
    device: str = "auto",
    cache: Path | None = None,
    seed: int = 0,
):
    """Load a SAM model (eval mode, on ``device``; SAM runs in fp32).

    Args:
        ref: ``vit_h``/``vit_l``/``vit_b`` (needs ``checkpoint``), ``tiny-sam``, or a folder with
            ``spec.json`` + ``sam.pth``.
        checkpoint: the official ``sam_vit_*.pth`` file for a ``vit_*`` reference.

    Raises:
        ModelNotAvailable: the checkpoint or folder is missing.
        ValueError: an unknown reference.
    """
    from segment_anything import sam_model_registry

    if ref in SAM_VARIANTS:
        if checkpoint is None or not Path(checkpoint).is_file():
            raise ModelNotAvailable(
                f"SAM {ref}: checkpoint {checkpoint or '(segment.sam_checkpoint not set)'} "
                "not found; "
                f"download sam_{ref}_*.pth from the segment-anything release on a machine with "
                "internet and set segment.sam_checkpoint, or use segment.sam=tiny-sam"
            )
        sam = sam_model_registry[ref](checkpoint=str(checkpoint))
    elif ref == "tiny-sam" or ref in TINY_BUILDERS or Path(ref).is_dir():
        if ref == "tiny-sam":
            folder = tiny_sam_dir(seed, cache)
        elif ref in TINY_BUILDERS:
            if TINY_BUILDERS[ref].kind != "sam":
                raise ValueError(f"{ref!r} is a {TINY_BUILDERS[ref].kind} tiny model, not a SAM")
            folder = ensure_tiny(ref, seed=seed, cache=cache)
        else:
            folder = Path(ref)
        if not (folder / "spec.json").is_file() or not (folder / "sam.pth").is_file():
            raise ModelNotAvailable(f"SAM folder {folder}: needs spec.json and sam.pth")
        spec = json.loads((folder / "spec.json").read_text())
        sam = build_sam_from_spec(spec, folder / "sam.pth")
    else:
        raise ValueError(
            f"unknown SAM reference {ref!r}: use one of {', '.join(SAM_VARIANTS)}, tiny-sam, "
            "tiny-sam-world, or a folder with spec.json + sam.pth"
        )
    LOAD_COUNTS[f"sam:{ref}"] += 1
    return sam.to(resolve_device(device)).eval()
