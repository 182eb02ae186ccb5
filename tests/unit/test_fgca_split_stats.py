from iea.align.fgca import image_records, split_images, table1_stats
from iea.vision.segment import Region


def test_split_sizes_are_exact_with_enough_images():
    classes = {f"img{i:03d}": [1, 2] for i in range(100)}
    assign = split_images(classes, {"train": 60, "val": 20, "test": 20}, seed=3)
    counts = {s: sum(v == s for v in assign.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 60, "val": 20, "test": 20}
    assert assign == split_images(classes, {"train": 60, "val": 20, "test": 20}, seed=3)
    assert assign != split_images(classes, {"train": 60, "val": 20, "test": 20}, seed=4)


def test_split_scales_down_and_moves_unseen_classes_to_train():
    classes = {f"img{i}": [1] for i in range(9)} | {"rare": [7]}
    assign = split_images(classes, {"train": 2000, "val": 500, "test": 500}, seed=0)
    assert len(assign) == 10 and assign["rare"] == "train"  # class 7 only exists there
    train_classes = {c for i, s in assign.items() if s == "train" for c in classes[i]}
    assert all(set(classes[i]) <= train_classes for i, s in assign.items() if s != "train")


def test_records_and_table1():
    text = "Lazy Sunday : the dog on the sofa !"
    regions = [
        (Region(22, (0, 0, 5, 5), 25, 1.0, 1.0, False), "dog", "a dog"),
        (Region(49, (5, 5, 5, 5), 25, 1.0, 1.0, False), "sofa", ""),
    ]
    spans = {"dog": (18, 21, 4, 5), "sofa": (29, 33, 7, 8)}
    recs = image_records("im1", text, regions, spans, split="train")
    assert [(r.phrase, r.class_id, r.image_class_ids) for r in recs] == [
        ("dog", 22, (22, 49)),
        ("sofa", 49, (22, 49)),
    ]
    assert all(r.text[r.start : r.end] == r.phrase for r in recs)
    stats = table1_stats(recs)
    assert stats["train"] == {"samples": 1, "regions": 2, "classes": 2, "regions_per_image": 2.0}
    assert stats["val"]["samples"] == 0


def _outcomes():
    from iea.align.build import ImageOutcome

    text = "Lazy Sunday : the dog on the sofa !"
    regions = [(Region(22, (0, 0, 5, 5), 25, 1.0, 1.0, False), "dog", "a dog")]
    good = [
        ImageOutcome(f"im{i}", image_records(f"im{i}", text, regions, {"dog": (18, 21, 4, 5)}))
        for i in range(6)
    ]
    bad = [ImageOutcome("x1", reason="phrases missing"), ImageOutcome("x2", reason="blank")]
    return good, bad


def test_the_synthesis_gate_counts_lost_readable_images_against_the_allowed_fraction():
    from iea.align.fgca import synthesis_gate

    good, bad = _outcomes()
    gate = synthesis_gate(good + bad, readable=8, max_fraction=0.25)
    assert gate.ok and gate.lost == 2 and gate.stats["quarantined_images"] == 2
    gate = synthesis_gate(good[:4] + bad, readable=6, max_fraction=0.25)
    assert not gate.ok
    msg = str(gate.failure("q.jsonl"))
    assert "2 of 6 readable images" in msg and "1 phrases missing" in msg and "q.jsonl" in msg
    assert not synthesis_gate(bad, readable=2, max_fraction=1.0).ok  # nothing good


def test_split_files_version_and_quarantine_rows():
    from iea.align.fgca import (
        dataset_files,
        drop_failed_images,
        failed_rows,
        quarantine_rows,
        split_records,
    )

    good, bad = _outcomes()
    records = split_records(good, {"train": 4, "val": 1, "test": 1}, seed=0)
    assert sorted(r.split for r in records) == ["test", "train", "train", "train", "train", "val"]
    failed = failed_rows(
        [{"check": "phrase_in_text", "severity": "warning", "ids": [2]}], [0, 1, 2, 3, 4, 5],
        records,
    )  # fmt: skip
    assert failed[0]["image_id"] == records[2].image_id and failed[0]["reason"].endswith("text")
    kept, dropped = drop_failed_images(records, failed)
    assert dropped == {records[2].image_id} and len(kept) == 5
    files, version = dataset_files(kept)
    assert sum(len(t.splitlines()) for t in files.values()) == 5 and len(version) == 16
    assert dataset_files(list(reversed(kept)))[1] != version  # the content's order is its own
    assert dataset_files(kept)[1] == version
    rows = quarantine_rows(good + bad, failed)
    assert [r["reason"] for r in rows] == ["phrases missing", "blank", failed[0]["reason"]]
