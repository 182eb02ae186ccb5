"""Tiny, randomly initialised Qwen3-VL and Qwen3 models, built offline and deterministic by seed.

They have the real architectures (``Qwen3VLForConditionalGeneration``, ``Qwen3ForCausalLM``),
a byte-level BPE tokenizer trained here on a small English corpus (templated tweets, names and
instruction phrases) that carries the Qwen special tokens, a Qwen-style chat template and, for
the VLM, the Qwen3-VL processor. They are written with ``save_pretrained`` (safetensors) so that
:mod:`iea.models.refs` loads them through the same path as a downloaded model.

Same seed -> byte-identical files. Bump :data:`TINY_VERSION` whenever anything here changes what
is built, so cached builds of the old recipe are not reused.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from collections.abc import Iterator

    from transformers import PreTrainedTokenizerFast

TINY_VERSION = 3
"""Part of every tiny cache directory name: bump it when the recipe below changes."""

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
"""The Qwen special tokens, ids 0..6 in the tiny tokenizer (the real Qwen vocab has others)."""
THINK_TOKENS: tuple[str, ...] = ("<think>", "</think>")
"""Added (not special) tokens, as in Qwen3: ``skip_special_tokens`` keeps them."""
PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"

TOKENIZER_VOCAB = 1536
"""Target vocabulary size of the BPE trainer (the trained vocabulary may come out smaller)."""

# Images: patch 16 x merge 2 -> one visual token per 32 x 32 pixels after resizing.
# longest_edge = 224*224 px: a 320x240 image is resized to 256x192 -> 8x6 = 48 visual tokens.
IMAGE_MIN_PIXELS = 64 * 64
IMAGE_MAX_PIXELS = 224 * 224

# Text: hidden 128, 2 layers, 4 query heads / 2 KV heads of head_dim 32, tied embeddings.
# initializer_range 0.1 (transformers' default is 0.02): with the tied embeddings frozen, as in
# LoRA on q/k/v/o, 0.02 caps every logit at about |h| * |e| = 11 * 0.23 = 2.5, so the loss of a
# LoRA-trained tiny model plateaus near 4.5-5 nats; at 0.1 it falls below 0.6 in 300 steps.
TEXT_SIZES: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": True,
    "initializer_range": 0.1,
}
MROPE_SECTION = [6, 5, 5]
"""Qwen3-VL's multimodal RoPE split (t, h, w): must sum to head_dim / 2 = 16."""
VISION_SIZES: dict[str, Any] = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "out_hidden_size": TEXT_SIZES["hidden_size"],
    "num_position_embeddings": 256,
    "deepstack_visual_indexes": [0],
}

# Phrases the later stages are expected to put in prompts and targets (interpretations of image
# regions, aspect-sentiment pairs), so the tiny tokenizer has merges for them.
_PROMPT_PHRASES = [
    "You are a helpful assistant.",
    "Describe the image in one sentence.",
    "Describe this region of the image.",
    "What does the image show?",
    "The image shows a red circle, a green rectangle and a grey-blue triangle.",
    "The region shows a person, a place, a team, a logo, a crowd or a building.",
    "A photo of a man, a woman, a stadium, a city street, a stage, a screen, a sign.",
    "Interpretation: the picture is bright, dark, blurry, clear, small, large, left, right.",
    "Tweet: the text of the tweet. Image: the picture attached to the tweet.",
    "List the aspects mentioned in the tweet and the sentiment towards each aspect.",
    "Extract aspect terms and their sentiment polarity: positive, negative or neutral.",
    "Answer with one pair per line: aspect | sentiment.",
    'Output JSON: [{"aspect": "Taylor Swift", "sentiment": "positive"}]',
    'Output: {"aspects": [], "region": 0, "polarity": "NEU", "label": "POS", "score": 0.5}',
    "Which region matches the aspect? Region 1, region 2, region 3, region 4, background.",
    "Does the image region match the entity? Yes or no.",
    "Sentiment: POS NEU NEG positive neutral negative none unknown other.",
    "Aspect, entity, target, opinion, reason, because, and, or, not, the, a, an, of, in, on.",
    "Generate a caption for the image. Caption: a colourful shape on a textured background.",
    "Rewrite the tweet. Explain the alignment between the text and the image.",
    "This image shows one region of a social media photo. Describe what the region shows.",
    "Answer exactly in this form:\nDescription: <one sentence>\nSentiment: <positive, neutral"
    " or negative>\nScore: <a number from -1 (very negative) to 1 (very positive)>",
    "Description: a green ellipse with a black outline.\nSentiment: positive\nScore: 0.8",
    "Description: a red triangle on a noisy grey background.\nSentiment: negative\nScore: -0.6",
]
_CHARACTERS = (
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 "
    "! \" # $ % & ' ( ) * + , - . / : ; < = > ? @ [ \\ ] ^ _ ` { | } ~ \n\t"
)


def chat_template(*, thinking_switch: bool) -> str:
    """A Qwen-style Jinja chat template.

    Each message renders as ``<|im_start|>{role}\\n{content}<|im_end|>\\n``. ``content`` is a
    string or a list of parts: ``{"type": "image"}`` renders as
    ``<|vision_start|><|image_pad|><|vision_end|>`` (the processor expands ``<|image_pad|>`` to
    one token per visual token), ``{"type": "video"}`` likewise with ``<|video_pad|>``, and
    ``{"type": "text", "text": ...}`` as its text. ``add_generation_prompt`` appends
    ``<|im_start|>assistant\\n``.

    Args:
        thinking_switch: as in Qwen3's template, ``enable_thinking=False`` then appends an empty
            ``<think>\\n\\n</think>\\n\\n`` block to the generation prompt. Without it (the VLM,
            like Qwen3-VL-Instruct) ``enable_thinking`` is accepted and ignored.
    """
    parts = [
        "{%- for message in messages -%}",
        "{{- '<|im_start|>' + message['role'] + '\\n' -}}",
        "{%- if message['content'] is string -%}",
        "{{- message['content'] -}}",
        "{%- else -%}",
        "{%- for part in message['content'] -%}",
        "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}",
        "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}",
        "{%- elif part['type'] == 'video' or 'video' in part -%}",
        "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}",
        "{%- elif 'text' in part -%}",
        "{{- part['text'] -}}",
        "{%- endif -%}",
        "{%- endfor -%}",
        "{%- endif -%}",
        "{{- '<|im_end|>\\n' -}}",
        "{%- endfor -%}",
        "{%- if add_generation_prompt -%}",
        "{{- '<|im_start|>assistant\\n' -}}",
    ]
    if thinking_switch:
        parts += [
            "{%- if enable_thinking is defined and enable_thinking is false -%}",
            "{{- '<think>\\n\\n</think>\\n\\n' -}}",
            "{%- endif -%}",
        ]
    parts.append("{%- endif -%}")
    return "".join(parts)


def tokenizer_corpus(n_tweets: int = 400, seed: int = 0) -> list[str]:
    """The tokenizer's training texts: tweets and phrases of the controlled world
    (:mod:`iea.data.synthetic`), its region descriptions, prompt phrases and characters."""
    from iea.data.synthetic import corpus_texts
    from iea.data.world import POLARITIES, WORLD_CLASSES, describe

    corpus = corpus_texts(n_tweets, seed)
    corpus += [describe(c, p) for c in WORLD_CLASSES for p in POLARITIES] * 4
    corpus += _PROMPT_PHRASES
    corpus.append(_CHARACTERS)
    return corpus


def train_tokenizer(
    *, template: str, vocab_size: int = TOKENIZER_VOCAB, corpus: list[str] | None = None
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (nothing is ever unknown) and wrap it for transformers.

    Ids 0..6 are :data:`SPECIAL_TOKENS`, then the 256 byte symbols and the merges; the
    :data:`THINK_TOKENS` come last. ``eos_token`` is ``<|im_end|>``, ``pad_token``
    ``<|endoftext|>``, there is no BOS token. Deterministic: same corpus -> same files.

    Args:
        template: the chat template stored with the tokenizer.
        vocab_size: the BPE trainer's target vocabulary size (>= 300).
        corpus: training texts (default :func:`tokenizer_corpus`).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise ValueError(f"vocab_size must be >= 300 (bytes + special tokens), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus if corpus is not None else tokenizer_corpus(), trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in (EOS_TOKEN, PAD_TOKEN)],
        chat_template=template,
        clean_up_tokenization_spaces=False,
        model_max_length=TEXT_SIZES["max_position_embeddings"],
    )


def token_ids(tokenizer: Any) -> dict[str, int]:
    """``{special token: id}`` for the Qwen special tokens and the think tokens."""
    return {t: int(tokenizer.convert_tokens_to_ids(t)) for t in SPECIAL_TOKENS + THINK_TOKENS}


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's global RNG for the block and restore the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _generation_config(ids: dict[str, int]) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(
        eos_token_id=ids[EOS_TOKEN], pad_token_id=ids[PAD_TOKEN], do_sample=False
    )


def build_tiny_qwen3_vl(path: str | Path, seed: int) -> Path:
    """Build a tiny random Qwen3-VL (model, tokenizer, processor) into ``path``; returns it.

    About 0.57 M parameters (text hidden 128 x 2 layers, vision hidden 32 x 2 blocks, patch 16,
    merge 2). The image processor resizes to at most 224*224 pixels: a 320x240 image becomes
    256x192 px = 12x16 patches = 48 visual tokens.
    """
    from transformers import (
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    path = Path(path)
    template = chat_template(thinking_switch=False)
    tokenizer = train_tokenizer(template=template)
    ids = token_ids(tokenizer)
    rope = {
        "rope_type": "default",
        "rope_theta": 1_000_000.0,
        "mrope_section": list(MROPE_SECTION),
        "mrope_interleaved": True,
    }
    config = Qwen3VLConfig(
        text_config={
            **TEXT_SIZES,
            "vocab_size": len(tokenizer),
            "rope_parameters": rope,
            "pad_token_id": ids[PAD_TOKEN],
        },
        vision_config=dict(VISION_SIZES),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    with _seeded(seed):
        model = Qwen3VLForConditionalGeneration(config)
    model.generation_config = _generation_config(ids)
    vision = {
        "patch_size": VISION_SIZES["patch_size"],
        "merge_size": VISION_SIZES["spatial_merge_size"],
        "temporal_patch_size": VISION_SIZES["temporal_patch_size"],
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": IMAGE_MIN_PIXELS, "longest_edge": IMAGE_MAX_PIXELS}, **vision
    )
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": IMAGE_MIN_PIXELS, "longest_edge": 4 * IMAGE_MAX_PIXELS}, **vision
    )
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=template,
    )
    _save(path, model, processor)
    return path


def build_tiny_qwen3(path: str | Path, seed: int) -> Path:
    """Build a tiny random Qwen3 causal LM (model, tokenizer) into ``path``; returns it.

    About 0.43 M parameters (hidden 128 x 2 layers, tied embeddings). Its chat template has
    Qwen3's ``enable_thinking`` switch.
    """
    from transformers import Qwen3Config, Qwen3ForCausalLM

    path = Path(path)
    tokenizer = train_tokenizer(template=chat_template(thinking_switch=True))
    ids = token_ids(tokenizer)
    config = Qwen3Config(
        **TEXT_SIZES,
        vocab_size=len(tokenizer),
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        pad_token_id=ids[PAD_TOKEN],
        eos_token_id=ids[EOS_TOKEN],
        bos_token_id=None,
    )
    with _seeded(seed):
        model = Qwen3ForCausalLM(config)
    model.generation_config = _generation_config(ids)
    _save(path, model, tokenizer)
    return path


def _save(path: Path, model: Any, processor: Any) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)  # transformers 5 always writes safetensors (model.safetensors)
    processor.save_pretrained(path)


@dataclass(frozen=True)
class TinySpec:
    """How a ``tiny-…`` reference is built.

    ``kind``: what it is (``vlm``, ``causal_lm`` or ``sam``); ``builder``: ``"module:function"``
    of a ``builder(path, seed) -> path`` (named, not imported: the trained recipes in
    :mod:`iea.recipes` use the models package, so it cannot import them); ``sources``: the
    modules whose code (docstrings aside) decides what is built (hashed into the cache folder
    name, so a changed recipe is rebuilt without a hand-bumped version); ``minutes``: a rough
    build time on two CPU cores, for messages: ``(fastest, slowest)`` over the machine kinds the
    recipes were built on (an AVX-512 machine alone; an AVX2-only one beside the test suite).
    """

    kind: str
    builder: str
    sources: tuple[str, ...] = ()
    minutes: tuple[float, float] | None = None


TINY_BUILDERS: dict[str, TinySpec] = {
    "tiny-qwen3-vl": TinySpec("vlm", "iea.models.tiny:build_tiny_qwen3_vl"),
    "tiny-qwen3": TinySpec("causal_lm", "iea.models.tiny:build_tiny_qwen3"),
    "tiny-qwen3-fgca": TinySpec(
        "causal_lm",
        "iea.recipes.copier:build_tiny_qwen3_fgca",
        ("iea.recipes.copier", "iea.align.prompts", "iea.data.synthetic", "iea.models.tiny"),
        (2.5, 6),
    ),
    "tiny-qwen3-vl-interp": TinySpec(
        "vlm",
        "iea.recipes.interpreter:build",
        (
            "iea.recipes.interpreter",
            "iea.recipes.sam",
            "iea.data.world",
            "iea.data.regions",
            "iea.data.synthetic",
            "iea.data.pascal_context",
            "iea.vision.prompts",
            "iea.models.tiny",
            "iea.models.finetune",
        ),
        (4, 12),
    ),
    "tiny-sam-world": TinySpec(
        "sam",
        "iea.recipes.sam:build",
        ("iea.recipes.sam", "iea.data.world", "iea.models.sam"),
        (2.5, 7),
    ),
}
"""``tiny-…`` reference -> its :class:`TinySpec`. ``tiny-qwen3-fgca`` is ``tiny-qwen3``
trained to write FGCA texts (:mod:`iea.recipes.copier`); ``tiny-qwen3-vl-interp`` interprets
regions of the controlled world and ``tiny-sam-world`` segments it (:mod:`iea.recipes`)."""
