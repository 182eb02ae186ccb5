"""An adapter refuses to load on base weights other than the ones it was trained on
(:func:`iea.models.refs.base_fingerprint`, :func:`iea.models.finetune.check_base`)."""

from __future__ import annotations

import pytest

from iea.models.finetune import check_base
from iea.models.refs import base_fingerprint


def test_a_local_base_is_fingerprinted_by_its_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 64)
    first = base_fingerprint(str(tmp_path))
    assert first.startswith("sha256:") and base_fingerprint(str(tmp_path)) == first
    (tmp_path / "model.safetensors").write_bytes(b"\x01" * 64)
    assert base_fingerprint(str(tmp_path)) != first


def test_a_hub_id_is_its_cached_revision_or_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert base_fingerprint("Qwen/Qwen3-VL-8B-Instruct") == "unknown"
    refs = tmp_path / "models--Qwen--Qwen3-VL-8B-Instruct" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("abc123\n")
    assert base_fingerprint("Qwen/Qwen3-VL-8B-Instruct") == "revision:abc123"


def test_check_base_refuses_other_weights_and_names_both():
    meta = {"base": "org/m", "base_fingerprint": "sha256:aaaa"}
    check_base("m", meta, "sha256:aaaa")
    check_base("m", meta, "unknown")  # cannot tell: loads
    check_base("m", {"base": "org/m"}, "sha256:bbbb")  # saved before fingerprints
    with pytest.raises(ValueError, match="sha256:aaaa.*sha256:bbbb"):
        check_base("m", meta, "sha256:bbbb")
