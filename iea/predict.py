"""Inference for one tweet: image + text -> aspect-polarity pairs, each with the region backing it.

:class:`JmasaPredictor` chains the stages as training did: the interpreter (SAM regions, the
filters, ``E`` per kept region; cached by content), the aligner (each region -> a phrase span),
the Nearest-to-Match Instruction of the model's ablation, and the JMASA model's answer parsed
onto the tweet's tokens. A pair is backed by every aligned region whose phrase span overlaps the
aspect's span.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from iea.config import Settings
from iea.data.records import Tweet, base_id
from iea.jmasa import TweetInput, align_regions, jmasa_examples, predict, tweet_inputs
from iea.models.finetune import load_trained

STAGE_FILE = "iea_stage.json"
"""Written next to a trained model: ``{"stage": "jmasa" | "aligner", "ablation": ...}``."""

NEEDS_REGIONS = frozenset({"full", "no_interpretation", "no_nmi", "no_segmentation"})
"""Ablations whose instructions hold image regions (interpreted and aligned)."""
WHOLE_IMAGE = frozenset({"no_segmentation"})
"""Ablations without SAM: the whole image is the one region, interpreted and aligned."""
_DATA_URI = re.compile(r"data:image/([a-z]+);base64,", re.IGNORECASE)
_SUFFIX = {
    "png": ".png",
    "jpeg": ".jpg",
    "jpg": ".jpg",
    "gif": ".gif",
    "webp": ".webp",
    "bmp": ".bmp",
}


def write_stage(model_dir: str | Path, stage: str, **extra: Any) -> None:
    Path(model_dir, STAGE_FILE).write_text(json.dumps({"stage": stage, **extra}, indent=2))


def read_stage(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir, STAGE_FILE)
    if not path.is_file():
        raise ValueError(f"{model_dir}: no {STAGE_FILE}: not a model trained by iea")
    return json.loads(path.read_text())


class JmasaPredictor:
    """Loads the JMASA model (and its aligner) once; :meth:`predict` answers one tweet,
    :meth:`predict_many` several in batches.

    Args:
        settings: the resolved settings the model was trained with (interpreter, filters,
            runtime, store for the interpreter's cache).
        jmasa_dir: a trained JMASA model folder (:func:`iea.models.finetune.save_trained`).
        aligner_dir: the aligner it was trained with (needed by region ablations).
    """

    def __init__(self, settings: Settings, jmasa_dir: str | Path, aligner_dir: str | Path | None):
        self.settings = settings
        stage = read_stage(jmasa_dir)
        if stage["stage"] != "jmasa":
            raise ValueError(f"{jmasa_dir} is a {stage['stage']} model, not a JMASA model")
        self.ablation = stage.get("ablation", "full")
        rt = settings.runtime
        self.model, self.processor = load_trained(jmasa_dir, device=rt.device, cache=rt.model_cache)
        self.aligner = None
        if self.ablation in NEEDS_REGIONS:
            if aligner_dir is None:
                raise ValueError(f"the {self.ablation!r} model needs its aligner (none given)")
            self.aligner = load_trained(aligner_dir, device=rt.device, cache=rt.model_cache)
        self._interpreter = None

    @property
    def interpreter(self):
        if self._interpreter is None:
            from iea.store import open_store
            from iea.vision.interpreter import ImageInterpreter

            self._interpreter = ImageInterpreter(self.settings, open_store(self.settings.store))
        return self._interpreter

    def predict(self, image: str | Path, text: str) -> dict[str, Any]:
        """Pairs for one tweet.

        Args:
            image: the image file.
            text: the tweet (tokenised on whitespace, as the datasets are).

        Returns:
            ``{"text", "pairs": [{"term", "polarity", "from", "to", "regions": [{"region_id",
            "bbox" [x, y, w, h], "description"}]}], "output", "parsed", "ablation",
            "regions": [...aligned regions...]}``.

        Raises:
            ValueError: empty text. ``ImageDecodeError``: the image cannot be read.
        """
        (answer,) = self.predict_many([(image, text)])
        if isinstance(answer, Exception):
            raise answer
        return answer

    def predict_many(
        self, requests: Sequence[tuple[str | Path, str]]
    ) -> list[dict[str, Any] | Exception]:
        """:meth:`predict` for several ``(image, text)`` requests, batched: their images
        interpreted in one cross-image pass (per folder), every region aligned in one batched
        generation, and every instruction answered in batches of ``jmasa.train.eval_batch_size``
        (the answers equal :meth:`predict`'s one by one: greedy generation, batch-invariant).

        Returns:
            Per request, in order, its answer or the exception that request alone raised
            (``ValueError`` for an empty text, ``ImageDecodeError`` for an image that cannot be
            read): one bad request never fails the others.
        """
        from iea.data.images import ImageDecodeError

        out: list[dict[str, Any] | Exception | None] = [None] * len(requests)
        by_folder: dict[Path, list[tuple[int, Tweet]]] = {}
        for i, (image, text) in enumerate(requests):
            tokens = tuple(text.split())
            if not tokens:
                out[i] = ValueError("text is empty")
                continue
            image = Path(image)
            tweet = Tweet(base_id(image.name, tokens), tokens, image.name)
            by_folder.setdefault(image.parent, []).append((i, tweet))
        regions = self.ablation in NEEDS_REGIONS
        interpreter = self.interpreter if regions else None
        whole = self.ablation in WHOLE_IMAGE
        order: list[int] = []
        inputs: list[TweetInput] = []
        for folder, items in by_folder.items():
            tweets = [t for _, t in items]
            try:
                got = tweet_inputs(tweets, folder, interpreter, whole_image=whole)
            except ImageDecodeError:  # find which: each alone, the others go on
                got = []
                for i, t in items:
                    try:
                        got.extend(tweet_inputs([t], folder, interpreter, whole_image=whole))
                    except ImageDecodeError as e:
                        out[i] = e
            for i, _ in items:
                if out[i] is None:
                    order.append(i)
            inputs.extend(got)
        aligned: list[list[Any]] = [[] for _ in inputs]
        if inputs and regions and self.aligner is not None:
            aligned = align_regions(*self.aligner, inputs)
        examples, _ = jmasa_examples(inputs, aligned, ablation=self.ablation)
        t = self.settings.jmasa.train
        rows = (
            predict(
                self.model,
                self.processor,
                examples,
                [x.tweet for x in inputs],
                max_new_tokens=t.max_new_tokens,
                batch_size=t.eval_batch_size,
            )
            if inputs
            else []
        )
        for i, item, row, regs in zip(order, inputs, rows, aligned, strict=True):
            out[i] = self._answer(requests[i][1], item.tweet.tokens, row, regs)
        return out  # type: ignore[return-value]  # every slot is filled

    def _answer(
        self, text: str, tokens: tuple[str, ...], row: dict[str, Any], aligned: list[Any]
    ) -> dict[str, Any]:
        pairs = []
        for a in row["aspects"]:
            backing = [
                {"region_id": r.region_id, "bbox": list(r.bbox), "description": r.description}
                for r in aligned
                if r.word_start < a["to"] and a["from"] < r.word_end
            ]
            term = " ".join(tokens[a["from"] : a["to"]])
            pairs.append({"term": term, **a, "regions": backing})
        return {
            "text": text,
            "pairs": pairs,
            "output": row["output"],
            "parsed": row["parsed"],
            "ablation": self.ablation,
            "regions": [
                {
                    "region_id": r.region_id,
                    "bbox": list(r.bbox),
                    "phrase": " ".join(tokens[r.word_start : r.word_end]),
                    "description": r.description,
                }
                for r in aligned
            ],
        }


def image_data_uri(path: str | Path) -> str:
    """The image file as a ``data:image/<type>;base64,...`` URI: an image that travels inside
    a request (or a registered version's input example) instead of as a path on one machine.

    Raises:
        ValueError: the file's suffix is not an image type :func:`materialize_image` reads.
    """
    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    if kind not in _SUFFIX:
        raise ValueError(f"{path}: not an image suffix ({', '.join(sorted(_SUFFIX))})")
    kind = "jpeg" if kind == "jpg" else kind
    return f"data:image/{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def materialize_image(value: str, folder: str | Path) -> Path:
    """``value`` as an image file: a path is returned as it is; a ``data:image/<type>;base64,``
    URI is decoded once into ``folder/<first 16 hex of the bytes' SHA-256><suffix>`` (the same
    image, the same file, so the interpreter's content cache holds across requests).

    Raises:
        ValueError: a ``data:`` value that is not a base64 image URI, or not valid base64.
    """
    if not value.startswith("data:"):
        return Path(value)
    m = _DATA_URI.match(value)
    if m is None or m.group(1).lower() not in _SUFFIX:
        raise ValueError(f"image {value[:40]!r}...: not a data:image/<png|jpeg|...>;base64 URI")
    try:
        raw = base64.b64decode(value[m.end() :], validate=True)
    except ValueError as e:
        raise ValueError(f"image data URI: not valid base64 ({e})") from None
    out = Path(folder) / (hashlib.sha256(raw).hexdigest()[:16] + _SUFFIX[m.group(1).lower()])
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".partial")
        tmp.write_bytes(raw)
        tmp.replace(out)
    return out


def draw_pairs(image: str | Path, result: dict[str, Any]) -> Image.Image:
    """The image with each aligned region boxed and labelled with its phrase and, when a pair
    is backed by it, the pair (``David Beckham <POS>``)."""
    im = Image.open(image).convert("RGB")
    draw = ImageDraw.Draw(im)
    colours = {"POS": (40, 200, 60), "NEU": (90, 110, 220), "NEG": (220, 40, 40)}
    backed = {
        reg["region_id"]: p for p in result["pairs"] for reg in p["regions"]
    }  # region -> the pair it backs
    for reg in result["regions"]:
        x, y, w, h = reg["bbox"]
        pair = backed.get(reg["region_id"])
        colour = colours[pair["polarity"]] if pair else (255, 255, 0)
        draw.rectangle((x, y, x + w - 1, y + h - 1), outline=colour, width=3)
        label = f"{pair['term']} <{pair['polarity']}>" if pair else reg["phrase"]
        draw.text((x + 4, y + 4), label, fill=colour)
    return im
