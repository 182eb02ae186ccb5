"""``tiny-sam-world``: segment-anything's SAM at a small size, trained on the world's scenes.

Data: scenes of :func:`iea.data.world.draw_scene` (1-3 objects and the distractors at fixed
rates), with their instance maps as ground truth; every drawn thing (objects and distractors)
is an instance, so SAM learns to cut distractors out too and the filters decide about them.
A faint distractor is annotated as an unsure instance: its masks are cut like any other (the
same mask loss) and the IoU head learns :data:`FAINT_IOU_SCALE` of their true IoU, so the
confidence filter's margin does not hang on how well one training run happens to cut faint
blobs (trained on their true IoU alone, the head scored them 0.44 on one CPU kind and 0.61 on
another, on either side of the demo's ``t_conf`` 0.5).

Training follows the predictor's path exactly (``ResizeLongestSide`` to the encoder size,
``Sam.preprocess``: pixel mean/std and bottom-right padding, ``apply_coords`` for points) and
scores masks as ``postprocess_masks`` produces them (upsampled, padding cropped off; at half
the input resolution, a quarter of the full-resolution loss's cost). One positive point per
prompt; a click on the background is trained as "no object" (an empty mask, IoU target 0),
which the stock mask generator then drops (its stability score is NaN). Loss: 20 x focal +
dice on the best of the 3 multimask outputs, plus MSE between the IoU head and the true IoU of
each output (scaled for a faint target). AdamW with cosine decay.

The held-out evaluation runs the stock ``SamAutomaticMaskGenerator`` on fresh scenes and
reports the share of objects found (best mask IoU >= 0.5), the mean best-match IoU and the
Spearman correlation of predicted with true IoU over every mask it returns.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from iea.data.world import POLARITIES, WORLD_CLASSES, draw_scene, sample_distractors
from iea.models.sam import TINY_SAM_SPEC
from iea.recipes import timed, write_report

SPEC: dict[str, Any] = {
    **TINY_SAM_SPEC,
    # a wider prompt side than tiny-sam (shared/NOTES.md: its sizes reached 83% found, IoU 0.66)
    "prompt_embed_dim": 64,
    "decoder_mlp_dim": 128,
    "iou_head_hidden_dim": 64,
}
TRAIN = {
    "images": 480,
    "steps": 600,
    "images_per_step": 8,
    "prompts_per_image": 8,
    "background_clicks": 0.12,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "warmup": 30,
    "distractors": {"speck": 0.5, "blurred": 0.4, "faint": 0.5},
}
EVAL = {
    "images": 40,
    "points_per_side": 8,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.6,
    "box_nms_thresh": 0.7,
}
IMAGE_SIZE = (320, 240)
FAINT_IOU_SCALE = 0.3
"""The IoU head's target for a mask of a faint distractor: this x its true IoU."""


def scene(seed: int, index: int, distractors: dict[str, float]):
    """One training/evaluation scene: ``(rgb, instances, drawn)`` as
    :func:`iea.data.world.draw_scene` returns them."""
    rng = np.random.default_rng([seed, index])
    n = int(rng.integers(1, 4))
    names = [str(c) for c in rng.choice(WORLD_CLASSES, size=n, replace=False)]
    pols = [str(rng.choice(POLARITIES)) for _ in names]
    extra = sample_distractors(rng, distractors, names, pols)
    return draw_scene(rng, list(zip(names, pols, strict=True)), extra, IMAGE_SIZE)


def _jpeg(rgb: np.ndarray) -> np.ndarray:
    """The image after a JPEG round trip at quality 90 (what the datasets store)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


class _Data:
    """Pre-rendered training images (uint8, resized for the encoder), instance maps at the
    input size, and each instance's pixel coordinates (for drawing clicks without scanning
    the map every step)."""

    def __init__(self, sam, seed: int, n: int):
        import cv2
        from segment_anything.utils.transforms import ResizeLongestSide

        self.transform = ResizeLongestSide(sam.image_encoder.img_size)
        images, maps, self.pixels, self.faint = [], [], [], []
        for k in range(n):
            rgb, inst, drawn = scene(seed, k, TRAIN["distractors"])
            self.faint.append({j + 1 for j, d in enumerate(drawn) if d.kind == "faint"})
            small = self.transform.apply_image(_jpeg(rgb))
            h, w = small.shape[:2]
            m = cv2.resize(inst.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST)
            images.append(torch.as_tensor(small).permute(2, 0, 1))
            maps.append(torch.as_tensor(m, dtype=torch.int64))
            flat = m.ravel()
            order = np.argsort(flat, kind="stable")
            ids, starts = np.unique(flat[order], return_index=True)
            groups = np.split(order, starts[1:])
            self.pixels.append(
                {
                    int(i): np.stack([g // w, g % w], axis=1)
                    for i, g in zip(ids, groups, strict=True)
                }
            )
        self.images = torch.stack(images)  # (N, 3, h, w) uint8
        self.maps = torch.stack(maps)  # (N, h, w) int64 instance ids, 0 = background
        self.input_size = tuple(self.images.shape[-2:])


def _predict_masks(decoder, src, pe, sparse, dense):
    """``MaskDecoder.predict_masks`` with one image embedding per prompt (``src``: (N, C, h, w))
    instead of one embedding repeated over all prompts. Returns (masks (N, 4, 4h, 4w), iou
    (N, 4))."""
    out = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([out.unsqueeze(0).expand(sparse.size(0), -1, -1), sparse], dim=1)
    src = src + dense
    pos = pe.expand(src.shape[0], -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos, tokens)
    iou_out, mask_out = hs[:, 0, :], hs[:, 1 : 1 + decoder.num_mask_tokens, :]
    up = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    hyper = torch.stack(
        [decoder.output_hypernetworks_mlps[i](mask_out[:, i, :]) for i in range(len(mask_out[0]))],
        dim=1,
    )
    b, c, h, w = up.shape
    masks = (hyper @ up.reshape(b, c, h * w)).reshape(b, -1, h, w)
    return masks, decoder.iou_prediction_head(iou_out)


def _sample_prompts(data: _Data, idx: torch.Tensor, rng: np.random.Generator):
    """Per image of ``idx``: ``prompts_per_image`` clicks (x, y in input pixels) and their
    target masks (N, h, w) bool, the image index of each prompt and the scale (N,) of its IoU
    target (:data:`FAINT_IOU_SCALE` for a faint distractor, else 1)."""
    points, targets, owner, scale = [], [], [], []
    for j, i in enumerate(idx.tolist()):
        pixels = data.pixels[i]
        objects = [k for k in pixels if k > 0]
        for _ in range(TRAIN["prompts_per_image"]):
            bg = not objects or rng.random() < TRAIN["background_clicks"] or 0 not in pixels
            bg = bg and 0 in pixels
            target_id = 0 if bg else objects[int(rng.integers(len(objects)))]
            where = pixels[target_id]
            y, x = where[int(rng.integers(len(where)))]
            points.append((float(x) + 0.5, float(y) + 0.5))
            m = data.maps[i]
            targets.append(torch.zeros_like(m, dtype=torch.bool) if bg else m == target_id)
            owner.append(j)
            scale.append(FAINT_IOU_SCALE if target_id in data.faint[i] else 1.0)
    return torch.tensor(points), torch.stack(targets), torch.tensor(owner), torch.tensor(scale)


def _losses(
    logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Focal + dice of the best of the 3 masks, plus the IoU head's MSE against ``scale`` x the
    true IoU. ``logits`` (N, 3, h, w), ``iou_pred`` (N, 3), ``target`` (N, h, w) bool,
    ``scale`` (N,)."""
    t = target[:, None].float().expand_as(logits)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    pt = p * t + (1 - p) * (1 - t)
    alpha = 0.25 * t + 0.75 * (1 - t)
    focal = (alpha * ce * (1 - pt) ** 2).flatten(2).mean(-1)
    inter = (p * t).flatten(2).sum(-1)
    dice = 1 - (2 * inter + 1) / (p.flatten(2).sum(-1) + t.flatten(2).sum(-1) + 1)
    per_mask = 20 * focal + dice
    best = per_mask.min(dim=1).values.mean()
    with torch.no_grad():
        hard = logits > 0
        i = (hard & (t > 0)).flatten(2).sum(-1).float()
        u = (hard | (t > 0)).flatten(2).sum(-1).float()
        true_iou = torch.where(u > 0, i / u.clamp(min=1), torch.zeros_like(u))
    return best + F.mse_loss(iou_pred, true_iou * scale[:, None])


def train_sam(seed: int, log=None) -> tuple[Any, dict[str, Any]]:
    """Build SAM from :data:`SPEC` at ``seed`` and train it (:data:`TRAIN`); returns the model
    (eval mode) and the training record (losses, seconds)."""
    from iea.models.sam import build_sam_from_spec

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = build_sam_from_spec(SPEC)
    data, gen_s = timed(lambda: _Data(sam, seed, TRAIN["images"]))
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng([seed, 1])
    opt = torch.optim.AdamW(sam.parameters(), lr=TRAIN["lr"], weight_decay=TRAIN["weight_decay"])
    steps = TRAIN["steps"]

    def lr_at(step: int) -> float:
        if step < TRAIN["warmup"]:
            return (step + 1) / TRAIN["warmup"]
        return 0.5 * (1 + math.cos(math.pi * (step - TRAIN["warmup"]) / (steps - TRAIN["warmup"])))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    h, w = data.input_size
    size = sam.image_encoder.img_size
    pe = sam.prompt_encoder.get_dense_pe()
    losses = []
    sam.train()

    def run() -> None:
        for step in range(steps):
            idx = torch.randint(len(data.images), (TRAIN["images_per_step"],), generator=gen)
            points, targets, owner, scale = _sample_prompts(data, idx, rng)
            x = sam.preprocess(data.images[idx].float())
            emb = sam.image_encoder(x)
            coords = points[:, None, :]
            labels = torch.ones(len(points), 1, dtype=torch.int64)
            sparse, dense = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
            masks, iou = _predict_masks(sam.mask_decoder, emb[owner], pe, sparse, dense)
            # postprocess_masks' upsampling, at half the input resolution (the loss at full
            # resolution costs 4x more for the same masks on this world's shapes)
            half = size // 2
            logits = F.interpolate(masks[:, 1:], (half, half), mode="bilinear", align_corners=False)
            small = F.interpolate(targets[:, None].float(), (h // 2, w // 2), mode="area")[:, 0]
            loss = _losses(logits[..., : h // 2, : w // 2], iou[:, 1:], small > 0.5, scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(sam.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if log is not None and (step + 1) % 50 == 0:
                log(f"tiny-sam-world: step {step + 1}/{steps} loss {np.mean(losses[-50:]):.3f}")

    _, train_s = timed(run)
    sam.eval()
    record = {
        "steps": steps,
        "data_seconds": round(gen_s, 1),
        "train_seconds": round(train_s, 1),
        "loss_first_50": float(np.mean(losses[:50])),
        "loss_last_50": float(np.mean(losses[-50:])),
    }
    return sam, record


def _spearman(a: list[float], b: list[float]) -> float:
    if len(a) < 3:
        return float("nan")
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / den) if den else float("nan")


def evaluate_sam(sam, seed: int, n: int | None = None, **amg: Any) -> dict[str, Any]:
    """Held-out quality of ``sam`` under the stock ``SamAutomaticMaskGenerator``.

    Scenes are drawn from a seed stream the training never uses (``seed + 10_000``). A gold
    object is found when some mask has IoU >= 0.5 with its visible pixels; ``mean_best_iou``
    averages each object's best IoU; ``spearman`` ranks every returned mask's predicted IoU
    against its true IoU (best over all drawn instances, distractors included). Per kind, the
    mean predicted IoU of the masks that best match that kind's instances.
    """
    from segment_anything import SamAutomaticMaskGenerator

    settings = {**EVAL, **amg}
    n = settings.pop("images") if n is None else n
    settings.pop("images", None)
    gen = SamAutomaticMaskGenerator(sam, **settings)
    found, best_ious, pred, true = 0, [], [], []
    by_kind: dict[str, list[float]] = {}
    masks_per_image = []
    for k in range(n):
        rgb, inst, drawn = scene(seed + 10_000, k, TRAIN["distractors"])
        anns = gen.generate(_jpeg(rgb))
        masks_per_image.append(len(anns))
        segs = [a["segmentation"] for a in anns]
        gold = {i + 1: inst == i + 1 for i in range(len(drawn)) if (inst == i + 1).any()}

        def iou(m, g):
            u = np.logical_or(m, g).sum()
            return float(np.logical_and(m, g).sum() / u) if u else 0.0

        table = np.array([[iou(m, g) for g in gold.values()] for m in segs]).reshape(
            len(segs), len(gold)
        )
        for a, row in zip(anns, table, strict=True):
            pred.append(float(a["predicted_iou"]))
            true.append(float(row.max()) if row.size else 0.0)
        for col, gid in enumerate(gold):
            kind = drawn[gid - 1].kind
            best = float(table[:, col].max()) if len(segs) else 0.0
            if kind == "object":
                best_ious.append(best)
                found += best >= 0.5
            if len(segs) and best >= 0.5:
                by_kind.setdefault(kind, []).append(
                    float(anns[int(table[:, col].argmax())]["predicted_iou"])
                )
    return {
        "images": n,
        "objects": len(best_ious),
        "found_at_0.5": found / max(1, len(best_ious)),
        "mean_best_iou": float(np.mean(best_ious)) if best_ious else 0.0,
        "spearman_pred_true_iou": _spearman(pred, true),
        "masks_per_image": float(np.mean(masks_per_image)),
        "mean_pred_iou_by_kind": {k: float(np.mean(v)) for k, v in sorted(by_kind.items())},
        "generator": settings,
    }


def build(path: str | Path, seed: int, log=None) -> Path:
    """Train ``tiny-sam-world`` for ``seed`` and write ``spec.json``, ``sam.pth`` and
    ``train_report.json`` into ``path`` (the folder layout :func:`iea.models.sam.load_sam`
    reads)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sam, record = train_sam(seed, log)
    torch.save(sam.state_dict(), path / "sam.pth")
    (path / "spec.json").write_text(json.dumps(SPEC, indent=2))
    heldout, eval_s = timed(lambda: evaluate_sam(sam, seed))
    write_report(
        path,
        {
            "model": "tiny-sam-world",
            "seed": seed,
            "train": {**TRAIN, **record},
            "heldout": {**heldout, "seconds": round(eval_s, 1)},
        },
    )
    return path
