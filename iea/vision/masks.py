"""A faster automatic mask generator: SAM's point grid, filtered at low resolution.

``SamAutomaticMaskGenerator`` upsamples every mask logit of every point prompt (3 per point) to
the full image before it filters, then encodes the survivors as run lengths and decodes them
again. On the demo's tiny SAM more than half of its time is that upsampling. This generator
makes the same decisions in another order:

1. one ``set_image``; the point grid in batches of ``points_per_batch`` through the prompt
   encoder and mask decoder (what ``SamPredictor.predict_torch`` runs), keeping the
   **low-resolution** logits (``4 x`` the image embedding's side, e.g. 256 x 256 for ViT-H);
2. the predicted-IoU cut, exactly as stock;
3. a stability pre-filter on the low-resolution logits (cropped to the image's part of the
   padded input): a mask whose low-resolution stability is more than ``stability_margin``
   under ``stability_score_thresh`` is dropped without upsampling;
4. the rest are upsampled exactly as stock (``Sam.postprocess_masks``), in chunks of
   ``points_per_batch``, and get stock's exact stability score, cut and box; only the boxes and
   scores are kept;
5. box NMS as stock (``batched_nms`` over the same boxes and scores in the same order);
6. only the masks NMS keeps are upsampled again and thresholded, as boolean arrays (no run
   lengths).

So the output (records in stock's order, with stock's keys) equals stock's except where step 3
drops a mask that stock's full-resolution stability would have kept (a mask whose stability
rises by more than ``stability_margin`` with resolution); ``benchmarks/interpret.py`` counts
such differences. Not supported (use the stock generator): ``crop_n_layers`` > 0 and
``min_mask_region_area`` > 0.

Shapes: the image is ``H x W x 3`` uint8; a record's ``segmentation`` is ``H x W`` bool,
``bbox`` is ``[x, y, w, h]`` in pixels, scores are floats.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class FastMaskGenerator:
    """Drop-in for ``SamAutomaticMaskGenerator(sam, ...).generate`` (single crop, no
    small-region removal); see the module docstring for what differs."""

    def __init__(
        self,
        sam: Any,
        *,
        points_per_side: int = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        stability_margin: float = 0.1,
    ):
        from segment_anything import SamPredictor
        from segment_anything.utils.amg import build_point_grid

        if stability_margin < 0:
            raise ValueError(f"stability_margin must be >= 0, got {stability_margin}")
        self.predictor = SamPredictor(sam)
        self.point_grid = build_point_grid(points_per_side)  # N x 2, (x, y) in [0, 1]
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.stability_margin = stability_margin
        self.last_stats: dict[str, int] = {}
        """Counts of the last ``generate``: prompts' masks, after the IoU cut, upsampled for
        scoring, after the stability cut, kept by NMS."""

    @torch.no_grad()
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Mask records of an ``H x W x 3`` uint8 image, as ``SamAutomaticMaskGenerator``."""
        from segment_anything.utils.amg import calculate_stability_score
        from torchvision.ops.boxes import batched_nms

        height, width = image.shape[:2]
        predictor, model = self.predictor, self.predictor.model
        predictor.set_image(image)
        input_size, original_size = predictor.input_size, predictor.original_size
        points = self.point_grid * np.array([[width, height]])
        threshold, offset = model.mask_threshold, self.stability_score_offset

        low, iou, pts = [], [], []
        for start in range(0, len(points), self.points_per_batch):
            batch = points[start : start + self.points_per_batch]
            coords = predictor.transform.apply_coords(batch, original_size)
            coords = torch.as_tensor(coords, device=predictor.device, dtype=torch.float)
            labels = torch.ones(len(batch), dtype=torch.int, device=predictor.device)
            sparse, dense = model.prompt_encoder(
                points=(coords[:, None, :], labels[:, None]), boxes=None, masks=None
            )
            logits, scores = model.mask_decoder(
                image_embeddings=predictor.features,
                image_pe=model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
            low.append(logits.flatten(0, 1))
            iou.append(scores.flatten(0, 1))
            pts.append(np.repeat(batch, logits.shape[1], axis=0))
        low_res, iou_preds = torch.cat(low), torch.cat(iou)
        point_coords = np.concatenate(pts)
        stats = {"masks": len(low_res)}

        keep = torch.ones(len(low_res), dtype=torch.bool, device=low_res.device)
        if self.pred_iou_thresh > 0.0:
            keep &= iou_preds > self.pred_iou_thresh
        stats["after_iou"] = int(keep.sum())
        if self.stability_score_thresh > 0.0:
            side = model.image_encoder.img_size
            rows = -(-input_size[0] * low_res.shape[-2] // side)  # the image's part, rounded up
            cols = -(-input_size[1] * low_res.shape[-1] // side)
            rough = calculate_stability_score(low_res[:, :rows, :cols], threshold, offset)
            keep &= rough >= self.stability_score_thresh - self.stability_margin
        ids, boxes, stability = self._decide_full(low_res, torch.nonzero(keep).flatten())
        stats["upsampled"] = int(keep.sum())
        stats["after_stability"] = len(ids)
        if not len(ids):
            stats["kept"] = 0
            self.last_stats = stats
            predictor.reset_image()
            return []
        order = batched_nms(
            boxes.float(),
            iou_preds[ids],
            torch.zeros(len(ids), device=boxes.device),
            iou_threshold=self.box_nms_thresh,
        )
        ids, boxes, stability = ids[order], boxes[order], stability[order]
        stats["kept"] = len(ids)
        self.last_stats = stats

        records = []
        for start in range(0, len(ids), self.points_per_batch):
            chunk = ids[start : start + self.points_per_batch]
            masks = (self._full(low_res, chunk) > threshold).cpu().numpy()
            for j, mask in enumerate(masks):
                k = start + j
                x0, y0, x1, y1 = (int(v) for v in boxes[k].tolist())
                records.append(
                    {
                        "segmentation": mask,
                        "area": int(mask.sum()),
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "predicted_iou": float(iou_preds[chunk[j]]),
                        "point_coords": [point_coords[int(chunk[j])].tolist()],
                        "stability_score": float(stability[k]),
                        "crop_box": [0, 0, width, height],
                    }
                )
        predictor.reset_image()
        return records

    def _full(self, low_res: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Full-resolution logits of masks ``ids`` (``len(ids) x H x W``), as stock."""
        p = self.predictor
        return p.model.postprocess_masks(low_res[ids][:, None], p.input_size, p.original_size)[:, 0]

    def _decide_full(self, low_res: torch.Tensor, idx: torch.Tensor):
        """Stock's stability cut and boxes on the full-resolution logits of masks ``idx``
        (upsampled in chunks, only the scores and boxes kept): (ids, boxes, stability)."""
        from segment_anything.utils.amg import batched_mask_to_box, calculate_stability_score

        threshold = self.predictor.model.mask_threshold
        kept, boxes, stability = [], [], []
        for start in range(0, len(idx), self.points_per_batch):
            ids = idx[start : start + self.points_per_batch]
            masks = self._full(low_res, ids)
            stab = calculate_stability_score(masks, threshold, self.stability_score_offset)
            good = (
                stab >= self.stability_score_thresh
                if self.stability_score_thresh > 0.0
                else torch.ones_like(stab, dtype=torch.bool)
            )
            kept.append(ids[good])
            stability.append(stab[good])
            boxes.append(batched_mask_to_box(masks[good] > threshold))
        if not kept:
            empty = torch.zeros(0, dtype=torch.long, device=low_res.device)
            return empty, torch.zeros((0, 4), device=low_res.device), torch.zeros(0)
        return torch.cat(kept), torch.cat(boxes), torch.cat(stability)
