"""Fault: a LoRA adapter that loads as a no-op. A saved adapter records its probe logits; a
fresh process loads it with zero missing keys and the same logits, and a folder whose tensors
no longer reach the model (renamed keys: peft would skip them silently) or whose weights are
not the ones it recorded is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from iea.models.finetune import FinetuneConfig, load_trained, prepare_model, save_trained
from iea.models.refs import load_vlm

pytestmark = pytest.mark.model

LOAD = """
import json, sys
from iea.models.finetune import load_trained, probe_logits
model, processor = load_trained(sys.argv[1], device="cpu", cache=sys.argv[2])
print(json.dumps(probe_logits(model, processor)))
"""


@pytest.fixture
def adapter(tmp_path, model_cache):
    model, processor = load_vlm("tiny-qwen3-vl", device="cpu", cache=model_cache)
    torch.manual_seed(0)
    model = prepare_model(model, FinetuneConfig(lora_r=4, lora_dropout=0.0))
    with torch.no_grad():  # a trained adapter: B away from its zero init
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    path = save_trained(
        model, processor, tmp_path / "a", base_ref="tiny-qwen3-vl", cache=model_cache
    )
    return path


def _load_fresh(path, model_cache) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run(
        [sys.executable, "-c", LOAD, str(path), str(model_cache)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


def test_a_fresh_process_loads_every_tensor_and_gives_the_training_logits(adapter, model_cache):
    saved = json.loads((adapter / "iea_model.json").read_text())["probe"]
    run = _load_fresh(adapter, model_cache)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["logits"] == pytest.approx(saved["logits"], rel=1e-4, abs=1e-5)
    base, _ = load_vlm("tiny-qwen3-vl", device="cpu", cache=model_cache)
    # the adapter changes the answer: a no-op load would give the base's logits
    from iea.models.finetune import probe_logits

    base_logits = probe_logits(base, _)["logits"]
    assert max(abs(a - b) for a, b in zip(base_logits, saved["logits"], strict=True)) > 1e-3


def test_tensors_that_no_longer_reach_the_model_are_refused(adapter, model_cache):
    f = adapter / "adapter_model.safetensors"
    tensors = load_file(str(f))
    save_file({k.replace("lora_", "lorra_"): v for k, v in tensors.items()}, str(f))
    with pytest.raises(ValueError, match="the adapter did not load: .* missing"):
        load_trained(adapter, device="cpu", cache=model_cache)


def test_weights_other_than_the_recorded_ones_are_refused(adapter, model_cache):
    meta = json.loads((adapter / "iea_model.json").read_text())
    meta["probe"]["logits"] = [x + 1.0 for x in meta["probe"]["logits"]]
    (adapter / "iea_model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="answers the probe otherwise"):
        load_trained(adapter, device="cpu", cache=model_cache)
