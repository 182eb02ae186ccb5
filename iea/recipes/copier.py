"""``tiny-qwen3-fgca``: a tiny Qwen3 trained to do the FGCA synthesis job (copy phrases into a
tweet-like text).

A tiny random LLM almost never writes a text containing every class phrase, so the FGCA build
quarantines nearly everything. To show the happy path offline, :func:`build_tiny_qwen3_fgca`
takes the ``tiny-qwen3`` architecture and tokenizer (built for the same seed) and fully
fine-tunes it (every weight, no LoRA) on generated pairs:

* prompt: :func:`iea.align.prompts.build_prompt` of 1-4 distinct PASCAL-Context class phrases
  with random region descriptions (empty, short captions, or junk made of random tokens), put
  through the model's chat template (``enable_thinking=False``, generation prompt added);
* target: a tweet-like sentence from templates that contains every phrase verbatim, in the
  listed order (``Lazy Sunday: the dog, the sofa and this potted plant, all in one shot!``),
  followed by ``<|im_end|>``.

The loss is on the target tokens only; AdamW with warm-up and cosine decay; everything is seeded
(the data by ``random.Random``, the weights and batches by torch's RNG forked for the build), so
one machine gives the same model for the same seed. Two things keep it inside its time budget
on two CPU cores: the prompt's constant head (chat header and instruction) is run once per step
and its keys/values shared by the batch, and batches group prompts of similar length.

After training the held-out success rate (greedy texts, through
:meth:`iea.models.vlm.CausalLanguageModel.generate_text`, that contain every phrase of fresh
prompts, as :func:`iea.align.synthesize.locate_all` finds them) is measured and written with the
other numbers to ``train_report.json`` next to the weights; the model is saved with
``save_pretrained`` (safetensors) and loaded back through :func:`iea.models.refs.load_causal_lm`.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from iea.align.prompts import FGCA_PROMPT_VERSION, build_prompt
from iea.data.pascal_classes import PASCAL_CONTEXT_59, class_phrase

COPIER_PHRASES: tuple[str, ...] = tuple(class_phrase(n) for n in PASCAL_CONTEXT_59)
"""The phrases the copier is trained on (every PASCAL-Context-59 class phrase)."""

_CAPTION_WORDS = (
    "a", "the", "red", "green", "blue", "grey", "small", "large", "bright", "dark", "blurry",
    "round", "shape", "object", "region", "corner", "left", "right", "top", "bottom", "on", "in",
    "near", "background", "textured", "noisy", "outline", "photo", "picture", "with",
)  # fmt: skip


@dataclass(frozen=True)
class CopierRecipe:
    """Training settings of the copier (the defaults are what ``tiny-qwen3-fgca`` uses)."""

    steps: int = 1600
    batch_size: int = 16
    lr: float = 3e-3
    warmup: int = 30
    weight_decay: float = 0.0
    phrase_counts: tuple[int, ...] = (1, 2, 3, 4)
    phrase_count_weights: tuple[float, ...] = (1.0, 2.0, 3.0, 3.0)
    same_letter: float = 0.5
    ema: float = 0.0
    pseudo_words: float = 0.0
    empty_description: float = 0.2
    # Junk as long as a random tiny VLM's answers (cut to 80 characters by the prompt), so the
    # demo's real descriptions are in distribution: 90% of the demo images vs 37% with <= 10.
    junk_description: float = 0.5
    max_junk_tokens: int = 40
    n_heldout: int = 64
    max_new_tokens: int = 64


RECIPE = CopierRecipe()


@dataclass(frozen=True)
class CopierExample:
    """One generated pair: the phrases, their descriptions, the :func:`build_prompt` text
    (before the chat template) and the target text (before ``<|im_end|>``)."""

    phrases: list[str]
    descriptions: list[str]
    prompt: str
    target: str


def target_text(rng: random.Random, phrases: list[str]) -> str:
    """A tweet of the demo world containing every phrase verbatim, in the order given.

    Each phrase sits in a clause of the world's tweets (:mod:`iea.data.synthetic`: polarity
    cues and polarity-free clauses), often with a modifier ("the old dog"), joined as tweets
    are and tokenised like them (punctuation is its own word), so a phrase can be at any word
    position: an aligner trained on these texts must find the phrase, not count to it.
    """
    from iea.data.synthetic import CLOSERS, CUE_CLAUSES, JOINERS, MODIFIERS, OPENERS, PLAIN_CLAUSES

    clauses = [*PLAIN_CLAUSES, *(c for cs in CUE_CLAUSES.values() for c in cs)]
    words = rng.choice(OPENERS).split()
    for k, phrase in enumerate(phrases):
        if k:
            words.append(rng.choice(JOINERS))
        term = f"{rng.choice(MODIFIERS)} {phrase}".strip()
        words += rng.choice(clauses).replace("{}", term).split()
    words += rng.choice(CLOSERS).split()
    return " ".join(words)


def random_description(
    rng: random.Random, junk_ids: list[int], tokenizer: Any, recipe: CopierRecipe = RECIPE
) -> str:
    """An empty, short caption-like or junk (random tokens, like a random VLM's) description."""
    r = rng.random()
    if r < recipe.empty_description:
        return ""
    if r < recipe.empty_description + recipe.junk_description:
        ids = [rng.choice(junk_ids) for _ in range(rng.randint(1, recipe.max_junk_tokens))]
        return tokenizer.decode(ids, skip_special_tokens=True)
    return " ".join(rng.choice(_CAPTION_WORDS) for _ in range(rng.randint(1, 5)))


def _first_letter_groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for p in COPIER_PHRASES:
        groups.setdefault(p[0], []).append(p)
    return {k: v for k, v in groups.items() if len(v) > 1}


_CONSONANTS = "bcdfghklmnprstvwz"
_VOWELS = "aeiou"


def _pseudo_phrase(rng: random.Random) -> str:
    """A made-up phrase (one or two pronounceable pseudo-words), so the copier cannot get by
    on spelling the 59 class phrases from memory and must learn to copy."""

    def word() -> str:
        n = rng.randint(2, 4)
        return "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(n))[
            : rng.randint(3, 2 * n)
        ]

    return word() if rng.random() < 0.8 else f"{word()} {word()}"


def _draw_phrases(rng: random.Random, recipe: CopierRecipe, uniform: bool) -> list[str]:
    """1-4 distinct phrases; in training, often two sharing a first letter (``train``,
    ``tree``: the same first token, the copier's hardest case)."""
    if uniform:
        return rng.sample(COPIER_PHRASES, rng.choice(recipe.phrase_counts))
    k = rng.choices(recipe.phrase_counts, recipe.phrase_count_weights)[0]
    if rng.random() < recipe.pseudo_words:
        out: list[str] = []
        while len(out) < k:
            w = _pseudo_phrase(rng)
            if w.lower() not in {o.lower() for o in out}:
                out.append(w)
        return out
    if k < 2 or rng.random() >= recipe.same_letter:
        return rng.sample(COPIER_PHRASES, k)
    groups = _first_letter_groups()
    chosen = rng.sample(groups[rng.choice(sorted(groups))], 2)
    rest = [p for p in COPIER_PHRASES if p not in chosen]
    return chosen + rng.sample(rest, k - 2)


def make_examples(
    n: int, seed: int, tokenizer: Any, recipe: CopierRecipe = RECIPE, *, heldout: bool = False
) -> list[CopierExample]:
    """``n`` generated (prompt, target) pairs, deterministic by ``seed``.

    Phrases are listed (and so written in the target) in :func:`build_prompt`'s order
    (alphabetical). ``heldout``: 1-4 phrases uniformly, no oversampling of hard cases.
    """
    rng = random.Random(seed)
    special = set(tokenizer.all_special_ids) | set(
        tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    )
    junk_ids = [i for i in range(len(tokenizer)) if i not in special]
    out = []
    for _ in range(n):
        drawn = _draw_phrases(rng, recipe, heldout)
        described = {p: random_description(rng, junk_ids, tokenizer, recipe) for p in drawn}
        prompt = build_prompt(drawn, [described[p] for p in drawn])
        phrases = sorted(drawn, key=str.lower)  # build_prompt's order
        out.append(
            CopierExample(
                phrases, [described[p] for p in phrases], prompt, target_text(rng, phrases)
            )
        )
    return out


def _chat_parts(tokenizer: Any) -> tuple[str, str]:
    """The chat template around one user message: (text before it, text after it)."""
    mark = "\x00FGCA\x00"
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": mark}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )
    head, tail = chat.split(mark)
    return head, tail


def encode_examples(
    tokenizer: Any, examples: list[CopierExample]
) -> tuple[list[int], list[tuple[list[int], int]]]:
    """Token ids of chat prompt + target + ``<|im_end|>`` per example, split into the prefix
    shared by every example and, per example, (the rest, how many of the rest are prompt)."""
    head, tail = _chat_parts(tokenizer)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompts = tokenizer([head + ex.prompt + tail for ex in examples], add_special_tokens=False)[
        "input_ids"
    ]
    targets = tokenizer([ex.target for ex in examples], add_special_tokens=False)["input_ids"]
    shared = len(prompts[0])
    for p in prompts[1:]:
        k = 0
        while k < min(shared, len(p)) and p[k] == prompts[0][k]:
            k += 1
        shared = k
    shared = max(0, min(shared, min(len(p) for p in prompts) - 1))
    prefix = list(prompts[0][:shared])
    rows = [
        (p[shared:] + t + [end], len(p) - shared) for p, t in zip(prompts, targets, strict=True)
    ]
    return prefix, rows


def _batch(rows: list[tuple[list[int], int]], pad: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 but on targets)."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def _loss(model: Any, prefix: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean target-token loss of a right-padded batch whose rows all start with ``prefix``
    (shape ``(1, P)``).

    The prefix runs once and its keys/values are shared (expanded) by every row; no attention
    mask is needed (causal attention, padding only after each row's last token, never a label);
    the vocabulary projection runs on the target positions only.
    """
    from transformers import DynamicCache

    n = batch["input_ids"].shape[0]
    cache = DynamicCache(config=model.config)
    if prefix.shape[1]:
        model.model(input_ids=prefix, past_key_values=cache, use_cache=True)
        for layer in cache.layers:
            layer.keys = layer.keys.expand(n, -1, -1, -1)
            layer.values = layer.values.expand(n, -1, -1, -1)
    hidden = model.model(
        input_ids=batch["input_ids"], past_key_values=cache, use_cache=True
    ).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    logits = model.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), labels[keep])


def _length_batches(
    rows: list[tuple[list[int], int]], batch_size: int, generator: torch.Generator
) -> list[list[int]]:
    """Row indices grouped into batches of similar length (less padding), in random order."""
    shuffled = torch.randperm(len(rows), generator=generator).tolist()
    order = sorted(shuffled, key=lambda i: len(rows[i][0]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]


def success_rate(texts: list[str], examples: list[CopierExample]) -> float:
    """Share of texts that contain every phrase of their example (as
    :func:`iea.align.synthesize.locate_all` finds them: case-insensitive, whole words)."""
    from iea.align.synthesize import locate_all

    ok = sum(
        all(s is not None for s in locate_all(t, ex.phrases).values())
        for t, ex in zip(texts, examples, strict=True)
    )
    return ok / max(1, len(examples))


def evaluate_copier(
    model: Any, tokenizer: Any, examples: list[CopierExample], max_new_tokens: int
) -> tuple[float, list[str]]:
    """(held-out success rate, greedy texts) of ``model`` on ``examples``."""
    from iea.models.vlm import CausalLanguageModel

    was_training = model.training
    model.eval()
    llm = CausalLanguageModel(model, tokenizer)
    texts = llm.generate_text(
        [ex.prompt for ex in examples], max_new_tokens, batch_size=max(1, len(examples))
    )
    if was_training:
        model.train()
    return success_rate(texts, examples), texts


def train_copier(
    model: Any,
    tokenizer: Any,
    seed: int,
    recipe: CopierRecipe = RECIPE,
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Fully fine-tune ``model`` in place on generated pairs; returns the training report.

    Uses torch's global RNG for the batch order: seed it (the caller forks it) for a
    deterministic run. ``on_step(step, loss)`` is called after every step (for experiments).
    """
    t0 = time.perf_counter()
    n_train = recipe.steps * recipe.batch_size
    examples = make_examples(n_train, seed * 7919 + 1, tokenizer, recipe)
    prefix_ids, rows = encode_examples(tokenizer, examples)
    prefix = torch.tensor([prefix_ids], dtype=torch.long)
    pad = tokenizer.pad_token_id
    attn = model.config._attn_implementation
    model.set_attn_implementation("eager")  # faster than sdpa without a mask on CPU
    model.train()
    opt = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, betas=(0.9, 0.98)
    )

    def lr_at(step: int) -> float:
        if step < recipe.warmup:
            return (step + 1) / recipe.warmup
        frac = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
        return max(0.02, 0.5 * (1 + math.cos(math.pi * frac)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    g = torch.Generator().manual_seed(int(torch.randint(2**62, (1,)).item()))
    batches: list[list[int]] = []
    losses: list[float] = []
    params = [q for q in model.parameters() if q.requires_grad]
    ema = [q.detach().clone() for q in params] if recipe.ema else None
    for step in range(recipe.steps):
        if not batches:
            batches = _length_batches(rows, recipe.batch_size, g)
        loss = _loss(model, prefix, _batch([rows[i] for i in batches.pop()], pad))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(ema, [q.detach() for q in params], 1.0 - recipe.ema)
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, losses[-1])
    if ema is not None:
        with torch.no_grad():
            for q, e in zip(params, ema, strict=True):
                q.copy_(e)
    model.eval()
    model.set_attn_implementation(attn)
    train_s = time.perf_counter() - t0
    heldout = make_examples(recipe.n_heldout, seed * 7919 + 2, tokenizer, recipe, heldout=True)
    rate, texts = evaluate_copier(model, tokenizer, heldout, recipe.max_new_tokens)
    tail = losses[-50:]
    return {
        "prompt_version": FGCA_PROMPT_VERSION,
        "seed": seed,
        "recipe": asdict(recipe),
        "steps": recipe.steps,
        "train_examples": n_train,
        "shared_prefix_tokens": len(prefix_ids),
        "first_loss": round(losses[0], 4),
        "final_loss": round(sum(tail) / len(tail), 4),
        "heldout_items": len(heldout),
        "heldout_success": round(rate, 4),
        "train_seconds": round(train_s, 2),
        "seconds": round(time.perf_counter() - t0, 2),
        "torch_threads": torch.get_num_threads(),
        "heldout_examples": [
            {"phrases": ex.phrases, "text": t} for ex, t in zip(heldout[:3], texts[:3], strict=True)
        ],
    }


def build_tiny_qwen3_fgca(path: str | Path, seed: int) -> Path:
    """Build ``tiny-qwen3`` for ``seed`` into ``path``, fine-tune it as the FGCA copier, save
    it over (safetensors) and write ``train_report.json``; returns ``path``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from iea.models.tiny import build_tiny_qwen3

    path = Path(path)
    t0 = time.perf_counter()
    build_tiny_qwen3(path, seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        report = train_copier(model, tokenizer, seed)
    model.save_pretrained(path)
    report["build_seconds"] = round(time.perf_counter() - t0, 2)
    (path / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return path
