"""One LoRA training engine for the aligner and the JMASA model (transformers + peft, own loop).

An example is a user turn of interleaved text and images (``content`` as in a Qwen-VL chat
message, ``{"type": "image"}`` entries matched in order with ``images``) and a target answer.
Each example is encoded once: the chat template with the assistant generation prompt goes
through the model's processor (which expands every image into its visual tokens), then the
target tokens and ``<|im_end|>`` are appended. The loss is the mean NLL over the target tokens
only (prompt and padding are ``-100``), exactly the condition generation starts from.

What a step costs grows with its tokens, not with the dataset: encoded examples wait on disk
(``out_dir/encoded``, :class:`EncodedStore`) and a step loads its own; a frozen vision tower
runs once per example, not per step (``cache_vision``); a step's examples go through the model
in passes of similar lengths (``split_by_length``); only target positions reach the LM head
and the fp32 loss (``target_logits``). Each of these gives the same gradient as the plain path
(``tests/model/test_finetune.py``); ``group_by_length`` (off by default) changes the batches.
A dev set scored every epoch is encoded once (:class:`PromptCache`).

Why our own loop and not ``transformers.Trainer``: resumption must give the same weights as an
uninterrupted run, and that needs the data order to be a pure function of (seed, epoch), the RNG
state saved with each checkpoint, and per-epoch dev selection by JMASA F1 (a generate-and-score
callback, not a loss). All three are a few lines here and fight the Trainer's own sampler and
callbacks.

* LoRA (peft) with rank/alpha/dropout/target modules from :class:`FinetuneConfig`;
  ``modules_to_save`` trains whole extra modules next to the adapters (a random tiny base cannot
  learn through LoRA alone; the paper config leaves it empty). ``mode="full"`` trains all weights.
* Optimizer steps of ``batch_size * grad_accum`` examples; AdamW, linear warm-up then linear
  decay; gradient clipping; optional gradient checkpointing; fp32 on CPU, the model's dtype
  (bf16 on CUDA) elsewhere.
* Checkpoints every ``checkpoint_every`` optimizer steps and at each epoch end under
  ``out_dir/checkpoints/step-N`` (trainable weights, optimizer, scheduler, RNG, history), written
  to a temporary directory and renamed, so a directory that exists is complete. ``resume=True``
  continues from the newest one.
* A non-finite loss stops the run with :class:`TrainingDiverged` naming the step and examples.
* Metrics reach the caller through ``log(metrics, step)`` (:class:`MetricLogger`); ``iea`` knows
  nothing of MLflow.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from PIL import Image

from iea.models.vlm import END_TOKEN, _end_token_ids, _greedy
from iea.progress import report

ENGINE_VERSION = "finetune-v1"


class MetricLogger(Protocol):
    """Receives metrics as training goes: ``log({"train.loss": 0.3}, step)``. A logger that
    buffers may also have ``flush()``: the engine calls it after each checkpoint, so every
    metric up to the newest checkpoint has been written when a run stops."""

    def __call__(self, metrics: dict[str, float], step: int) -> None: ...


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the examples."""


@dataclass(frozen=True)
class Example:
    """One training/inference item.

    Args:
        key: a unique id (tweet id, ``image/region``), used in error messages.
        content: the user turn: ``[{"type": "image"}, {"type": "text", "text": ...}, ...]``.
        images: one PIL image per ``{"type": "image"}`` entry, in order.
        target: the answer to learn (empty at inference).
    """

    key: str
    content: tuple[dict[str, Any], ...]
    images: tuple[Image.Image, ...]
    target: str = ""


@dataclass(frozen=True)
class FinetuneConfig:
    """Training settings (the flows fill them from ``iea.config`` stage settings)."""

    epochs: int = 3
    learning_rate: float = 1e-4
    batch_size: int = 4
    grad_accum: int = 1
    mode: Literal["lora", "full"] = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    modules_to_save: tuple[str, ...] = ()
    gradient_checkpointing: bool = False
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    checkpoint_every: int = 0
    """Optimizer steps between checkpoints (0: only at epoch ends)."""
    eval_every: int = 1
    """Epochs between dev evaluations (``evaluate``); the last epoch is always evaluated, so
    best-epoch selection chooses among epochs ``eval_every``, ``2 * eval_every``, ..., the last."""
    patience: int = 0
    """Stop after this many dev evaluations in a row without a better ``select`` metric (0:
    train every epoch). The learning-rate schedule still spans ``epochs``, so every epoch that
    runs is the same as in the full run, and the kept weights are the full run's unless a
    later epoch would have beaten them. Needs ``evaluate`` and ``select``."""
    keep_checkpoints: int = 2
    seed: int = 0
    group_by_length: bool = False
    """Each optimizer step's examples drawn from a block of ``GROUP_BLOCK`` steps' worth of the
    epoch's shuffled order sorted by length, and the steps shuffled again: batches pad little,
    the order stays a pure function of (seed, epoch). Off by default: it changes which examples
    share a step, and where length follows content (the number of regions and aspects) the
    steps are less mixed; on 24 examples of three lengths its loss fell about half as fast
    (``benchmarks/train.py`` measures its speed). False: plain shuffled batches."""
    cache_vision: bool = True
    """When the vision tower is frozen (LoRA on the language model, as the paper), run it once
    per example before training and feed its outputs (``mm_encoder_outputs``) instead of the
    pixels at every step: the same inputs to the language model, without a vision forward per
    step, and the embeddings, not the pixels, held in memory."""
    split_by_length: bool = True
    """Each optimizer step's examples go through the model in passes of similar lengths
    (:func:`micro_batches`), not in consecutive slices: less padding, the same gradient."""
    target_logits: bool = True
    """Project to the vocabulary only the positions that predict a target token, and take the
    fp32 cross-entropy ``LOSS_CHUNK`` tokens at a time; False: the whole ``(batch, length,
    vocab)`` logits in fp32 (the HF default). The loss is the same either way."""
    max_tokens: int | None = None
    """Longest training example, in tokens (text and image tokens): a longer one is left out
    of training and written, with its key and length, to ``out_dir/rejects.jsonl``; it bounds
    a step's memory whatever the data holds. None: no cap."""

    def __post_init__(self) -> None:
        counts = ("epochs", "batch_size", "grad_accum", "lora_r", "lora_alpha", "eval_every")
        for name, least in (*((n, 1) for n in counts), ("patience", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise ValueError(f"{name} must be an int >= {least}, got {v!r}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if self.mode not in ("lora", "full"):
            raise ValueError(f"mode must be 'lora' or 'full', got {self.mode!r}")
        if self.checkpoint_every < 0 or self.keep_checkpoints < 1:
            raise ValueError("checkpoint_every must be >= 0 and keep_checkpoints >= 1")
        if self.max_tokens is not None and (
            isinstance(self.max_tokens, bool) or self.max_tokens < 1
        ):
            raise ValueError(f"max_tokens must be None or an int >= 1, got {self.max_tokens!r}")


@dataclass
class Encoded:
    """One example as tensors: ``input_ids`` (L,), ``labels`` (L,), ``pixel_values``
    (patches, D) or None, ``image_grid_thw`` (images, 3) or None, ``mm_token_type_ids``."""

    key: str
    input_ids: torch.Tensor
    labels: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class TrainResult:
    steps: int
    epochs: int
    best_epoch: int | None
    best_metric: float | None
    history: list[dict[str, float]]
    resumed_from: int | None
    seconds: float
    train_tokens: int
    train_examples_seen: int
    rejected: int = 0
    """Examples left out for being over ``max_tokens`` (listed in ``out_dir/rejects.jsonl``)."""
    stopped_early: bool = False
    """Training stopped before ``epochs`` (``patience`` evaluations without a better metric)."""


def _chat(processor: Any, content: Sequence[dict[str, Any]]) -> str:
    template = str(getattr(processor, "chat_template", "") or "")
    extra = {"enable_thinking": False} if "enable_thinking" in template else {}
    return processor.apply_chat_template(
        [{"role": "user", "content": list(content)}],
        tokenize=False,
        add_generation_prompt=True,
        **extra,
    )


def _check_example(ex: Example) -> None:
    n_img = sum(1 for c in ex.content if c.get("type") == "image")
    if n_img != len(ex.images):
        raise ValueError(
            f"example {ex.key!r}: {n_img} image entries in content but {len(ex.images)} images"
        )


def encode(processor: Any, ex: Example, *, with_target: bool = True) -> Encoded:
    """Token ids (prompt + target + ``<|im_end|>``) and labels (-100 on the prompt).

    Raises:
        ValueError: the content's image entries and ``images`` differ in number.
    """
    _check_example(ex)
    tok = processor.tokenizer
    batch = processor(
        text=[_chat(processor, ex.content)],
        images=[im.convert("RGB") for im in ex.images] or None,
        return_tensors="pt",
    )
    prompt = batch["input_ids"][0]
    extras = {k: v for k, v in batch.items() if k in ("pixel_values", "image_grid_thw")}
    mm = batch.get("mm_token_type_ids")
    if with_target:
        target = tok(ex.target, add_special_tokens=False)["input_ids"]
        target.append(tok.convert_tokens_to_ids(END_TOKEN))
        tail = torch.tensor(target, dtype=prompt.dtype)
        ids = torch.cat([prompt, tail])
        labels = torch.cat([torch.full_like(prompt, -100), tail])
        if mm is not None:
            extras["mm_token_type_ids"] = torch.cat([mm[0], torch.zeros_like(tail)])
    else:
        ids, labels = prompt, torch.full_like(prompt, -100)
        if mm is not None:
            extras["mm_token_type_ids"] = mm[0]
    return Encoded(ex.key, ids, labels, extras)


def collate(items: Sequence[Encoded], pad_id: int, *, side: str = "right") -> dict[str, Any]:
    """Pad a batch (``side`` right for training, left for generation) and stack images."""
    width = max(len(e.input_ids) for e in items)
    n = len(items)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), -100, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    mm = torch.zeros((n, width), dtype=torch.long)
    has_mm = any("mm_token_type_ids" in e.extras for e in items)
    for i, e in enumerate(items):
        k = len(e.input_ids)
        sl = slice(0, k) if side == "right" else slice(width - k, width)
        input_ids[i, sl] = e.input_ids
        labels[i, sl] = e.labels
        mask[i, sl] = 1
        if has_mm and "mm_token_type_ids" in e.extras:
            mm[i, sl] = e.extras["mm_token_type_ids"]
    out: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
    if has_mm:
        out["mm_token_type_ids"] = mm
    embeds = [e.extras["image_embeds"] for e in items if "image_embeds" in e.extras]
    if embeds:  # cached vision outputs (cache_vision): (tokens, hidden), (layers, tokens, hidden)
        out["image_embeds"] = torch.cat(embeds)
        out["deepstack"] = torch.cat(
            [e.extras["deepstack"] for e in items if "deepstack" in e.extras], dim=1
        )
        out["image_grid_thw"] = torch.cat(
            [e.extras["image_grid_thw"] for e in items if "image_grid_thw" in e.extras]
        )
    pix = [e.extras["pixel_values"] for e in items if "pixel_values" in e.extras]
    if pix and embeds:
        raise ValueError("a batch mixes pixels and cached vision outputs")
    if pix:
        out["pixel_values"] = torch.cat(pix)
        out["image_grid_thw"] = torch.cat(
            [e.extras["image_grid_thw"] for e in items if "image_grid_thw" in e.extras]
        )
    return out


def _to(batch: dict[str, Any], device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    out = {}
    for k, v in batch.items():
        if k == "pixel_values":
            out[k] = v.to(device=device, dtype=dtype)
        else:
            out[k] = v.to(device)
    if "image_embeds" in out:  # the model's own vision-output structure, one entry for all
        layers = out.pop("deepstack")
        out["mm_encoder_outputs"] = {
            "image": _vision_outputs_type()(
                pooler_output=(out.pop("image_embeds"),),
                deepstack_features=[(layer,) for layer in layers],
            )
        }
    return out


def _vision_outputs_type() -> type:
    """A transformers ``ModelOutput`` with ``pooler_output`` and ``deepstack_features`` (what
    Qwen3-VL's ``get_image_features`` returns and its forward takes as ``mm_encoder_outputs``)."""
    global _VISION_OUTPUTS
    if _VISION_OUTPUTS is None:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        @dataclass
        class VisionOutputs(BaseModelOutputWithPooling):
            deepstack_features: list | None = None

        _VISION_OUTPUTS = VisionOutputs
    return _VISION_OUTPUTS


_VISION_OUTPUTS: type | None = None


def _frozen_vision(model: Any) -> Any | None:
    """The model whose ``get_image_features`` gives a Qwen3-VL-style vision output
    (``pooler_output`` and ``deepstack_features`` per image), when its vision tower has no
    trainable weight; else None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    visual = getattr(getattr(base, "model", base), "visual", None)
    if visual is None or not hasattr(base, "get_image_features"):
        return None
    if any(p.requires_grad for p in visual.parameters()):
        return None
    return base


def cache_vision_outputs(model: Any, encoded: Sequence[Encoded]) -> int:
    """Replace each example's ``pixel_values`` by its frozen vision tower's outputs
    (``image_embeds`` (tokens, hidden) and ``deepstack`` (layers, tokens, hidden), in the
    model's dtype, on the CPU), one example at a time; returns how many were replaced (0 when
    the tower trains or the model has none of the expected structure)."""
    base = _frozen_vision(model)
    if base is None:
        return 0
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    n = 0
    with torch.no_grad():
        for e in encoded:
            if "pixel_values" not in e.extras:
                continue
            out = base.get_image_features(
                e.extras["pixel_values"].to(device=device, dtype=dtype),
                e.extras["image_grid_thw"].to(device),
            )
            if not hasattr(out, "deepstack_features"):
                return n  # another vision output shape: leave the rest as pixels
            del e.extras["pixel_values"]
            e.extras["image_embeds"] = torch.cat(out.pooler_output).cpu()
            e.extras["deepstack"] = torch.stack(
                [torch.cat(f) for f in out.deepstack_features]
            ).cpu()
            n += 1
    return n


def prepare_model(model: Any, cfg: FinetuneConfig) -> Any:
    """Wrap ``model`` for training: peft LoRA (``mode="lora"``) or all weights trainable."""
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if cfg.mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(cfg.seed)  # LoRA's A matrices are drawn from the global RNG

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        # Language model only (the paper): match the text decoder's projections, not the
        # vision tower's (Qwen3-VL's vision blocks name theirs qkv/proj, but be explicit).
        target_modules=r".*language_model.*\.(" + "|".join(cfg.target_modules) + r")$"
        if _has_language_model(model)
        else list(cfg.target_modules),
        modules_to_save=list(cfg.modules_to_save) or None,
        bias="none",
    )
    peft_model = get_peft_model(model, lora)
    if cfg.gradient_checkpointing:
        peft_model.enable_input_require_grads()
    return peft_model


def _has_language_model(model: Any) -> bool:
    return any(".language_model." in f".{n}." for n, _ in model.named_modules())


def _trainable(model: Any) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _order(n: int, seed: int, epoch: int) -> list[int]:
    """The example order of ``epoch``: a pure function of (seed, epoch), so a resumed run
    sees exactly the batches an uninterrupted one would."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


GROUP_BLOCK = 8
"""Optimizer steps' worth of examples sorted by length together (``group_by_length``)."""
LOSS_CHUNK = 4096
"""Target tokens per fp32 cross-entropy chunk (``target_logits``)."""
SPLIT_COST = 64
"""What one more forward pass costs, in padded tokens, when a step's examples are split into
micro-batches by length (``split_by_length``)."""


def micro_batches(
    chunk: Sequence[int], lengths: Sequence[int], batch_size: int, *, split: bool
) -> list[list[int]]:
    """The forward passes of one optimizer step's examples ``chunk``, at most ``batch_size``
    each. Without ``split``: consecutive slices of ``batch_size``. With it: the examples sorted
    by length (longest first) and cut where that minimises the padded tokens plus
    ``SPLIT_COST`` per pass, so long and short examples do not pad each other. The step's loss
    is token-weighted over all its passes, so any split gives the same gradient."""
    if not split:
        return [list(chunk[a : a + batch_size]) for a in range(0, len(chunk), batch_size)]
    items = sorted(chunk, key=lambda i: -lengths[i])
    n = len(items)
    best = [0.0] + [math.inf] * n  # best[j]: cheapest cut of items[:j]
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(max(0, j - batch_size), j):
            cost = best[i] + (j - i) * lengths[items[i]] + SPLIT_COST
            if cost < best[j]:
                best[j], cut[j] = cost, i
    out, j = [], n
    while j:
        out.append(items[cut[j] : j])
        j = cut[j]
    return out[::-1]


def epoch_steps(
    lengths: Sequence[int], per_step: int, seed: int, epoch: int, *, group: bool
) -> list[list[int]]:
    """The example indices of each optimizer step of ``epoch`` (``ceil(n / per_step)`` steps,
    each of ``per_step`` examples but possibly the last): a pure function of (lengths,
    per_step, seed, epoch).

    With ``group``, the shuffled order is cut into blocks of ``GROUP_BLOCK * per_step``, each
    block sorted by length (longest first, ties in shuffled order) and cut into steps, and the
    steps are shuffled; a step's micro-batches (``grad_accum``) are then of similar lengths too.
    """
    order = _order(len(lengths), seed, epoch)
    if not group:
        return [order[i : i + per_step] for i in range(0, len(order), per_step)]
    block = GROUP_BLOCK * per_step
    steps = []
    for b in range(0, len(order), block):
        part = sorted(order[b : b + block], key=lambda i: -lengths[i])
        steps += [part[i : i + per_step] for i in range(0, len(part), per_step)]
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch + 7_919)
    return [steps[k] for k in torch.randperm(len(steps), generator=g).tolist()]


def target_loss(
    model: Any, batch: dict[str, Any], labels: torch.Tensor, *, target_logits: bool = True
) -> torch.Tensor:
    """The summed NLL (fp32) of the target tokens of a right-padded batch.

    ``labels`` is ``(batch, length)`` with -100 off target. With ``target_logits`` only the
    ``N`` positions that predict a target token reach the LM head (``logits_to_keep`` as a
    boolean mask: ``(N, vocab)`` logits instead of ``(batch, length, vocab)``) and the fp32
    cross-entropy runs ``LOSS_CHUNK`` tokens at a time; otherwise the whole logits are upcast
    at once, as the HF loss does."""
    if target_logits:
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = labels[:, 1:] != -100
        logits = model(**batch, logits_to_keep=keep).logits  # (N, vocab), row-major order
        targets = labels[:, 1:][keep[:, :-1]]
    else:
        logits = model(**batch).logits
        logits = logits[:, :-1].reshape(-1, logits.shape[-1])
        targets = labels[:, 1:].reshape(-1)
        return torch.nn.functional.cross_entropy(
            logits.float(), targets, ignore_index=-100, reduction="sum"
        )
    return sum(
        torch.nn.functional.cross_entropy(
            logits[i : i + LOSS_CHUNK].float(), targets[i : i + LOSS_CHUNK], reduction="sum"
        )
        for i in range(0, len(targets), LOSS_CHUNK)
    )


def _save_checkpoint(
    root: Path, step: int, model: Any, opt: Any, sched: Any, state: dict, keep: int
) -> Path:
    final = root / f"step-{step:07d}"
    if final.exists():
        return final
    tmp = root / f".step-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({n: p.detach().cpu() for n, p in _trainable(model).items()}, tmp / "weights.pt")
    torch.save(
        {
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
        tmp / "optim.pt",
    )
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    os.replace(tmp, final)
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


class _Fingerprint:
    """sha256 over encoded examples, fed one at a time (:func:`data_fingerprint`)."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def update(self, e: Any) -> None:
        self.h.update(str(e.key).encode() + b"\0")
        tensors = {"input_ids": e.input_ids, "labels": e.labels, **e.extras}
        for name in sorted(tensors):
            t = tensors[name]
            if t is not None:
                self.h.update(name.encode() + str(t.dtype).encode())
                self.h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())

    def hexdigest(self) -> str:
        return self.h.hexdigest()[:16]


def data_fingerprint(encoded: Sequence[Any]) -> str:
    """16 hex digits over what the model is trained on: every encoded example's key, token
    ids, labels and pixels, in order. A checkpoint resumes only on the same fingerprint."""
    fp = _Fingerprint()
    for e in encoded:
        fp.update(e)
    return fp.hexdigest()


class EncodedStore:
    """The encoded training examples: the first ones in memory while their tensors fit in
    ``max_bytes``, the rest on disk, one ``.pt`` file each under ``root``; of every example,
    its key, length (tokens) and target-token count in memory. The training loop loads a
    step's examples when it runs them, so memory does not grow with the dataset.

    The default holds none: held examples cost far more than their tensors' bytes. With 64 MiB
    (which the 800 examples of ``benchmarks/scale.py --scales 4`` fit, 53 KB of tensors each)
    the peak RSS rose from 925 MiB at 1x to 1,341 MiB at 4x, against 899 and 892 MiB with
    every example on disk (session 16; likely the allocator: each held example pins memory
    among the encoding's large temporaries). Reading from disk was about 7% of the demo
    aligner's training loop."""

    def __init__(self, root: Path, max_bytes: int = 0):
        self.root = Path(root)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        self.max_bytes = max_bytes
        self.bytes = 0
        self.keys: list[str] = []
        self.lengths: list[int] = []
        self.n_target: list[int] = []
        self._held: dict[int, Encoded] = {}

    def add(self, e: Encoded) -> None:
        i = len(self.keys)
        size = _nbytes(e)
        if self.bytes + size <= self.max_bytes:
            self._held[i] = e
            self.bytes += size
        else:
            d = {"input_ids": e.input_ids, "labels": e.labels, "extras": e.extras}
            torch.save(d, self.root / f"{i:08d}.pt")
        self.keys.append(e.key)
        self.lengths.append(len(e.input_ids))
        self.n_target.append(int((e.labels != -100).sum()))

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> Encoded:
        held = self._held.get(i)
        if held is not None:
            return held
        d = torch.load(self.root / f"{i:08d}.pt", weights_only=True)
        return Encoded(self.keys[i], d["input_ids"], d["labels"], d["extras"])

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def encode_all(
    model: Any,
    processor: Any,
    examples: Sequence[Example],
    root: Path,
    *,
    cache_vision: bool,
    max_tokens: int | None = None,
    rejects: Path | None = None,
) -> tuple[EncodedStore, str]:
    """Encode ``examples`` one at a time into an :class:`EncodedStore` at ``root`` (with
    ``cache_vision``, each one's pixels replaced by its frozen vision tower's outputs, see
    :func:`cache_vision_outputs`); returns the store and the data fingerprint (over the pixels).
    ``examples`` may be any sequence, built lazily: each item is read once. An example longer
    than ``max_tokens`` is left out and written to ``rejects`` (one JSON line: ``item``,
    ``key``, ``tokens``, ``max_tokens``, ``reason``); the file is rewritten on every call.

    Raises:
        ValueError: an empty target (named), images that do not match the content, or every
            example over ``max_tokens``.
    """
    store, fp = EncodedStore(root), _Fingerprint()
    frozen = cache_vision and _frozen_vision(model) is not None
    was_training = model.training
    model.eval()
    rejected: list[dict[str, Any]] = []
    try:
        for i in range(len(examples)):
            ex = examples[i]
            if not ex.target:
                raise ValueError(f"example {ex.key!r} (item {i}) has an empty target")
            e = encode(processor, ex)
            if max_tokens is not None and len(e.input_ids) > max_tokens:
                rejected.append(
                    {
                        "item": i,
                        "key": ex.key,
                        "tokens": len(e.input_ids),
                        "max_tokens": max_tokens,
                        "reason": f"{len(e.input_ids)} tokens, over max_tokens={max_tokens}",
                    }
                )
                continue
            fp.update(e)
            if frozen:
                cache_vision_outputs(model, [e])
            store.add(e)
            report("encode", i + 1, len(examples))
    finally:
        model.train(was_training)
    if rejects is not None:
        rejects.parent.mkdir(parents=True, exist_ok=True)
        tmp = rejects.with_suffix(".partial")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rejected))
        tmp.replace(rejects)
    if rejected and not len(store):
        where = f" (listed in {rejects})" if rejects is not None else ""
        raise ValueError(
            f"all {len(rejected)} examples are over max_tokens={max_tokens}{where}: "
            f"the shortest has {min(r['tokens'] for r in rejected)} tokens"
        )
    return store, fp.hexdigest()


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under ``out_dir/checkpoints``, or None."""
    ckpts = sorted((Path(out_dir) / "checkpoints").glob("step-*"))
    return ckpts[-1] if ckpts else None


def train(
    model: Any,
    processor: Any,
    examples: Sequence[Example],
    cfg: FinetuneConfig,
    *,
    out_dir: str | Path,
    log: MetricLogger | None = None,
    evaluate: Callable[[Any], dict[str, float]] | None = None,
    select: str | None = None,
    resume: bool = True,
    progress: str = "train",
) -> tuple[Any, TrainResult]:
    """Fine-tune ``model`` (prepared with :func:`prepare_model`) on ``examples``.

    Args:
        model: the prepared model (peft-wrapped or fully trainable), on its device.
        processor: its processor (tokenizer, image processor, chat template).
        examples: the training examples (targets non-empty): any sequence, read once, item by
            item (it may build its items lazily; none is kept).
        cfg: settings; ``cfg.seed`` fixes the data order and the RNG.
        out_dir: checkpoints go to ``out_dir/checkpoints``, the best weights to
            ``out_dir/best.pt``.
        log: receives ``train.loss``, ``train.lr``, ``train.tokens_per_s``, ... per step and
            the ``evaluate`` metrics per epoch.
        evaluate: called with the model at the end of every ``cfg.eval_every``-th epoch and of
            the last; returns dev metrics.
        select: the metric of ``evaluate`` to maximise for best-epoch selection (the best
            epoch's weights are loaded back at the end); None: keep the last epoch.
        resume: continue from the newest checkpoint in ``out_dir`` when there is one.

    Returns:
        (the model with the selected weights, :class:`TrainResult`).

    Raises:
        TrainingDiverged: a non-finite loss.
        ValueError: no examples, an empty target, or images that do not match the content.
    """
    t0 = time.perf_counter()
    if not examples:
        raise ValueError("no training examples")
    out_dir = Path(out_dir)
    ckpt_root = out_dir / "checkpoints"
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    pad_id = processor.tokenizer.pad_token_id
    if pad_id is None:
        pad_id = _end_token_ids(model, processor.tokenizer)[0]
    encoded, fingerprint = encode_all(
        model,
        processor,
        examples,
        out_dir / "encoded",
        cache_vision=cfg.cache_vision,
        max_tokens=cfg.max_tokens,
        rejects=out_dir / "rejects.jsonl",
    )
    rejected = len(examples) - len(encoded)
    per_step = cfg.batch_size * cfg.grad_accum
    steps_per_epoch = math.ceil(len(encoded) / per_step)
    total = steps_per_epoch * cfg.epochs
    params = list(_trainable(model).values())
    if not params:
        raise ValueError("the model has no trainable parameters (did you call prepare_model?)")
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        return max(0.0, (total - step) / max(1, total - cfg.warmup_steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    state: dict[str, Any] = {
        "engine": ENGINE_VERSION,
        "step": 0,
        "history": [],
        "best_metric": None,
        "best_epoch": None,
        "config": asdict(cfg),
        "examples_seen": 0,
        "tokens": 0,
    }
    state["data"] = fingerprint  # over the pixels: what the data is
    resumed_from = None
    torch.manual_seed(cfg.seed)
    if not resume and ckpt_root.exists():  # a run that does not resume starts from nothing
        shutil.rmtree(ckpt_root)
    ckpt = latest_checkpoint(out_dir) if resume else None
    if ckpt is not None:
        saved = json.loads((ckpt / "state.json").read_text())
        if saved["config"] != json.loads(json.dumps(asdict(cfg))):
            raise ValueError(
                f"{ckpt}: was written with other settings; remove {ckpt_root} or use the same"
            )
        if saved.get("data") != state["data"]:
            raise ValueError(
                f"{ckpt}: was written for other data (examples fingerprint"
                f" {saved.get('data')}, now {state['data']}); remove {ckpt_root} or train on"
                " the same examples"
            )
        weights = torch.load(ckpt / "weights.pt")
        named = _trainable(model)
        with torch.no_grad():
            for n, w in weights.items():
                named[n].copy_(w)
        optim = torch.load(ckpt / "optim.pt", weights_only=False)
        opt.load_state_dict(optim["optimizer"])
        sched.load_state_dict(optim["scheduler"])
        torch.set_rng_state(optim["rng"])
        if optim["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(optim["cuda_rng"])
        state = saved
        resumed_from = state["step"]
    if cfg.patience and (evaluate is None or select is None):
        raise ValueError("patience needs evaluate and select (the metric it waits on)")
    model.train()
    step = state["step"]
    lengths = encoded.lengths
    while step < total and not state.get("stopped_early"):
        epoch, within = divmod(step, steps_per_epoch)
        steps = epoch_steps(lengths, per_step, cfg.seed, epoch, group=cfg.group_by_length)
        for s in range(within, steps_per_epoch):
            ts = time.perf_counter()
            chunk = steps[s]
            n_target = sum(encoded.n_target[i] for i in chunk)
            opt.zero_grad(set_to_none=True)
            loss_sum = 0.0
            passes = micro_batches(chunk, lengths, cfg.batch_size, split=cfg.split_by_length)
            for idx in passes:
                batch = _to(collate([encoded[i] for i in idx], pad_id), device, dtype)
                labels = batch.pop("labels")
                lp = target_loss(model, batch, labels, target_logits=cfg.target_logits)
                # token-weighted over the whole optimizer step: accumulation == one big batch
                loss = lp / n_target
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"loss is {float(loss)} at step {step + 1} (epoch {epoch + 1}) on "
                        f"examples {[encoded.keys[i] for i in idx][:5]}: lower the learning "
                        "rate or check these inputs"
                    )
                loss.backward()
                loss_sum += float(loss.detach())
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            if not torch.isfinite(grad_norm):
                raise TrainingDiverged(
                    f"gradient norm is {float(grad_norm)} at step {step + 1} (epoch {epoch + 1})"
                    f" on examples {[encoded.keys[i] for i in chunk][:5]}: lower the learning"
                    " rate or check these inputs"
                )
            opt.step()
            sched.step()
            step += 1
            state["step"] = step
            state["examples_seen"] += len(chunk)
            state["tokens"] += n_target
            dt = time.perf_counter() - ts
            report(progress, step, total)  # optimizer steps (iea.progress)
            if log is not None:
                log(
                    {
                        "train.loss": loss_sum,
                        "train.lr": sched.get_last_lr()[0],
                        "train.grad_norm": float(grad_norm),
                        "train.samples_per_s": len(chunk) / dt,
                        "train.tokens_per_s": n_target / dt,
                        "train.epoch": epoch + (s + 1) / steps_per_epoch,
                    },
                    step,
                )
            end_of_epoch = s + 1 == steps_per_epoch
            if end_of_epoch:
                row: dict[str, float] = {"epoch": epoch + 1, "step": step, "loss": loss_sum}
                evaluated = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
                if evaluate is not None and evaluated:
                    model.eval()
                    metrics = evaluate(model)
                    model.train()
                    row.update(metrics)
                    if log is not None:
                        log({f"dev.{k}": float(v) for k, v in metrics.items()}, step)
                    if select is not None:
                        value = float(metrics[select])
                        if state["best_metric"] is None or value > state["best_metric"]:
                            state["best_metric"], state["best_epoch"] = value, epoch + 1
                            out_dir.mkdir(parents=True, exist_ok=True)
                            torch.save(
                                {n: p.detach().cpu() for n, p in _trainable(model).items()},
                                out_dir / "best.pt.tmp",
                            )
                            os.replace(out_dir / "best.pt.tmp", out_dir / "best.pt")
                        since = epoch + 1 - state["best_epoch"]
                        stop = cfg.patience and since >= cfg.patience * cfg.eval_every
                        state["stopped_early"] = bool(stop and epoch + 1 < cfg.epochs)
                state["history"].append(row)
            if end_of_epoch or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                _save_checkpoint(ckpt_root, step, model, opt, sched, state, cfg.keep_checkpoints)
                flush = getattr(log, "flush", None)
                if flush is not None:
                    flush()
            if state.get("stopped_early"):
                break
    if select is not None and (out_dir / "best.pt").is_file():
        named = _trainable(model)
        with torch.no_grad():
            for n, w in torch.load(out_dir / "best.pt").items():
                named[n].copy_(w)
    encoded.remove()  # (a run that stops early leaves it; the next start writes it anew)
    model.eval()
    return model, TrainResult(
        steps=step,
        epochs=cfg.epochs,
        best_epoch=state["best_epoch"],
        best_metric=state["best_metric"],
        history=state["history"],
        resumed_from=resumed_from,
        seconds=time.perf_counter() - t0,
        train_tokens=state["tokens"],
        train_examples_seen=state["examples_seen"],
        stopped_early=bool(state.get("stopped_early")),
        rejected=rejected,
    )


class PromptCache:
    """Generation inputs encoded once and reused by later :func:`generate` calls on the same
    examples (a dev set scored every epoch): the processor's output for an example, keyed by
    a sha256 of its content and its images' pixels, so an entry is found only for the same
    prompt and images whatever object carries them. Entries are kept while their tensors fit in
    ``max_bytes`` (default 256 MiB); past that an example is encoded at every call, so memory
    stays bounded whatever the set's size. ``hits``/``misses`` count lookups."""

    def __init__(self, max_bytes: int = 256 * 2**20):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        self._entries: dict[str, Encoded] = {}

    @staticmethod
    def key(ex: Example) -> str:
        h = hashlib.sha256(json.dumps(list(ex.content), sort_keys=True).encode())
        h.update(pixels_digest(*ex.images).encode())
        return h.hexdigest()

    def encode(self, processor: Any, ex: Example) -> Encoded:
        """``encode(processor, ex, with_target=False)``, from the cache when it holds it."""
        k = self.key(ex)
        hit = self._entries.get(k)
        if hit is not None:
            self.hits += 1
            return Encoded(ex.key, hit.input_ids, hit.labels, hit.extras)
        self.misses += 1
        e = encode(processor, ex, with_target=False)
        size = _nbytes(e)
        if self.bytes + size <= self.max_bytes:
            self._entries[k] = e
            self.bytes += size
        return e


def pixels_digest(*images: Image.Image) -> str:
    """sha256 (hex) of the images' modes, sizes and pixels, in order."""
    h = hashlib.sha256()
    for im in images:
        h.update(f"{im.mode}{im.size}".encode())
        h.update(im.tobytes())
    return h.hexdigest()


def _nbytes(e: Encoded) -> int:
    tensors = [e.input_ids, e.labels, *e.extras.values()]
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def generate(
    model: Any,
    processor: Any,
    examples: Sequence[Example],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    progress: str = "generate",
    cache: PromptCache | None = None,
) -> list[str]:
    """Greedy answers to ``examples`` (their targets ignored), batched with left padding;
    reports the examples answered as ``progress`` (:mod:`iea.progress`). With a ``cache``,
    an example encoded by an earlier call is not encoded again (the same answers)."""
    tok = processor.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else _end_token_ids(model, tok)[0]
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    was_training = model.training
    model.eval()
    out: list[str] = []
    for a in range(0, len(examples), batch_size):
        part = examples[a : a + batch_size]
        if cache is None:
            enc = [encode(processor, e, with_target=False) for e in part]
        else:
            enc = [cache.encode(processor, e) for e in part]
        batch = _to(collate(enc, pad, side="left"), device, dtype)
        batch.pop("labels")
        rows = _greedy(model, tok, batch, max_new_tokens)
        out += [t.strip() for t in tok.batch_decode(rows, skip_special_tokens=True)]
        report(progress, len(out), len(examples))
    if was_training:
        model.train()
    return out


def save_trained(
    model: Any,
    processor: Any,
    path: str | Path,
    *,
    base_ref: str,
    seed: int = 0,
    cache: str | Path | None = None,
) -> Path:
    """Save what training changed: the peft adapter (with any ``modules_to_save``) or, for a
    fully fine-tuned model, the whole model; plus the processor and ``iea_model.json``
    (``{"base": base_ref, "seed": ..., "kind": "adapter" | "full", "engine": ...,
    "base_fingerprint": ...}``; the seed names the ``tiny-…`` base the adapter was trained on,
    the fingerprint the weights it sits on, :func:`iea.models.refs.base_fingerprint`)."""
    from iea.models.refs import base_fingerprint

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    kind = "adapter" if hasattr(model, "peft_config") else "full"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    meta = {"base": base_ref, "seed": seed, "kind": kind, "engine": ENGINE_VERSION}
    if kind == "adapter":
        meta["base_fingerprint"] = base_fingerprint(base_ref, seed=seed, cache=cache)
        meta["probe"] = probe_logits(model, processor)
    (path / "iea_model.json").write_text(json.dumps(meta, indent=2))
    return path


PROBE_TEXT = "probe: the dog on the sofa"
"""A fixed input whose logits a saved adapter records and its loader checks."""


@torch.no_grad()
def probe_logits(model: Any, processor: Any, n: int = 16) -> dict[str, Any]:
    """The first ``n`` logits at the last position of :data:`PROBE_TEXT` (text only), and the
    dtype they were computed in: an adapter loaded elsewhere must give them again."""
    tok = getattr(processor, "tokenizer", processor)
    ids = tok(PROBE_TEXT, return_tensors="pt")["input_ids"].to(model.device)
    was_training = model.training
    model.eval()
    logits = model(input_ids=ids).logits[0, -1, :n].float().cpu()
    model.train(was_training)
    return {"logits": [float(x) for x in logits], "dtype": str(next(model.parameters()).dtype)}


def check_adapter_loaded(path: Path, model: Any, processor: Any, meta: dict) -> None:
    """Refuse an adapter that loaded as something else: every tensor of its safetensors must
    be in the model (none missing, none left at its initial value), and the probe logits
    saved with it must come back (within 1e-3 relative, when the dtype is the one it was saved
    in).

    Raises:
        ValueError: naming the missing keys or the logit difference.
    """
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    saved = load_file(str(path / "adapter_model.safetensors"))
    loaded = get_peft_model_state_dict(model)
    missing = sorted(set(saved) - set(loaded))
    differ = [
        k
        for k in saved
        if k in loaded and not torch.equal(saved[k], loaded[k].cpu().to(saved[k].dtype))
    ]
    if missing or differ:
        raise ValueError(
            f"{path}: the adapter did not load: {len(missing)} of its {len(saved)} tensors are"
            f" missing from the model ({', '.join(missing[:3])}) and {len(differ)} differ"
            f" ({', '.join(differ[:3])})"
        )
    probe = meta.get("probe")
    if probe and probe.get("dtype") == str(next(model.parameters()).dtype):
        now = torch.tensor(probe_logits(model, processor, len(probe["logits"]))["logits"])
        then = torch.tensor(probe["logits"])
        if not torch.allclose(now, then, rtol=1e-3, atol=1e-4):
            raise ValueError(
                f"{path}: the loaded adapter answers the probe otherwise than at training time"
                f" (max |diff| {float((now - then).abs().max()):.3g}): not the model it saved"
            )


def check_base(path: str | Path, meta: dict, now: str) -> None:
    """Refuse an adapter whose base weights here (``now``) are not the ones it was trained on.

    Raises:
        ValueError: both fingerprints known and different (names both).
    """
    saved = meta.get("base_fingerprint")
    if saved and now != "unknown" and saved != "unknown" and saved != now:
        raise ValueError(
            f"{path}: the adapter was trained on {meta['base']} with weights {saved}, but"
            f" {meta['base']} here is {now}: refusing to load it on other weights (get the"
            " base it was trained on, or retrain)"
        )


PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib"})
"""Files that unpickle (run code) when loaded: a trained folder holds safetensors only."""
CODE_KEYS = ("auto_map",)
"""Config keys that make transformers import code shipped with a model."""


def check_trained_folder(path: str | Path) -> None:
    """Refuse a trained folder that could run code when loaded: a pickle-format file (any of
    :data:`PICKLE_SUFFIXES`, next to or instead of the safetensors) or a JSON config naming
    code to import (``auto_map``). Checked before anything in the folder is read.

    Raises:
        ValueError: naming every offending file.
    """
    path = Path(path)
    bad = [
        f"{f.name} (pickle format)" for f in sorted(path.rglob("*")) if f.suffix in PICKLE_SUFFIXES
    ]
    for f in sorted(path.glob("*.json")):
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and any(k in doc for k in CODE_KEYS):
            bad.append(f"{f.name} (auto_map: code to import)")
    if not list(path.glob("*.safetensors")):
        bad.append("no *.safetensors weights")
    if bad:
        raise ValueError(
            f"{path}: refusing to load a trained model folder that could run code: "
            + "; ".join(bad)
        )


def load_trained(
    path: str | Path,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    cache: str | Path | None = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Load a :func:`save_trained` folder: the base reference (hub id, local folder or
    ``tiny-…``) with the adapter on top, or the fully fine-tuned model; ``(model, processor)``.

    Raises:
        ValueError: ``path`` holds no ``iea_model.json``, or could run code when loaded
            (:func:`check_trained_folder`).
    """
    from iea.models.refs import load_vlm

    path = Path(path)
    meta_file = path / "iea_model.json"
    if not meta_file.is_file():
        raise ValueError(f"{path}: not a trained iea model (no iea_model.json)")
    check_trained_folder(path)
    meta = json.loads(meta_file.read_text())
    common = {"device": device, "dtype": dtype, "trust_remote_code": trust_remote_code}
    if meta["kind"] == "full":
        model, processor = load_vlm(str(path.resolve()), **common)
        return model, processor
    from peft import PeftModel

    from iea.models.refs import base_fingerprint

    seed = int(meta.get("seed", 0))
    base, processor = load_vlm(meta["base"], cache=cache, seed=seed, **common)
    check_base(path, meta, base_fingerprint(meta["base"], seed=seed, cache=cache))
    model = PeftModel.from_pretrained(base, str(path))
    model.eval()
    check_adapter_loaded(path, model, processor, meta)
    return model, processor
