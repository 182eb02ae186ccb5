"""The Sentimental Image Interpreter stage: image -> regions -> filters -> interpretations.

Outputs are cached in an artifact store by content:

* segmentation (label map + regions with their features) under
  ``cache/segments/<key>.npz``, key = sha256 of (image bytes' sha256, SAM reference, checkpoint
  name and size, seed, mask-generator settings, L, resize settings, postprocess version);
* each region's interpretation under ``cache/interpretations/<key>.json``, key = sha256 of
  (the region crop's pixels, VLM reference, seed, prompt version, generation length).

Models are loaded lazily, on the first cache miss that needs them: a second run over the same
images loads no model at all. Filtering is never cached; it is microseconds.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iea.config import Settings
from iea.data.images import ImageDecodeError, load_rgb
from iea.keys import stage_code
from iea.models.refs import tiny_identity
from iea.models.sam import TINY_SAM_VERSION
from iea.models.tiny import TINY_BUILDERS, TINY_VERSION
from iea.store import ArtifactStore
from iea.vision import prompts
from iea.vision.filters import RegionFeatures, Thresholds, drop_reasons, laplacian_variances
from iea.vision.interpret import Interpretation, interpret_crops, region_crop
from iea.vision.segment import POSTPROCESS_VERSION, Region, build_mask_generator, segment_image

CACHE_PREFIX = "cache"


@dataclass
class ImageResult:
    """Everything the stage knows about one image (pixel units of the upright original)."""

    image: str
    image_sha256: str
    size: tuple[int, int]
    """``(width, height)`` in pixels."""
    label_map: np.ndarray
    """``H x W`` int32 region ids."""
    regions: list[Region]
    reasons: list[list[str]]
    """Per region, the filters it failed (empty = kept)."""
    interpretations: dict[int, Interpretation]
    """Region id -> interpretation, for kept regions."""
    cache: dict[str, Any] = field(default_factory=dict)
    rgb: np.ndarray | None = field(default=None, repr=False)
    """The decoded ``H x W x 3`` uint8 image (for overlays; not serialised)."""

    @property
    def kept(self) -> list[Region]:
        return [r for r, why in zip(self.regions, self.reasons, strict=True) if not why]

    def to_json(self) -> dict[str, Any]:
        rows = []
        for region, why in zip(self.regions, self.reasons, strict=True):
            interp = self.interpretations.get(region.id)
            rows.append(
                {
                    **region.to_json(),
                    "kept": not why,
                    "dropped_because": why,
                    "description": interp.description if interp else None,
                    "polarity": interp.polarity if interp else None,
                    "score": interp.score if interp else None,
                    "parsed": interp.parsed if interp else None,
                    "text": interp.text if interp else None,
                }
            )
        width, height = self.size
        return {
            "image": self.image,
            "image_sha256": self.image_sha256,
            "width": width,
            "height": height,
            "regions": rows,
            "cache": self.cache,
        }


def segment_regions(rgb: np.ndarray, generate, seg) -> tuple[np.ndarray, list[Region]]:
    """:func:`segment_image` of an ``H x W x 3`` uint8 image with the ``segment`` settings
    ``seg``, its regions carrying their ``laplacian_var`` (the clarity feature): the stage's
    work on a cache miss, without the cache (``generate``: a mask generator's ``generate``)."""
    label_map, regions = segment_image(
        rgb,
        generate,
        seg.num_regions,
        max_side=seg.max_side,
        min_side=seg.min_side,
        min_own_share=seg.min_own_share,
    )
    variances = laplacian_variances(rgb, label_map, regions)
    return label_map, [
        Region(**{**r.to_json(), "bbox": r.bbox, "laplacian_var": v})
        for r, v in zip(regions, variances, strict=True)
    ]


class ImageInterpreter:
    """Runs the stage with the settings' models, caching in ``store``.

    Safe to share between threads: each model is loaded once, and one image's segmentation
    (one ``generate`` of the mask generator) or interpretation (all its VLM batches) runs
    under that model's lock, so images never see each other's model state.
    """

    def __init__(self, settings: Settings, store: ArtifactStore, *, generator=None, vlm=None):
        """``generator`` (a mask generator) and ``vlm`` (anything with ``generate(images,
        prompts, max_new_tokens, batch_size=...)``) replace the settings' models when given."""
        self.settings = settings
        self.store = store
        self._generator = generator
        self._vlm = vlm
        # Flows share one interpreter between threads, and neither model is safe to call from
        # two threads at once: SAM's predictor keeps the current image's features between
        # ``set_image`` and its predictions, and a VLM keeps per-call state during ``generate``
        # (Qwen3-VL's ``rope_deltas`` live on the model). One lock per model makes loading it
        # and one image's generation with it atomic; segmenting one image can still overlap
        # interpreting another.
        self._sam_lock = threading.Lock()
        self._vlm_lock = threading.Lock()

    # ------------------------------------------------------------------ models (lazy)
    @property
    def generator(self):
        with self._sam_lock:
            return self._load_generator()

    def _load_generator(self):
        if self._generator is None:
            from iea.models.sam import load_sam

            seg, rt = self.settings.segment, self.settings.runtime
            sam = load_sam(
                seg.sam, seg.sam_checkpoint, device=rt.device, cache=rt.model_cache, seed=rt.seed
            )
            self._generator = build_mask_generator(sam, seg)
        return self._generator

    def _generate_masks(self, image: np.ndarray) -> list[dict]:
        """SAM's automatic masks of one ``H x W x 3`` uint8 image, the whole ``generate`` call
        under the SAM lock (``set_image`` and every prediction of this image together)."""
        with self._sam_lock:
            return self._load_generator().generate(image)

    @property
    def vlm(self):
        with self._vlm_lock:
            return self._load_vlm()

    def _load_vlm(self):
        if self._vlm is None:
            from iea.models.vlm import VisionLanguageModel

            rt = self.settings.runtime
            self._vlm = VisionLanguageModel.from_ref(
                self.settings.interpreter.model,
                device=rt.device,
                dtype=rt.dtype,
                trust_remote_code=rt.trust_remote_code,
                cache=rt.model_cache,
                seed=rt.seed,
            )
        return self._vlm

    # ------------------------------------------------------------------ keys
    def segmentation_key(self, image_sha256: str) -> str:
        seg, rt = self.settings.segment, self.settings.runtime
        ckpt = seg.sam_checkpoint
        ckpt_id = (
            f"{Path(ckpt).name}:{Path(ckpt).stat().st_size}"
            if ckpt and Path(ckpt).is_file()
            else None
        )
        parts = {
            "image": image_sha256,
            "sam": seg.sam,
            "checkpoint": ckpt_id,
            "seed": rt.seed,
            # a tiny model's weights change with its recipe, not its name
            "tiny_version": _tiny_identity(seg.sam, rt.seed, TINY_SAM_VERSION),
            # points_per_batch only batches the same prompts: not in the key
            "settings": seg.model_dump(
                mode="json", exclude={"sam", "sam_checkpoint", "points_per_batch"}
            ),
            "postprocess": POSTPROCESS_VERSION,
            "code": stage_code("segment"),  # the mask generator's and postprocess's code
        }
        return _digest(parts)

    def interpretation_key(self, crop: np.ndarray) -> str:
        h = hashlib.sha256(crop.tobytes())
        h.update(repr(crop.shape).encode())
        interp, rt = self.settings.interpreter, self.settings.runtime
        return _digest(
            {
                "crop": h.hexdigest(),
                "model": interp.model,
                "tiny_version": _tiny_identity(interp.model, rt.seed, TINY_VERSION),
                "seed": rt.seed,
                "prompt": prompts.PROMPT_VERSION,
                "max_new_tokens": interp.max_new_tokens,
                "dtype": rt.dtype,
                "code": stage_code("interpret"),  # prompts, parsing, generation helpers
            }
        )

    # ------------------------------------------------------------------ stages
    def segment(self, rgb: np.ndarray, image_sha256: str) -> tuple[np.ndarray, list[Region], bool]:
        """``(label_map, regions with laplacian_var, cache hit?)`` for one image."""
        key = f"{CACHE_PREFIX}/segments/{self.segmentation_key(image_sha256)}.npz"
        if self.store.exists(key):
            with np.load(io.BytesIO(self.store.get(key)), allow_pickle=False) as z:
                label_map = z["label_map"].astype(np.int32)
                regions = [Region.from_json(r) for r in json.loads(str(z["regions"]))]
            return label_map, regions, True
        label_map, regions = segment_regions(rgb, self._generate_masks, self.settings.segment)
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            label_map=label_map.astype(np.uint8),
            regions=np.array(json.dumps([r.to_json() for r in regions])),
        )
        self.store.put(key, buf.getvalue())
        return label_map, regions, False

    def interpret(
        self, rgb: np.ndarray, label_map: np.ndarray, regions: list[Region]
    ) -> tuple[dict[int, Interpretation], int]:
        """Interpretations of ``regions`` (cached ones loaded); returns them and the miss count."""
        return self.interpret_many([(rgb, label_map, regions)])[0]

    def interpret_many(
        self, items: list[tuple[np.ndarray, np.ndarray, list[Region]]]
    ) -> list[tuple[dict[int, Interpretation], int]]:
        """Interpretations of the regions of several images: ``items`` holds ``(rgb, label_map,
        regions)`` per image. Cached crops are loaded; the missing crops of all images go to the
        VLM together (batched by size across images, one crop answered once however many
        images show it). Returns, per image, ``(region id -> interpretation, misses)``."""
        per_image = []
        for rgb, label_map, regions in items:
            crops = {r.id: region_crop(rgb, label_map, r) for r in regions}
            keys = {
                rid: f"{CACHE_PREFIX}/interpretations/{self.interpretation_key(c)}.json"
                for rid, c in crops.items()
            }
            per_image.append((crops, keys))
        found: dict[str, Interpretation] = {}
        missing: dict[str, np.ndarray] = {}  # key -> crop, first image's crop for a shared key
        for crops, keys in per_image:
            for rid, k in keys.items():
                if k in found or k in missing:
                    continue
                if self.store.exists(k):
                    found[k] = Interpretation.from_json(json.loads(self.store.get(k)))
                else:
                    missing[k] = crops[rid]
        if missing:
            interp = self.settings.interpreter
            with self._vlm_lock:  # these crops, all batches, as one atomic call
                answers = interpret_crops(
                    self._load_vlm(),
                    list(missing.values()),
                    prompts.INTERPRET_REGION,
                    interp.max_new_tokens,
                    interp.batch_size,
                )
            for k, answer in zip(missing, answers, strict=True):
                self.store.put(k, json.dumps(answer.to_json()).encode())
                found[k] = answer
        out, counted = [], set()
        for _, keys in per_image:
            misses = [k for k in keys.values() if k in missing and k not in counted]
            counted.update(misses)
            out.append(({rid: found[k] for rid, k in keys.items()}, len(misses)))
        return out

    def prepare(self, image: Path, whole: bool = False) -> dict[str, Any]:
        """Decode, segment (or take the whole frame) and filter one image: everything of its
        :class:`ImageResult` but the interpretations, as a dict of its fields (``rgb`` and
        ``label_map`` included). The segmentation comes from the cache when it holds it."""
        rgb = load_rgb(image)
        sha = hashlib.sha256(Path(image).read_bytes()).hexdigest()
        height, width = rgb.shape[:2]
        if whole:
            label_map = np.zeros((height, width), dtype=np.int32)
            regions = [Region(0, (0, 0, width, height), width * height, 1.0, 1.0, True)]
            reasons: list[list[str]] = [[]]
            segmentation = "none"
        else:
            label_map, regions, seg_hit = self.segment(rgb, sha)
            f = self.settings.filters
            reasons = drop_reasons(
                RegionFeatures.of(regions), Thresholds(f.t_size, f.t_clarity, f.t_conf)
            )
            segmentation = "hit" if seg_hit else "miss"
        return dict(
            image=str(image),
            image_sha256=sha,
            size=(width, height),
            label_map=label_map,
            regions=regions,
            reasons=reasons,
            rgb=rgb,
            cache={"segmentation": segmentation},
        )

    def run_many(
        self, images: list[Path], *, whole: bool = False
    ) -> list[ImageResult | ImageDecodeError]:
        """The whole stage for several image files, their missing interpretations in one
        cross-image VLM pass (:meth:`interpret_many`); the results equal :meth:`run`'s
        (or :meth:`run_whole`'s with ``whole``) one image at a time. An image that cannot be
        decoded gets its :class:`ImageDecodeError` in its place, and the others go on. The
        decoded images are all held at once: callers bound ``images``
        (``interpreter.image_batch``)."""
        prepared: list[dict[str, Any] | ImageDecodeError] = []
        for image in images:
            try:
                prepared.append(self.prepare(Path(image), whole))
            except ImageDecodeError as e:
                prepared.append(e)
        ok = [p for p in prepared if not isinstance(p, ImageDecodeError)]
        answers = iter(
            self.interpret_many(
                [
                    (
                        p["rgb"],
                        p["label_map"],
                        [r for r, why in zip(p["regions"], p["reasons"], strict=True) if not why],
                    )
                    for p in ok
                ]
            )
        )
        out: list[ImageResult | ImageDecodeError] = []
        for p in prepared:
            if isinstance(p, ImageDecodeError):
                out.append(p)
                continue
            interpretations, misses = next(answers)
            p["cache"].update(
                interpretations_hit=len(interpretations) - misses, interpretations_miss=misses
            )
            out.append(ImageResult(**p, interpretations=interpretations))
        return out

    def run(self, image: Path) -> ImageResult:
        """The whole stage for one image file.

        Raises:
            ImageDecodeError: the file cannot be decoded (names the file and the reason).
        """
        (result,) = self.run_many([image])
        if isinstance(result, ImageDecodeError):
            raise result
        return result

    def run_whole(self, image: Path) -> ImageResult:
        """No segmentation (the ``no_segmentation`` ablation): the whole image is the one
        region (id 0, the full frame), interpreted like any region; no filter applies (there is
        no SAM score, and the frame is neither small nor a cut-out).

        Raises:
            ImageDecodeError: the file cannot be decoded (names the file and the reason).
        """
        (result,) = self.run_many([image], whole=True)
        if isinstance(result, ImageDecodeError):
            raise result
        return result


def write_outputs(result: ImageResult, out: Path) -> dict[str, Path]:
    """Write ``regions.json``, ``regions.png`` (label map: pixel value = region id) and
    ``overlay.png`` into ``out``; returns their paths."""
    from iea.vision.overlay import draw_overlay, label_map_png

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "regions": out / "regions.json",
        "labels": out / "regions.png",
        "overlay": out / "overlay.png",
    }
    paths["regions"].write_text(json.dumps(result.to_json(), indent=2) + "\n")
    label_map_png(result.label_map).save(paths["labels"])
    rgb = result.rgb if result.rgb is not None else load_rgb(Path(result.image))
    draw_overlay(
        rgb, result.label_map, result.regions, result.reasons, result.interpretations
    ).save(paths["overlay"])
    return paths


def _tiny_identity(ref: str, seed: int, legacy: int) -> str | int | None:
    """What a tiny reference's weights are (its cache folder name, which carries its recipe's
    source hash); None for real models, whose name and checkpoint say it."""
    if ref in TINY_BUILDERS:
        return tiny_identity(ref, seed=seed)
    return legacy if ref.startswith("tiny-") else None


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
