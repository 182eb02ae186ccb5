"""Image checks for canonical records: does each referenced image exist and fully decode?"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

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
        ``{"dir", "checked", "ok", "bad": {problem: [{"image_id", "detail"}, ...]}}``.
    """
    ids = sorted(set(image_ids))
    bad: dict[str, list[dict[str, str]]] = {}
    for image_id in ids:
        problem = check_image(Path(image_dir) / image_id, min_side)
        if problem:
            bad.setdefault(problem[0], []).append({"image_id": image_id, "detail": problem[1]})
    n_bad = sum(len(v) for v in bad.values())
    return {"dir": str(image_dir), "checked": len(ids), "ok": len(ids) - n_bad, "bad": bad}
