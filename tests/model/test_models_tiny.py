"""Tiny Qwen3-VL / Qwen3 models: built offline, deterministic, loaded like real ones, generating."""

from __future__ import annotations

import math
import random

import pytest
import torch

from iea.data.synthetic import draw_image, make_tweet
from iea.models import refs
from iea.models.refs import LOAD_COUNTS, ensure_tiny, load_causal_lm, load_vlm, tiny_path
from iea.models.tiny import (
    SPECIAL_TOKENS,
    THINK_TOKENS,
    build_tiny_qwen3,
    build_tiny_qwen3_vl,
)
from iea.models.vlm import CausalLanguageModel, VisionLanguageModel

pytestmark = pytest.mark.model

IM_END = "<|im_end|>"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh tiny-model cache with both tiny models built (seed 0)."""
    root = tmp_path_factory.mktemp("model-cache")
    ensure_tiny("tiny-qwen3-vl", cache=root)
    ensure_tiny("tiny-qwen3", cache=root)
    return root


@pytest.fixture(scope="module")
def vlm(cache):
    return VisionLanguageModel.from_ref("tiny-qwen3-vl", cache=cache, device="cpu")


@pytest.fixture(scope="module")
def llm(cache):
    return CausalLanguageModel.from_ref("tiny-qwen3", cache=cache, device="cpu")


def _scramble(model: torch.nn.Module, seed: int = 0) -> None:
    """Re-draw every weight matrix with std 1/sqrt(fan_in).

    A fresh tiny model (init std 0.02) mostly repeats the last prompt token, so every row of a
    batch generates the same thing; with these weights the outputs depend on the input and a
    padding bug shows up as different tokens.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))


def _items(n: int = 3):
    """n (image, prompt) items: images of different sizes (W x H px), prompts of different
    lengths, so a batch needs padding both in text and in visual tokens."""
    rng = random.Random(3)
    tweets = [make_tweet(rng, i) for i in range(n)]
    sizes = [(320, 240), (200, 300), (64, 64), (480, 160)]
    images = [draw_image(t, sizes[i % len(sizes)], i) for i, t in enumerate(tweets)]
    prompts = [
        f"List the aspects and their sentiment. Tweet: {tweets[i].text}"
        if i % 3 == 0
        else "What is in the image?"
        if i % 3 == 1
        else f"Describe the region. {tweets[i].text} and a few more words to make it longer"
        for i in range(n)
    ]
    return images, prompts


def test_same_seed_same_files_other_seed_other_weights(tmp_path):
    a = build_tiny_qwen3_vl(tmp_path / "a", seed=0)
    b = build_tiny_qwen3_vl(tmp_path / "b", seed=0)
    c = build_tiny_qwen3_vl(tmp_path / "c", seed=1)
    files = sorted(p.name for p in a.iterdir())
    assert "model.safetensors" in files and "tokenizer.json" in files
    assert files == sorted(p.name for p in b.iterdir())
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()
    d = build_tiny_qwen3(tmp_path / "d", seed=0)
    e = build_tiny_qwen3(tmp_path / "e", seed=0)
    assert (d / "model.safetensors").read_bytes() == (e / "model.safetensors").read_bytes()


def test_building_does_not_touch_the_global_rng(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_qwen3(tmp_path / "m", seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_cached_build_and_load_counts(cache):
    path = tiny_path("tiny-qwen3-vl", cache=cache)
    assert (path / "model.safetensors").is_file()
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]  # no temp dirs left
    builds = refs.BUILD_COUNTS.copy()
    loads = LOAD_COUNTS["tiny-qwen3-vl"]
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    load_vlm("tiny-qwen3-vl", cache=cache, device="cpu")
    load_vlm("tiny-qwen3-vl", cache=cache, device="cpu")
    assert LOAD_COUNTS["tiny-qwen3-vl"] == loads + 2
    assert builds == refs.BUILD_COUNTS  # already built: loaded, not rebuilt
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime


def test_env_cache_and_build_once(tmp_path, monkeypatch):
    monkeypatch.setenv("IEA_MODEL_CACHE", str(tmp_path))
    before = refs.BUILD_COUNTS["tiny-qwen3"]
    load_causal_lm("tiny-qwen3", device="cpu", seed=5)
    load_causal_lm("tiny-qwen3", device="cpu", seed=5)
    assert refs.BUILD_COUNTS["tiny-qwen3"] == before + 1
    assert tiny_path("tiny-qwen3", seed=5).is_dir()
    assert tiny_path("tiny-qwen3", seed=5).parent == tmp_path


def test_loaded_by_tiny_name_and_by_local_directory(cache, vlm):
    path = tiny_path("tiny-qwen3-vl", cache=cache)
    assert refs.kind_of(str(path)) == "local"
    model, processor = load_vlm(str(path), device="cpu", dtype="float32")
    assert LOAD_COUNTS[str(path)] >= 1
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen3VLProcessor"
    assert not model.training and model.dtype == torch.float32
    assert model.device.type == "cpu"
    theirs, ours = model.state_dict(), vlm.model.state_dict()
    assert theirs.keys() == ours.keys()
    assert all(torch.equal(theirs[k], ours[k]) for k in ours)
    bf16, _ = load_vlm(str(path), device="cpu", dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16


def test_sizes_and_visual_tokens(vlm, llm):
    n_vlm = sum(p.numel() for p in vlm.model.parameters())
    n_llm = sum(p.numel() for p in llm.model.parameters())
    assert 100_000 < n_vlm < 2_000_000
    assert 100_000 < n_llm < 2_000_000
    image = draw_image(make_tweet(random.Random(0), 0), (320, 240), 0)
    batch = vlm.processor(
        text=[vlm.chat_prompt("hi", image=True)], images=[image], return_tensors="pt"
    )
    merge = vlm.processor.image_processor.merge_size
    assert batch["image_grid_thw"].tolist() == [[1, 12, 16]]  # 192 x 256 px in 16 px patches
    n_visual = int(batch["image_grid_thw"].prod()) // merge**2
    assert n_visual == 48
    assert int((batch["input_ids"] == vlm.model.config.image_token_id).sum()) == n_visual


def test_tokenizer_special_tokens_and_round_trip(vlm, llm):
    tok = vlm.tokenizer
    cfg = vlm.model.config
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS + THINK_TOKENS}
    assert len(set(ids.values())) == len(ids)
    assert cfg.image_token_id == ids["<|image_pad|>"]
    assert cfg.video_token_id == ids["<|video_pad|>"]
    assert cfg.vision_start_token_id == ids["<|vision_start|>"]
    assert cfg.vision_end_token_id == ids["<|vision_end|>"]
    assert tok.eos_token == IM_END and tok.pad_token == "<|endoftext|>"
    assert vlm.model.generation_config.eos_token_id == ids[IM_END]
    assert vlm.model.generation_config.pad_token_id == ids["<|endoftext|>"]
    assert llm.model.generation_config.eos_token_id == ids[IM_END]
    assert llm.model.config.vocab_size == len(llm.tokenizer) == len(tok)
    assert 800 <= len(tok) <= 2048
    assert tok.unk_token is None  # byte-level BPE: every string encodes
    for special in SPECIAL_TOKENS + THINK_TOKENS:  # one token each, never split
        assert tok(f"a{special}b", add_special_tokens=False)["input_ids"][1] == ids[special]
    for text in [
        "RT @ fan : Taylor Swift is everything !",
        "So proud of # WorldCup tonight , amazing win",
        'Output JSON: [{"aspect": "Paris", "sentiment": "negative"}]\n\tcafé 😀 東京',
    ]:
        enc = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(enc) == text
    tweet = make_tweet(random.Random(1), 0).text
    assert len(tok(tweet)["input_ids"]) <= len(tweet.split()) + 4  # merges cover tweet words


def test_chat_prompts(vlm, llm):
    assert vlm.chat_prompt("Why?", image=True) == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Why?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert vlm.chat_prompt("Why?", image=False) == (
        "<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert llm.chat_prompt("Why?") == (
        "<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_generate_returns_strings_within_max_new_tokens(vlm, llm):
    images, prompts = _items(3)
    out = vlm.generate(images, prompts, max_new_tokens=5)
    assert len(out) == 3 and all(isinstance(s, str) for s in out)
    ids = vlm.generate_ids(images, prompts, max_new_tokens=5)
    assert all(len(row) <= 5 for row in ids)
    text = vlm.generate_text(prompts, max_new_tokens=4)
    assert len(text) == 3 and all(isinstance(s, str) for s in text)
    answers = llm.generate(prompts[:2], max_new_tokens=4)
    assert len(answers) == 2 and all(isinstance(s, str) for s in answers)
    assert vlm.generate([], [], 4) == [] and llm.generate([], 4) == []


def test_generate_rejects_bad_inputs(vlm):
    images, prompts = _items(2)
    with pytest.raises(ValueError, match="one image per prompt"):
        vlm.generate(images, prompts[:1], 4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        vlm.generate(images, prompts, 0)
    with pytest.raises(ValueError, match="PIL"):
        vlm.generate(["x.jpg", "y.jpg"], prompts, 4)
    with pytest.raises(ValueError, match="batch_size"):
        vlm.generate_text(prompts, 4, batch_size=0)


def test_generation_stops_at_im_end(cache):
    model = VisionLanguageModel.from_ref("tiny-qwen3-vl", cache=cache, device="cpu")
    end = model.tokenizer.convert_tokens_to_ids(IM_END)
    calls = []

    def force_end_from_third_step(module, args, logits):
        calls.append(1)
        if len(calls) >= 3:
            logits = logits.clone()
            logits[..., end] += 1e4
        return logits

    handle = model.model.lm_head.register_forward_hook(force_end_from_third_step)
    try:
        images, prompts = _items(2)
        ids = model.generate_ids(images, prompts, max_new_tokens=20, batch_size=2)
    finally:
        handle.remove()
    assert [len(row) for row in ids] == [2, 2]  # two tokens, then <|im_end|> (not returned)
    assert len(calls) == 3  # stopped at the end token, did not run to max_new_tokens


def test_batch_equals_one_by_one_vlm(cache):
    """Left padding: a batch of different-size images and prompts gives each item the same
    greedy tokens as running it alone, and the same next-token logits (fp32, atol 1e-4)."""
    model = VisionLanguageModel.from_ref("tiny-qwen3-vl", cache=cache, device="cpu")
    _scramble(model.model)
    images, prompts = _items(3)
    batched = model.generate_ids(images, prompts, max_new_tokens=12, batch_size=3)
    alone = [
        model.generate_ids([im], [p], max_new_tokens=12)[0]
        for im, p in zip(images, prompts, strict=True)
    ]
    assert batched == alone
    assert len({tuple(r) for r in batched}) > 1  # the items really differ
    assert model.generate(images, prompts, 12, batch_size=2) == model.generate(images, prompts, 12)

    texts = [model.chat_prompt(p, image=True) for p in prompts]
    inputs = model._inputs(texts, images)
    assert (inputs["attention_mask"][:, -1] == 1).all()  # left padded
    assert (inputs["attention_mask"][:, 0] == 0).any()
    with torch.inference_mode():
        last = model.model(**inputs).logits[:, -1]
        for i in range(3):
            one = model.model(**model._inputs(texts[i : i + 1], images[i : i + 1])).logits[0, -1]
            torch.testing.assert_close(last[i], one, atol=1e-4, rtol=1e-4)


def test_batch_equals_one_by_one_text(cache):
    llm = CausalLanguageModel.from_ref("tiny-qwen3", cache=cache, device="cpu")
    _scramble(llm.model, seed=1)
    _, prompts = _items(3)
    batched = llm.generate_ids(prompts, max_new_tokens=10)
    assert batched == [llm.generate_ids([p], max_new_tokens=10)[0] for p in prompts]
    assert len({tuple(r) for r in batched}) > 1
    vlm = VisionLanguageModel.from_ref("tiny-qwen3-vl", cache=cache, device="cpu")
    _scramble(vlm.model, seed=2)
    batched = vlm.generate_ids(None, prompts, max_new_tokens=10)
    assert batched == [vlm.generate_ids(None, [p], max_new_tokens=10)[0] for p in prompts]
