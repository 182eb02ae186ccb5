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
4. the rest get stock's stability score, cut and box from their full-resolution logits, and
   only the boxes and scores are kept. On the CPU each mask is upsampled only over its
   **window**: ``Sam.postprocess_masks``' two bilinear resizes are linear and separable, so
   they are one matrix product ``A_y @ low @ A_x.T`` (``A_y``: ``H x side`` rows of weights,
   read off the resizes themselves), and since the weights are non-negative and sum to one, a
   pixel can exceed ``threshold - offset`` (the stability's lower cut, below the mask and the
   upper cut) only where a low-resolution logit it reads does. Outside the window every
   pixel is at or below both cuts, so the counts and the box come from the window alone. On
   other devices the masks are upsampled whole, in chunks of ``points_per_batch``, exactly as
   stock (one host sync an image);
5. box NMS as stock (``batched_nms`` over the same boxes and scores in the same order);
6. only the masks NMS keeps are upsampled again (the same way) and thresholded, as boolean
   arrays (no run lengths).

So the output (records in stock's order, with stock's keys) equals stock's except (a) where
step 3 drops a mask that stock's full-resolution stability would have kept (a mask whose
stability rises by more than ``stability_margin`` with resolution), and (b) on the CPU, at
pixels whose logit lies within float32 rounding of a cut (the matrix product sums in another
order than the resizes: up to 1.5e-5 apart on logits up to 80 in magnitude, about 3 pixels in a
million within that distance of a cut on the demo world). ``benchmarks/interpret.py`` counts
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
        self._matrices: tuple[torch.Tensor, ...] = ()
        self._matrices_key: tuple | None = None
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
        """Full-resolution logits of masks ``ids`` (``len(ids) x H x W``); on the CPU only
        their windows (outside, ``-1e4``: below every cut)."""
        p = self.predictor
        if low_res.device.type != "cpu":
            return p.model.postprocess_masks(low_res[ids][:, None], p.input_size, p.original_size)[
                :, 0
            ]
        x = low_res[ids]
        out = torch.full((len(ids), *p.original_size), -1e4, dtype=low_res.dtype)
        for k, w in enumerate(self._windows(x)):
            if w is not None:
                out[k, w[0] : w[1], w[2] : w[3]] = torch.from_numpy(self._window_logits(x[k], w))
        return out

    def _resize_matrices(self, side: int) -> tuple[torch.Tensor, ...]:
        """``(A_y, A_x, first_y, last_y, first_x, last_x)`` for low-resolution masks of
        ``side x side``: ``A_y @ low @ A_x.T`` is ``Sam.postprocess_masks`` (``A_y``:
        ``H x side``, ``A_x``: ``W x side``); ``first``/``last``: the first and last
        low-resolution row (column) each output row (column) reads. Cached per image size."""
        p = self.predictor
        key = (side, p.input_size, p.original_size)
        if self._matrices_key != key:
            img = p.model.image_encoder.img_size
            a_y = _resize_matrix(side, img, p.input_size[0], p.original_size[0])
            a_x = _resize_matrix(side, img, p.input_size[1], p.original_size[1])
            self._matrices = (a_y, a_x, *_first_last(a_y > 0), *_first_last(a_x > 0))
            self._matrices_key = key
        return self._matrices

    def _windows(self, x: torch.Tensor) -> list[list[int] | None]:
        """Per mask of ``x`` (``n x side x side`` low-resolution logits, CPU): the output
        rows ``r0:r1`` and columns ``c0:c1`` where a pixel can exceed ``threshold -
        offset``, and the low-resolution rows ``i0:i1`` and columns ``j0:j1`` they read, as
        ``[r0, r1, c0, c1, i0, i1, j0, j1]``; None where no pixel can."""
        _, _, first_y, last_y, first_x, last_x = self._resize_matrices(x.shape[-1])
        hot = x > self.predictor.model.mask_threshold - self.stability_score_offset
        rows, cols = hot.any(2), hot.any(1)  # n x side each
        (lo_i, hi_i), (lo_j, hi_j) = _first_last(rows), _first_last(cols)
        # output rows reading a hot row: their last read >= lo_i and first read <= hi_i
        r0, r1 = torch.searchsorted(last_y, lo_i), torch.searchsorted(first_y, hi_i, right=True)
        c0, c1 = torch.searchsorted(last_x, lo_j), torch.searchsorted(first_x, hi_j, right=True)
        some = rows.any(1) & (r1 > r0) & (c1 > c0)
        i0 = first_y[r0.clamp(max=len(first_y) - 1)]
        i1 = last_y[(r1 - 1).clamp(min=0)] + 1
        j0 = first_x[c0.clamp(max=len(first_x) - 1)]
        j1 = last_x[(c1 - 1).clamp(min=0)] + 1
        windows = torch.stack([r0, r1, c0, c1, i0, i1, j0, j1], 1).tolist()  # one sync
        return [w if ok else None for w, ok in zip(windows, some.tolist(), strict=True)]

    def _window_logits(self, low: torch.Tensor, w: list[int]) -> np.ndarray:
        """The full-resolution logits of one ``side x side`` mask over its window ``w``."""
        a_y, a_x = self._matrices[0], self._matrices[1]
        r0, r1, c0, c1, i0, i1, j0, j1 = w
        return (a_y[r0:r1, i0:i1] @ low[i0:i1, j0:j1] @ a_x[c0:c1, j0:j1].T).numpy()

    def _decide_full(self, low_res: torch.Tensor, idx: torch.Tensor):
        """Stock's stability cut and boxes on the full-resolution logits of masks ``idx``
        (only the scores and boxes kept): (ids, boxes, stability)."""
        if low_res.device.type != "cpu":
            return self._decide_upsampled(low_res, idx)
        threshold, offset = self.predictor.model.mask_threshold, self.stability_score_offset
        x = low_res[idx]
        inter, union, boxes = [], [], []
        for k, w in enumerate(self._windows(x)):
            box = (0, 0, 0, 0)  # stock's box of an empty mask
            if w is None:
                inter.append(0)
                union.append(0)
            else:
                y = self._window_logits(x[k], w)
                inter.append(int(np.count_nonzero(y > threshold + offset)))
                union.append(int(np.count_nonzero(y > threshold - offset)))
                mask = y > threshold
                rows = np.flatnonzero(mask.any(1))
                if len(rows):
                    cols = np.flatnonzero(mask.any(0))
                    box = (w[2] + cols[0], w[0] + rows[0], w[2] + cols[-1], w[0] + rows[-1])
            boxes.append(box)
        # int32 / int32 as stock's calculate_stability_score: 0 / 0 is nan
        stability = torch.tensor(inter, dtype=torch.int32) / torch.tensor(union, dtype=torch.int32)
        box_t = torch.tensor(boxes, dtype=torch.long).reshape(-1, 4)
        good = (
            stability >= self.stability_score_thresh
            if self.stability_score_thresh > 0.0
            else torch.ones_like(stability, dtype=torch.bool)
        )
        return idx[good], box_t[good], stability[good]

    def _decide_upsampled(self, low_res: torch.Tensor, idx: torch.Tensor):
        """:meth:`_decide_full` off the CPU: whole masks upsampled in chunks, as stock."""
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


def _resize_matrix(side: int, img_size: int, used: int, out: int) -> torch.Tensor:
    """``out x side`` float32 weights of ``Sam.postprocess_masks`` along one axis: bilinear
    ``side -> img_size``, keep the first ``used`` (the image's part of the padded input),
    bilinear ``used -> out``; read off the same two ``F.interpolate`` calls on the identity."""
    import torch.nn.functional as F

    eye = torch.eye(side, dtype=torch.float32)[None, None]
    a = F.interpolate(eye, (img_size, side), mode="bilinear", align_corners=False)[..., :used, :]
    a = F.interpolate(a, (out, side), mode="bilinear", align_corners=False)
    return a[0, 0].contiguous()


def _first_last(flags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the first and of the last True per row of a 2-D bool tensor (0 and the last
    index for a row without one). For a resize matrix's non-zero weights: the first and last
    column each output row reads, both non-decreasing down the rows."""
    first = flags.int().argmax(1)
    last = flags.shape[1] - 1 - flags.flip(1).int().argmax(1)
    return first.contiguous(), last.contiguous()
