"""Image checks for canonical records: does each referenced image exist and fully decode?"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

PROBLEMS: tuple[str, ...] = ("missing", "empty", "corrupt", "truncated", "too_small")


def check_image(path: Path, min_side: int = 1) -> tuple[str, str] | None:
    """Return ``(problem, detail)`` for an unusable image, or None when it decodes fully.

    ``problem`` is one of :data:`PROBLEMS`. The whole image is decoded (not only the header),
    so a truncated JPEG/PNG is caught. ``min_side`` is the smallest allowed width/height (pixels).
    """
    path = Path(path)
    if not path.is_file():
        return "missing", f"{path}: no such file"
    if path.stat().st_size == 0:
        return "empty", f"{path}: 0 bytes"
    try:
        with Image.open(path) as im:
            im.load()
            width, height = im.size
    except UnidentifiedImageError as e:
        return "corrupt", f"{path}: not a decodable image ({e})"
    except (OSError, SyntaxError, ValueError) as e:
        kind = "truncated" if "truncat" in str(e).lower() else "corrupt"
        return kind, f"{path}: {e}"
    if min(width, height) < min_side:
        return "too_small", f"{path}: {width}x{height} pixels, below {min_side}"
    return None


def check_images(image_dir: Path, image_ids: Iterable[str], min_side: int = 1) -> dict:
    """Check every distinct image once.

    Returns:
        ``{"dir", "checked", "ok", "bad": {problem: [{"image_id", "detail"}, ...]},
        "sha256"}``: ``sha256`` is a digest over every image id and its file's bytes (a
        missing file counts as absent), so a changed image changes it.
    """
    ids = sorted(set(image_ids))
    bad: dict[str, list[dict[str, str]]] = {}
    h = hashlib.sha256()
    for image_id in ids:
        path = Path(image_dir) / image_id
        problem = check_image(path, min_side)
        if problem:
            bad.setdefault(problem[0], []).append({"image_id": image_id, "detail": problem[1]})
        content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"
        h.update(f"{image_id}\0{content}\n".encode())
    n_bad = sum(len(v) for v in bad.values())
    return {
        "dir": str(image_dir),
        "checked": len(ids),
        "ok": len(ids) - n_bad,
        "bad": bad,
        "sha256": h.hexdigest(),
    }


class ImageDecodeError(ValueError):
    """An image file that cannot be decoded; the message names the file and the reason."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: cannot decode image: {reason}")


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image file to an ``H x W x 3`` uint8 RGB array, upright.

    Defined behaviour for every kind of input:

    * EXIF orientation is applied (the array is what a viewer shows).
    * Grayscale (``1``, ``L``), palette (``P``), CMYK, YCbCr and LAB convert to RGB.
    * Alpha (``RGBA``, ``LA``, ``PA``, palette transparency) is composited over white.
    * 16-bit (``I;16*``) and 32-bit integer (``I``) images are scaled from their value range to
      0..255 (``value >> 8`` for 16-bit data); float (``F``) images are clipped to 0..255.
    * Any size from 1x1 up is returned as is; resizing is the caller's business.

    Raises:
        ImageDecodeError: missing, empty, unidentifiable, truncated or otherwise corrupt files.
    """
    problem = None
    path = Path(path)
    if not path.is_file():
        raise ImageDecodeError(path, "no such file")
    if path.stat().st_size == 0:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            return _to_rgb(im)
    except UnidentifiedImageError:
        problem = "not a recognised image format"
    except (OSError, SyntaxError, ValueError) as e:
        problem = f"truncated file ({e})" if "truncat" in str(e).lower() else str(e)
    raise ImageDecodeError(path, problem)


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(im, dtype=np.uint16) >> 8
        return np.repeat(arr.astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "I":
        arr = np.asarray(im, dtype=np.int64)
        if arr.max(initial=0) > 255:
            arr = np.clip(arr, 0, 65535) >> 8
        return np.repeat(np.clip(arr, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "F":
        arr = np.clip(np.asarray(im, dtype=np.float32), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
