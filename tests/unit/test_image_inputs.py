"""Every kind of image input has defined behaviour (see iea.data.images.load_rgb)."""

import io

import numpy as np
import pytest
from PIL import Image

from iea.data.images import ImageDecodeError, load_rgb


def _save(tmp_path, name, im, **kw):
    p = tmp_path / name
    im.save(p, **kw)
    return p


def test_grayscale_rgba_palette(tmp_path):
    g = load_rgb(_save(tmp_path, "g.png", Image.new("L", (5, 4), 77)))
    assert g.shape == (4, 5, 3) and (g == 77).all()
    rgba = Image.new("RGBA", (3, 3), (255, 0, 0, 0))  # fully transparent red -> white
    assert (load_rgb(_save(tmp_path, "a.png", rgba)) == 255).all()
    half = Image.new("RGBA", (3, 3), (0, 0, 0, 128))
    assert abs(int(load_rgb(_save(tmp_path, "h.png", half))[0, 0, 0]) - 127) <= 1
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert load_rgb(_save(tmp_path, "p.png", pal))[0, 0].tolist() == [10, 200, 30]


def test_sixteen_bit(tmp_path):
    arr = np.full((4, 6), 65535, np.uint16)
    arr[0, 0] = 256 * 100
    p = _save(tmp_path, "16.png", Image.fromarray(arr))
    out = load_rgb(p)
    assert out.dtype == np.uint8 and out[1, 1].tolist() == [255, 255, 255] and out[0, 0, 0] == 100


def test_cmyk_jpeg(tmp_path):
    p = _save(tmp_path, "c.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0)))  # red in CMYK
    r, g, b = load_rgb(p)[4, 4].tolist()
    assert r > 200 and g < 60 and b < 60


def test_exif_rotation(tmp_path):
    im = Image.new("RGB", (60, 20), (0, 0, 0))
    im.paste((255, 0, 0), (0, 0, 10, 10))  # red block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    p = _save(tmp_path, "r.jpg", im, exif=exif, quality=100)
    out = load_rgb(p)
    assert out.shape == (60, 20, 3)  # upright: portrait
    assert out[4, 15, 0] > 200 and out[4, 4, 0] < 50  # the block is now at the top-right


def test_tiny_and_black(tmp_path):
    assert load_rgb(_save(tmp_path, "1.png", Image.new("RGB", (1, 1)))).shape == (1, 1, 3)
    assert load_rgb(_save(tmp_path, "8.png", Image.new("RGB", (8, 8)))).shape == (8, 8, 3)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (np.random.default_rng(0).bytes(2048), "not a recognised image format"),
    ],
)
def test_undecodable_files_name_the_path(tmp_path, content, reason):
    p = tmp_path / "bad.jpg"
    p.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=reason) as e:
        load_rgb(p)
    assert str(p) in str(e.value)


def test_truncated_and_missing(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buf, "JPEG"
    )
    p = tmp_path / "t.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageDecodeError, match="truncated") as e:
        load_rgb(p)
    assert str(p) in str(e.value)
    with pytest.raises(ImageDecodeError, match="no such file"):
        load_rgb(tmp_path / "nope.png")
