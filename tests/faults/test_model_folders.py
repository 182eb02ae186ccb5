"""Fault: a pickle or ``auto_map`` planted in a trained model folder (next to or instead of its
safetensors). The loader refuses before it reads anything in the folder, so the planted code
never runs (the pickle here would write a marker file if it were ever unpickled)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from iea.models.finetune import check_trained_folder, load_trained


class _Planted:
    """Unpickling this writes ``path``: proof that loading ran planted code."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path(self.path).write_text, ("planted code ran",))


def _folder(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "iea_model.json").write_text(json.dumps({"base": "tiny-qwen3-vl", "kind": "adapter"}))
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    save_file({"w": torch.zeros(2)}, str(d / "adapter_model.safetensors"))
    return d


@pytest.mark.parametrize("name", ["adapter_model.bin", "pytorch_model.bin", "extra.pkl", "x.pt"])
def test_a_planted_pickle_is_refused_before_it_is_read(tmp_path, name):
    d = _folder(tmp_path)
    marker = tmp_path / "ran"
    (d / name).write_bytes(pickle.dumps(_Planted(str(marker))))
    with pytest.raises(ValueError, match=rf"could run code: {name} \(pickle format\)"):
        load_trained(d)
    assert not marker.exists()


def test_a_pickle_instead_of_the_safetensors_is_refused(tmp_path):
    d = _folder(tmp_path)
    (d / "adapter_model.safetensors").unlink()
    (d / "adapter_model.bin").write_bytes(pickle.dumps(_Planted(str(tmp_path / "ran"))))
    with pytest.raises(ValueError, match="adapter_model.bin .pickle format.; no \\*.safetensors"):
        load_trained(d)
    assert not (tmp_path / "ran").exists()


def test_an_auto_map_naming_code_is_refused(tmp_path):
    d = _folder(tmp_path)
    (d / "processor_config.json").write_text(
        json.dumps({"auto_map": {"AutoProcessor": "evil.EvilProcessor"}})
    )
    (d / "evil.py").write_text("raise SystemExit('planted code ran')\n")
    with pytest.raises(ValueError, match=r"processor_config.json \(auto_map: code to import\)"):
        load_trained(d)


def test_a_clean_folder_passes_the_check(tmp_path):
    check_trained_folder(_folder(tmp_path))  # adapter_config's peft "auto_mapping" is data
