"""Batched greedy generation with chat-templated prompts: a VLM (image + text) and a text LLM.

Prompts go through the model's own chat template (one user message, then the assistant turn),
are batched with LEFT padding so every row's last prompt token sits at the same position, and are
decoded greedily (``do_sample=False``) for at most ``max_new_tokens`` new tokens, stopping at
``<|im_end|>`` (plus whatever end tokens the checkpoint's generation config lists). Only the new
text is returned, special tokens skipped, surrounding whitespace stripped, and an (empty or not)
leading ``<think>…</think>`` block removed.

:meth:`CausalLanguageModel.generate_text` can also sample (``do_sample=True``), seeded so that a
call is reproducible.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from iea.models.refs import load_causal_lm, load_vlm

END_TOKEN = "<|im_end|>"
_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)


def strip_thinking(text: str) -> str:
    """Remove a leading ``<think>…</think>`` block (Qwen3 reasoning) and surrounding spaces."""
    return _THINK.sub("", text, count=1).strip()


def _check_common(max_new_tokens: int, batch_size: int) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")


def _end_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """``<|im_end|>`` plus the generation config's ``eos_token_id`` (int or list), de-duplicated."""
    ids: list[int] = []
    im_end = tokenizer.convert_tokens_to_ids(END_TOKEN)
    if isinstance(im_end, int) and im_end != getattr(tokenizer, "unk_token_id", None):
        ids.append(im_end)
    eos = getattr(model.generation_config, "eos_token_id", None)
    for i in [eos] if isinstance(eos, int) else list(eos or []):
        if i not in ids:
            ids.append(int(i))
    if not ids and tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError("the tokenizer has no <|im_end|> and the model no eos_token_id")
    return ids


def _greedy(
    model: Any, tokenizer: Any, inputs: dict[str, torch.Tensor], max_new_tokens: int
) -> list[list[int]]:
    """Greedy-decode a left-padded batch; the new token ids of each row, cut after the end token.

    ``inputs["input_ids"]`` is ``(batch, prompt_len)``; every returned list has at most
    ``max_new_tokens`` ids and excludes the end token and padding.
    """
    ends = _end_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else ends[0]
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=ends,
            pad_token_id=pad,
        )
    new = out[:, inputs["input_ids"].shape[1] :].tolist()
    result = []
    for row in new:
        cut = next((k for k, t in enumerate(row) if t in ends), len(row))
        result.append(row[:cut])
    return result


def _sample(
    model: Any,
    tokenizer: Any,
    inputs: dict[str, torch.Tensor],
    max_new_tokens: int,
    temperature: float,
) -> list[list[int]]:
    """Like :func:`_greedy`, but sampling (``do_sample=True``) at ``temperature``; top-k/top-p
    come from the checkpoint's generation config (else transformers' defaults). Draws from
    torch's global RNG: the caller seeds it (see :meth:`CausalLanguageModel.generate_ids`)."""
    ends = _end_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else ends[0]
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=True,
            num_beams=1,
            temperature=float(temperature),
            eos_token_id=ends,
            pad_token_id=pad,
        )
    new = out[:, inputs["input_ids"].shape[1] :].tolist()
    result = []
    for row in new:
        cut = next((k for k, t in enumerate(row) if t in ends), len(row))
        result.append(row[:cut])
    return result


def _check_sampling(do_sample: bool, temperature: float, seed: int | None) -> None:
    if not isinstance(do_sample, bool):
        raise ValueError(f"do_sample must be a bool, got {do_sample!r}")
    if not do_sample:
        return
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an int or None, got {seed!r}")


@contextmanager
def _seeded_rng(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG (CPU and, on CUDA, the model's device) for the block, restoring the
    caller's RNG state afterwards; ``seed=None``: no seeding, no restoring."""
    if seed is None:
        yield
        return
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _decode(tokenizer: Any, rows: list[list[int]]) -> list[str]:
    if not rows:  # batch_decode([]) would return [""]
        return []
    texts = tokenizer.batch_decode(
        rows, skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    return [strip_thinking(t) for t in texts]


def _chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


class VisionLanguageModel:
    """A loaded VLM (``model``, ``processor``) with batched greedy generation.

    Args:
        model: an image-text-to-text model (e.g. ``Qwen3VLForConditionalGeneration``).
        processor: its processor (tokenizer + image processor + chat template).
        ref: the reference it was loaded from (for messages and logs).
    """

    def __init__(self, model: Any, processor: Any, *, ref: str | None = None):
        self.model = model
        self.processor = processor
        self.ref = ref

    @classmethod
    def from_ref(
        cls,
        ref: str,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        trust_remote_code: bool = False,
        cache: str | Path | None = None,
        seed: int = 0,
    ) -> VisionLanguageModel:
        """Load ``ref`` with :func:`iea.models.refs.load_vlm` (same arguments)."""
        model, processor = load_vlm(
            ref,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            cache=cache,
            seed=seed,
        )
        return cls(model, processor, ref=ref)

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def chat_prompt(self, prompt: str, *, image: bool) -> str:
        """The chat-templated text of one user turn (image part first when ``image``) plus the
        assistant generation prompt; ``<|image_pad|>`` is expanded later by the processor."""
        content: list[dict[str, Any]] = [{"type": "image"}] if image else []
        content.append({"type": "text", "text": prompt})
        messages = [{"role": "user", "content": content}]
        # Only templates that read it get ``enable_thinking`` (Qwen3's switch): the processor
        # treats template kwargs it cannot find in the template as processor kwargs and warns.
        template = self.processor.chat_template
        extra = {"enable_thinking": False} if "enable_thinking" in str(template) else {}
        return self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **extra
        )

    def _inputs(
        self, texts: list[str], images: list[Image.Image] | None
    ) -> dict[str, torch.Tensor]:
        batch = self.processor(
            text=texts,
            images=images,
            padding=True,
            padding_side="left",
            return_tensors="pt",
        )
        return {k: v.to(self.device) if hasattr(v, "to") else v for k, v in batch.items()}

    def generate_ids(
        self,
        images: Sequence[Image.Image] | None,
        prompts: Sequence[str],
        max_new_tokens: int = 64,
        *,
        batch_size: int = 8,
    ) -> list[list[int]]:
        """Like :meth:`generate` (``images=None``: text only), but the new token ids of each item
        (end token excluded), at most ``max_new_tokens`` per item."""
        prompts = list(prompts)
        _check_common(max_new_tokens, batch_size)
        if any(not isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be strings")
        if images is not None:
            images = list(images)
            if len(images) != len(prompts):
                raise ValueError(
                    f"one image per prompt: got {len(images)} images and {len(prompts)} prompts"
                )
            bad = [i for i, im in enumerate(images) if not isinstance(im, Image.Image)]
            if bad:
                raise ValueError(f"images must be PIL images; items {bad[:5]} are not")
        rows: list[list[int]] = []
        for idx in _chunks(len(prompts), batch_size):
            texts = [self.chat_prompt(prompts[i], image=images is not None) for i in idx]
            ims = [images[i].convert("RGB") for i in idx] if images is not None else None
            rows += _greedy(self.model, self.tokenizer, self._inputs(texts, ims), max_new_tokens)
        return rows

    def generate(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        max_new_tokens: int = 64,
        *,
        batch_size: int = 8,
    ) -> list[str]:
        """Answer one text prompt about one image per item.

        Args:
            images: N PIL images (any size; the processor resizes them, RGB-converted here).
            prompts: N prompts; item i is ``(images[i], prompts[i])``.
            max_new_tokens: the most new tokens generated per item (>= 1).
            batch_size: items per forward batch (results do not depend on it).

        Returns:
            N decoded answers (new text only, special tokens skipped, stripped).

        Raises:
            ValueError: different numbers of images and prompts, non-PIL images, bad sizes.
        """
        if images is None:
            raise ValueError("images is None: use generate_text for text-only prompts")
        return _decode(
            self.tokenizer,
            self.generate_ids(images, prompts, max_new_tokens, batch_size=batch_size),
        )

    def generate_text(
        self, prompts: Sequence[str], max_new_tokens: int = 64, *, batch_size: int = 8
    ) -> list[str]:
        """Answer N text-only prompts (no image part in the user turn); as :meth:`generate`."""
        return _decode(
            self.tokenizer,
            self.generate_ids(None, prompts, max_new_tokens, batch_size=batch_size),
        )


class CausalLanguageModel:
    """A loaded text LLM (``model``, ``tokenizer``) with batched chat generation: greedy, or
    seeded sampling through :meth:`generate_text`.

    The chat template is applied with ``enable_thinking=False`` (Qwen3's switch: no reasoning
    block; templates without the switch ignore it).
    """

    def __init__(self, model: Any, tokenizer: Any, *, ref: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.ref = ref

    @classmethod
    def from_ref(
        cls,
        ref: str,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        trust_remote_code: bool = False,
        cache: str | Path | None = None,
        seed: int = 0,
    ) -> CausalLanguageModel:
        """Load ``ref`` with :func:`iea.models.refs.load_causal_lm` (same arguments)."""
        model, tokenizer = load_causal_lm(
            ref,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            cache=cache,
            seed=seed,
        )
        return cls(model, tokenizer, ref=ref)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def chat_prompt(self, prompt: str) -> str:
        """One user turn plus the assistant generation prompt, thinking switched off."""
        messages = [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )

    def generate_ids(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 64,
        *,
        batch_size: int = 8,
        do_sample: bool = False,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> list[list[int]]:
        """New token ids per prompt (end token excluded), at most ``max_new_tokens`` each.

        Greedy by default; ``do_sample=True`` samples at ``temperature`` (see
        :meth:`generate_text`)."""
        prompts = list(prompts)
        _check_common(max_new_tokens, batch_size)
        _check_sampling(do_sample, temperature, seed)
        if any(not isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be strings")
        rows: list[list[int]] = []
        with _seeded_rng(seed if do_sample else None, self.device):
            for idx in _chunks(len(prompts), batch_size):
                texts = [self.chat_prompt(prompts[i]) for i in idx]
                batch = self.tokenizer(
                    texts,
                    padding=True,
                    padding_side="left",
                    add_special_tokens=False,
                    return_tensors="pt",
                )
                inputs = {k: v.to(self.device) for k, v in batch.items()}
                if do_sample:
                    rows += _sample(self.model, self.tokenizer, inputs, max_new_tokens, temperature)
                else:
                    rows += _greedy(self.model, self.tokenizer, inputs, max_new_tokens)
        return rows

    def generate_text(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 64,
        *,
        batch_size: int = 8,
        do_sample: bool = False,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> list[str]:
        """Answer N prompts: decoded new text per prompt (special tokens skipped, stripped).

        Args:
            prompts: N user prompts (each put through the chat template, thinking off).
            max_new_tokens: the most new tokens generated per prompt (>= 1).
            batch_size: prompts per forward batch (greedy results do not depend on it).
            do_sample: False (default): greedy decoding. True: sampling at ``temperature``
                (top-k/top-p from the checkpoint's generation config).
            temperature: sampling temperature (> 0); ignored when greedy.
            seed: with ``do_sample``, torch's RNG is seeded with it for this call (inside
                ``torch.random.fork_rng``: the caller's RNG state is left as it was), so the
                same prompts, ``batch_size`` and ``seed`` on the same machine give the same
                texts. The batches draw one after another from that one seeded stream, so a
                prompt's sample also depends on the prompts batched before it. ``None``: draw
                from the global RNG as it is.

        Raises:
            ValueError: non-string prompts, bad sizes, a bad temperature or seed.
        """
        return _decode(
            self.tokenizer,
            self.generate_ids(
                prompts,
                max_new_tokens,
                batch_size=batch_size,
                do_sample=do_sample,
                temperature=temperature,
                seed=seed,
            ),
        )

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int = 64, *, batch_size: int = 8
    ) -> list[str]:
        """Answer N prompts: decoded new text per prompt (special tokens skipped, stripped)."""
        return self.generate_text(prompts, max_new_tokens, batch_size=batch_size)
