"""Overlay PNGs: regions coloured and numbered, dropped regions hatched, a legend with the
descriptions."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from iea.vision.interpret import Interpretation
from iea.vision.segment import Region

PALETTE = np.array(
    [
        (128, 128, 128),
        (230, 25, 75),
        (60, 180, 75),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (0, 128, 128),
    ],
    dtype=np.uint8,
)
ALPHA = 0.45
HATCH_PERIOD = 8
MAX_DISPLAY_SIDE = 1024
LEGEND_WIDTH = 380


def colour_of(region_id: int) -> tuple[int, int, int]:
    """Region 0 (background) is gray; others cycle through the palette."""
    c = PALETTE[0] if region_id == 0 else PALETTE[1 + (region_id - 1) % (len(PALETTE) - 1)]
    return tuple(int(v) for v in c)


def draw_overlay(
    rgb: np.ndarray,
    label_map: np.ndarray,
    regions: Sequence[Region],
    reasons: Sequence[Sequence[str]],
    interpretations: dict[int, Interpretation],
) -> Image.Image:
    """Render the overlay: the image (at most 1024 px a side) with a legend panel on its right."""
    full_h, full_w = label_map.shape
    scale = min(1.0, MAX_DISPLAY_SIDE / max(full_h, full_w))
    if scale < 1:  # draw at display size: a 6000 x 4000 image needs no full-size hatch grid
        size = (max(1, round(full_w * scale)), max(1, round(full_h * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
        label_map = np.asarray(
            Image.fromarray(label_map.astype(np.uint8)).resize(size, Image.NEAREST)
        )
    height, width = label_map.shape
    n_ids = max([int(label_map.max()), *(r.id for r in regions)]) + 1
    colours = np.zeros((n_ids, 3), np.uint8)
    for r in regions:
        colours[r.id] = colour_of(r.id)
    tinted = (
        rgb.astype(np.float32) * (1 - ALPHA) + colours[label_map].astype(np.float32) * ALPHA
    ).astype(np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    stripes = ((xx + yy) // (HATCH_PERIOD // 2)) % 2 == 0
    for r, why in zip(regions, reasons, strict=True):
        if why:
            tinted[(label_map == r.id) & stripes] = (30, 30, 30)
    shown = Image.fromarray(tinted)
    font = ImageFont.load_default(size=13)
    lines = _legend_lines(regions, reasons, interpretations)
    line_h = 16
    canvas_h = max(shown.height, 10 + line_h * len(lines))
    canvas = Image.new("RGB", (shown.width + LEGEND_WIDTH, canvas_h), (255, 255, 255))
    canvas.paste(shown, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for r in regions:
        anchor = _inner_point(label_map, r.id)
        if anchor is None:  # too small to survive the downscale: legend only
            continue
        cx, cy = anchor
        label = f"{r.id}"
        box = draw.textbbox((cx, cy), label, font=font, anchor="mm")
        draw.rectangle(
            (box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2),
            fill=(255, 255, 255),
            outline=colour_of(r.id),
        )
        draw.text((cx, cy), label, fill=(0, 0, 0), font=font, anchor="mm")
    y = 5
    for rid, text in lines:
        if rid is not None:
            draw.rectangle((shown.width + 6, y + 2, shown.width + 16, y + 12), fill=colour_of(rid))
        draw.text((shown.width + 22, y), text, fill=(0, 0, 0), font=font)
        y += line_h
    return canvas


def _inner_point(label_map: np.ndarray, region_id: int) -> tuple[int, int] | None:
    """The region's pixel farthest from its border (x, y): always inside the region, even for
    rings and L-shapes whose bbox centre is not."""
    mask = (label_map == region_id).astype(np.uint8)
    if not mask.any():
        return None
    dist = cv2.distanceTransform(np.pad(mask, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def _legend_lines(regions, reasons, interpretations) -> list[tuple[int | None, str]]:
    lines: list[tuple[int | None, str]] = []
    for r, why in zip(regions, reasons, strict=True):
        name = "background" if r.is_background else f"region {r.id}"
        if why:
            head = f"{r.id} {name}: dropped ({', '.join(why)})"
            body = ""
        else:
            interp = interpretations.get(r.id)
            head = f"{r.id} {name}: kept"
            body = interp.text if interp else ""
            if interp and not interp.parsed:
                body = "[unparsed] " + (body or "(empty answer)")
        lines.append((r.id, head))
        for part in textwrap.wrap(body, 52)[:4]:
            lines.append((None, "   " + part))
    return lines


def label_map_png(label_map: np.ndarray) -> Image.Image:
    """The label map as an 8-bit grayscale PNG whose pixel values are the region ids."""
    return Image.fromarray(label_map.astype(np.uint8), mode="L")
