"""Model references without any model: kinds, device/dtype, cache paths, missing weights."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from iea.models.refs import (
    LOAD_COUNTS,
    ModelNotAvailable,
    cache_dir,
    kind_of,
    load_causal_lm,
    load_vlm,
    resolve_device,
    resolve_dtype,
    tiny_path,
)
from iea.models.tiny import TINY_VERSION, chat_template
from iea.models.vlm import strip_thinking


@pytest.mark.parametrize(
    "ref, kind",
    [
        ("tiny-qwen3-vl", "tiny"),
        ("tiny-qwen3", "tiny"),
        ("Qwen/Qwen3-VL-2B-Instruct", "hub"),
        ("Qwen/Qwen3-8B", "hub"),
        ("gpt2", "hub"),
        ("/abs/path/model", "local"),
        ("./model", "local"),
        ("../models/x", "local"),
        ("~/models/x", "local"),
        ("outputs/models/aligner", "local"),
    ],
)
def test_kind_of(ref, kind):
    assert kind_of(ref) == kind


def test_kind_of_existing_relative_dir_is_local(tmp_path, monkeypatch):
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert kind_of("org/name") == "local"


@pytest.mark.parametrize("ref", ["", "   ", "tiny-nope", "has space/x", "org/na me"])
def test_kind_of_rejects_bad_refs(ref):
    with pytest.raises(ValueError, match="tiny"):
        kind_of(ref)


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    for bad in ("tpu", "cuda:x", "", 3):
        with pytest.raises(ValueError, match="device must be"):
            resolve_device(bad)


def test_resolve_dtype():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert resolve_dtype("float32", "cuda") == torch.float32
    assert resolve_dtype(torch.float16) == torch.float16
    for bad in ("float8", "", None, torch.int64):
        with pytest.raises(ValueError, match="dtype must be"):
            resolve_dtype(bad)


def test_cache_dir_and_tiny_path(tmp_path, monkeypatch):
    monkeypatch.setenv("IEA_MODEL_CACHE", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("IEA_MODEL_CACHE")
    assert cache_dir().parts[-3:] == (".cache", "iea", "models")
    path = tiny_path("tiny-qwen3-vl", seed=3, cache=tmp_path)
    assert path == tmp_path / f"tiny-qwen3-vl-seed3-v{TINY_VERSION}"
    with pytest.raises(ValueError, match="unknown tiny model"):
        tiny_path("tiny-foo", cache=tmp_path)
    with pytest.raises(ValueError, match="seed"):
        tiny_path("tiny-qwen3", seed="0", cache=tmp_path)


@pytest.fixture
def offline_empty_hub(tmp_path, monkeypatch):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf"


def test_uncached_hub_id_raises_model_not_available(offline_empty_hub):
    before = LOAD_COUNTS.copy()
    with pytest.raises(ModelNotAvailable) as err:
        load_vlm("Qwen/Qwen3-VL-2B-Instruct", device="cpu")
    msg = str(err.value)
    assert "'Qwen/Qwen3-VL-2B-Instruct'" in msg
    assert str(offline_empty_hub / "hub" / "models--Qwen--Qwen3-VL-2B-Instruct") in msg
    assert "hf download Qwen/Qwen3-VL-2B-Instruct" in msg and "tiny-qwen3-vl" in msg
    assert isinstance(err.value.__cause__, OSError)
    with pytest.raises(ModelNotAvailable, match="Qwen3-8B"):
        load_causal_lm("Qwen/Qwen3-8B", device="cpu")
    assert before == LOAD_COUNTS


def test_local_dir_without_weights_raises(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ModelNotAvailable, match="no such directory") as err:
        load_vlm(str(missing), device="cpu")
    assert str(missing) in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotAvailable, match="no config.json"):
        load_vlm(str(empty), device="cpu")
    (empty / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    (empty / "pytorch_model.bin").write_bytes(b"not safetensors")
    with pytest.raises(ModelNotAvailable, match=r"no \*\.safetensors"):
        load_causal_lm(str(empty), device="cpu")


def test_tiny_of_the_wrong_kind_is_a_value_error_before_any_build(tmp_path):
    with pytest.raises(ValueError, match="load_causal_lm"):
        load_vlm("tiny-qwen3", cache=tmp_path, device="cpu")
    with pytest.raises(ValueError, match="load_vlm"):
        load_causal_lm("tiny-qwen3-vl", cache=tmp_path, device="cpu")
    assert list(tmp_path.iterdir()) == []


def test_model_not_available_pickles():
    err = ModelNotAvailable("Qwen/X", "somewhere", "why")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ModelNotAvailable) and str(back) == str(err) and back.ref == "Qwen/X"
    plain = ModelNotAvailable("SAM vit_h: checkpoint not found")
    assert str(plain) == "SAM vit_h: checkpoint not found" and plain.ref is None
    assert str(pickle.loads(pickle.dumps(plain))) == str(plain)


def test_chat_template_renders_images_text_and_thinking_switch():
    from jinja2 import Environment

    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
    ]
    env = Environment()
    vl = env.from_string(chat_template(thinking_switch=False))
    text = vl.render(messages=msgs, add_generation_prompt=True, enable_thinking=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    lm = env.from_string(chat_template(thinking_switch=True))
    plain = lm.render(messages=msgs[:1], add_generation_prompt=True)
    assert plain.endswith("<|im_start|>assistant\n")
    off = lm.render(messages=msgs[:1], add_generation_prompt=True, enable_thinking=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not lm.render(messages=msgs[:1], add_generation_prompt=False).endswith("assistant\n")


def test_strip_thinking():
    assert strip_thinking("<think>\n\n</think>\n\n NEG ") == "NEG"
    assert strip_thinking("<think>a\nb</think>x <think>y</think>") == "x <think>y</think>"
    assert strip_thinking("  plain ") == "plain"


def test_trained_recipes_are_named_by_their_source(tmp_path, monkeypatch):
    import sys

    from iea.models import refs

    (tmp_path / "recipe_a.py").write_text("STEPS = 1\n\n\ndef f():\n    return STEPS\n")
    (tmp_path / "recipe_b.py").write_text("STEPS = 2\n\n\ndef f():\n    return STEPS\n")
    (tmp_path / "recipe_d.py").write_text('def f():\n    """Only a docstring."""\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    a = refs._source_digest(("recipe_a",))
    assert a == refs._source_digest(("recipe_a",)) and len(a) == 8
    assert a != refs._source_digest(("recipe_b",))
    assert len(refs._source_digest(("recipe_d",))) == 8  # an emptied body still parses
    # recipe_a again with docstrings, comments and another layout: no code changed, the same
    # models; the digest is read once per process, so a new process (cache_clear) reads it
    (tmp_path / "recipe_a.py").write_text(
        '"""A recipe."""\nSTEPS = (1)  # one\n"""How many."""\n\ndef f():\n    """F."""\n'
        "    return STEPS\n"
    )
    assert refs._source_digest(("recipe_a",)) == a
    refs._source_digest.cache_clear()
    assert refs._source_digest(("recipe_a",)) == a
    name = refs.tiny_identity("tiny-sam-world", seed=2)
    assert (
        name.startswith(f"tiny-sam-world-seed2-v{TINY_VERSION}-") and len(name.split("-")[-1]) == 8
    )
    assert refs.tiny_identity("tiny-qwen3", seed=2) == f"tiny-qwen3-seed2-v{TINY_VERSION}"
    with pytest.raises(ValueError, match="not found"):
        refs._source_digest(("no_such_recipe_module",))
    refs._source_digest.cache_clear()
    for m in ("recipe_a", "recipe_b", "recipe_d"):
        sys.modules.pop(m, None)


def _fake_tiny(monkeypatch, calls: list):
    """``tiny-qwen3`` built by a fake builder that records its calls (no model is trained)."""
    from iea.models import refs

    def build(path, seed):
        calls.append(seed)
        (Path(path) / "config.json").write_text("{}")
        return path

    monkeypatch.setattr(refs, "_builder", lambda name: build)


def test_a_model_another_process_is_building_is_skipped_or_waited_for(tmp_path, monkeypatch):
    """The build lock: with ``skip_busy`` a model whose lock is held elsewhere is left alone
    (nothing built, None); without it the caller waits, and finding the model built by the
    holder it does not build it again."""
    import fcntl
    import threading

    from iea.models import refs

    calls: list[int] = []
    _fake_tiny(monkeypatch, calls)
    final = refs.tiny_path("tiny-qwen3", cache=tmp_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    (final.parent / ".locks").mkdir()
    lock = final.parent / ".locks" / f"{final.name}.lock"
    with open(lock, "a+") as held:  # another open file description: flock conflicts with it
        fcntl.flock(held, fcntl.LOCK_EX)
        assert refs.ensure_tiny("tiny-qwen3", cache=tmp_path, skip_busy=True) is None
        assert refs.prepare_tiny(["tiny-qwen3"], cache=tmp_path, skip_busy=True) == []
        assert calls == [] and not final.exists()

        done = threading.Event()
        result: list = []

        def waiter():
            result.append(refs.ensure_tiny("tiny-qwen3", cache=tmp_path))
            done.set()

        t = threading.Thread(target=waiter)
        t.start()
        assert not done.wait(0.5)  # blocked on the lock
        final.mkdir()  # the holder finishes its build
        (final / "config.json").write_text("{}")
        fcntl.flock(held, fcntl.LOCK_UN)
        t.join(10)
    assert result == [final] and calls == []  # waited, then loaded: not rebuilt


def test_prepare_tiny_builds_a_free_model_once_and_names_it(tmp_path, monkeypatch):
    from iea.models import refs

    calls: list[int] = []
    _fake_tiny(monkeypatch, calls)
    assert refs.prepare_tiny(["tiny-qwen3", "tiny-qwen3"], cache=tmp_path, skip_busy=True) == [
        "tiny-qwen3"
    ]
    assert refs.prepare_tiny(["tiny-qwen3"], cache=tmp_path) == []
    assert calls == [0]
    path = refs.tiny_path("tiny-qwen3", cache=tmp_path)
    assert (path / "config.json").is_file()
    # the machine that built it, which decides a trained recipe's weights with its source
    machine = json.loads((path / refs.BUILD_FILE).read_text())
    assert machine["cpu"] and machine["threads"] == refs.RECIPE_THREADS, machine
    assert machine["torch"] == torch.__version__ and isinstance(machine["cpu_vector_flags"], list)


def test_builds_of_different_models_wait_for_a_free_build_slot(tmp_path, monkeypatch):
    """On 2 cores one 2-thread build runs at a time: while another process holds the only
    build slot, a free model is not started (skip_busy) and is built once the slot frees."""
    import fcntl

    from iea.models import refs

    calls: list[int] = []
    _fake_tiny(monkeypatch, calls)
    monkeypatch.setattr(refs, "_cores", lambda: {0, 1})
    locks = tmp_path / ".locks"
    locks.mkdir()
    with open(locks / "slot-0.lock", "a+") as slot:
        fcntl.flock(slot, fcntl.LOCK_EX)
        assert refs.prepare_tiny(["tiny-qwen3"], cache=tmp_path, skip_busy=True) == []
        assert calls == []
    assert refs.prepare_tiny(["tiny-qwen3"], cache=tmp_path, skip_busy=True) == ["tiny-qwen3"]
    assert calls == [0]


def test_a_build_inside_a_build_does_not_wait_for_its_own_slot(tmp_path, monkeypatch):
    """A recipe that prepares another tiny model while it holds the only build slot goes on
    (it would otherwise wait forever for itself)."""
    from iea.models import refs

    monkeypatch.setattr(refs, "_cores", lambda: {0, 1})
    calls: list[str] = []

    def inner(path, seed):
        calls.append("tiny-qwen3")
        (Path(path) / "config.json").write_text("{}")

    def outer(path, seed):
        refs.ensure_tiny("tiny-qwen3", seed=seed, cache=tmp_path)
        calls.append("tiny-qwen3-vl")
        (Path(path) / "config.json").write_text("{}")

    monkeypatch.setattr(refs, "_builder", lambda name: outer if name == "tiny-qwen3-vl" else inner)
    assert refs.ensure_tiny("tiny-qwen3-vl", cache=tmp_path) is not None
    assert calls == ["tiny-qwen3", "tiny-qwen3-vl"]
