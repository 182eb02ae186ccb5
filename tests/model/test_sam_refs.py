"""SAM references: tiny-sam built from segment-anything's classes, real variants' errors."""

import pytest
import torch

from iea.models.refs import LOAD_COUNTS, ModelNotAvailable
from iea.models.sam import TINY_SAM_SPEC, load_sam, tiny_sam_dir

pytestmark = pytest.mark.model


def test_tiny_sam_is_deterministic_by_seed_and_loads_from_its_checkpoint(tmp_path):
    a = load_sam("tiny-sam", cache=tmp_path / "a", device="cpu")
    b = load_sam("tiny-sam", cache=tmp_path / "b", device="cpu")
    c = load_sam("tiny-sam", cache=tmp_path / "c", device="cpu", seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    folder = tiny_sam_dir(0, tmp_path / "a")
    assert sorted(p.name for p in folder.iterdir()) == ["sam.pth", "spec.json"]
    assert a.image_encoder.img_size == TINY_SAM_SPEC["image_size"]
    assert not a.training
    # The folder itself is a reference, loaded through the same checkpoint path.
    before = LOAD_COUNTS[f"sam:{folder}"]
    d = load_sam(str(folder), device="cpu")
    assert LOAD_COUNTS[f"sam:{folder}"] == before + 1
    assert all(torch.equal(sa[k], d.state_dict()[k]) for k in sa)


def test_real_variants_need_their_checkpoint(tmp_path):
    with pytest.raises(ModelNotAvailable, match="SAM vit_h: checkpoint .* not found"):
        load_sam("vit_h", None)
    with pytest.raises(ModelNotAvailable, match="sam_vit_b.pth"):
        load_sam("vit_b", tmp_path / "sam_vit_b.pth")


def test_unknown_reference(tmp_path):
    with pytest.raises(ValueError, match="unknown SAM reference 'vit_x'"):
        load_sam("vit_x")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotAvailable, match="needs spec.json and sam.pth"):
        load_sam(str(empty))
