"""The training engine's encoded examples (:class:`iea.models.finetune.EncodedStore`): the
first ones held in memory up to a byte budget, the rest on disk, read back the same."""

from __future__ import annotations

import torch

from iea.models.finetune import Encoded, EncodedStore


def _encoded(i: int) -> Encoded:
    ids = torch.arange(10 + i)
    labels = torch.where(ids > 5, ids, torch.full_like(ids, -100))
    return Encoded(f"e{i}", ids, labels, {"image_embeds": torch.full((4, 8), float(i))})


def test_examples_past_the_budget_go_to_disk_and_every_one_reads_back_the_same(tmp_path):
    one = 2 * 10 * 8 + 4 * 8 * 4  # example 0's bytes: ids and labels (int64), embeddings
    store = EncodedStore(tmp_path / "enc", max_bytes=3 * one + one // 2)  # 0-2 fit (912 B)
    for i in range(6):
        store.add(_encoded(i))
    on_disk = sorted(p.name for p in (tmp_path / "enc").iterdir())
    assert len(store) == 6 and store.bytes <= 3 * one + one // 2
    assert on_disk == ["00000003.pt", "00000004.pt", "00000005.pt"]  # the rest written
    assert store.lengths == [10 + i for i in range(6)]
    assert store.n_target == [4 + i for i in range(6)]
    for i in range(6):
        got, want = store[i], _encoded(i)
        assert got.key == want.key
        assert torch.equal(got.input_ids, want.input_ids)
        assert torch.equal(got.labels, want.labels)
        assert torch.equal(got.extras["image_embeds"], want.extras["image_embeds"])


def test_a_zero_budget_keeps_every_example_on_disk(tmp_path):
    store = EncodedStore(tmp_path / "enc", max_bytes=0)
    for i in range(3):
        store.add(_encoded(i))
    assert len(list((tmp_path / "enc").iterdir())) == 3 and store.bytes == 0
    assert torch.equal(store[2].extras["image_embeds"], _encoded(2).extras["image_embeds"])
