import json

import pytest
from PIL import Image

from iea.data.convert import DataFormatError, MissingImagesError, convert, dataset_stats
from iea.data.images import check_image
from iea.data.synthetic import generate


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return generate(
        tmp_path_factory.mktemp("syn"), n_train=20, n_dev=6, n_test=6, seed=3, fmt="conll"
    )


def test_convert_synthetic_with_images(syn, tmp_path):
    m = convert("conll", syn.annotations, tmp_path / "out", images=syn.images, require_images=True)
    assert (
        m["counts"]["train"]["tweets"] == 20
        and m["images"]["ok"] == 32
        and m["images"]["bad"] == {}
    )
    assert dataset_stats(tmp_path / "out") == m["counts"]
    assert (tmp_path / "out" / "rejects.jsonl").read_text() == ""
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert on_disk["version"] == m["version"] and len(m["inputs"]["dev"]["sha256"]) == 64


def test_version_is_content_addressed(syn, tmp_path):
    a = convert("conll", syn.annotations, tmp_path / "a")["version"]
    b = convert("conll", syn.annotations, tmp_path / "b")["version"]
    other = generate(tmp_path / "other", n_train=20, n_dev=6, n_test=6, seed=4, fmt="conll")
    c = convert("conll", other.annotations, tmp_path / "c")["version"]
    assert a == b != c


def test_a_changed_image_is_a_new_dataset_version(syn, tmp_path):
    """The annotations alone do not make the version: the images' bytes are in it too."""
    import shutil

    images = tmp_path / "images"
    shutil.copytree(syn.images, images)
    a = convert("conll", syn.annotations, tmp_path / "a", images=images)["version"]
    assert convert("conll", syn.annotations, tmp_path / "b", images=images)["version"] == a
    first = sorted(images.iterdir())[0]
    Image.new("RGB", (40, 30), (9, 9, 9)).save(first, format="JPEG")
    assert convert("conll", syn.annotations, tmp_path / "c", images=images)["version"] != a
    assert convert("conll", syn.annotations, tmp_path / "d")["version"] != a  # no images


def test_synthetic_is_deterministic(tmp_path):
    a = generate(tmp_path / "a", n_train=5, n_dev=2, n_test=2, seed=9)
    b = generate(tmp_path / "b", n_train=5, n_dev=2, n_test=2, seed=9)
    for f in sorted(a.annotations.iterdir()):
        assert f.read_bytes() == (b.annotations / f.name).read_bytes()
    for f in sorted(a.images.iterdir()):
        assert f.read_bytes() == (b.images / f.name).read_bytes()


def test_bad_images_are_listed_and_can_fail_the_command(syn, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for p in syn.images.iterdir():
        (images / p.name).write_bytes(p.read_bytes())
    names = sorted(p.name for p in images.iterdir())
    (images / names[0]).unlink()  # missing
    (images / names[1]).write_bytes(b"")  # empty
    (images / names[2]).write_bytes(b"not an image at all")  # corrupt
    full = (images / names[3]).read_bytes()
    (images / names[3]).write_bytes(full[: len(full) // 2])  # truncated
    m = convert("conll", syn.annotations, tmp_path / "out", images=images)
    bad = {k: [i["image_id"] for i in v] for k, v in m["images"]["bad"].items()}
    assert bad == {
        "missing": [names[0]],
        "empty": [names[1]],
        "corrupt": [names[2]],
        "truncated": [names[3]],
    }
    assert m["images"]["ok"] == 28
    with pytest.raises(MissingImagesError, match="4 of 32 images are unusable") as e:
        convert("conll", syn.annotations, tmp_path / "out2", images=images, require_images=True)
    assert names[3] in str(e.value)
    assert json.loads((tmp_path / "out2" / "manifest.json").read_text())["images"]["ok"] == 28


def test_image_kinds(tmp_path):
    for mode in ("L", "RGBA", "P", "I;16"):
        p = tmp_path / f"{mode.replace(';', '')}.png"
        Image.new(mode, (8, 8)).save(p)
        assert check_image(p) is None, mode
    assert check_image(tmp_path / "L.png", min_side=16)[0] == "too_small"


def test_bad_record_stops_or_is_quarantined(syn, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for p in syn.annotations.iterdir():
        (src / p.name).write_text(p.read_text())
    lines = (src / "valid.txt").read_text().split("\n")
    lines[2] = lines[2].split("\t")[0] + "\tB-WHAT\tO"
    (src / "valid.txt").write_text("\n".join(lines))
    with pytest.raises(DataFormatError, match=r"valid.txt:3: unknown tag 'B-WHAT'"):
        convert("conll", src, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written on failure
    m = convert("conll", src, tmp_path / "out", skip_bad=True)
    assert m["rejects"]["count"] == 1 and m["counts"]["dev"]["tweets"] == 5
    (rej,) = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert rej["line"] == 3 and "B-WHAT" in rej["raw"] and rej["file"].endswith("valid.txt")


def test_missing_split_file(syn, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing train file for format 'vlp'"):
        convert("vlp", syn.annotations, tmp_path / "out")
