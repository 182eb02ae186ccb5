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
