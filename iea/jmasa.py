"""Stages 3b-5 on tweets: align kept regions to phrases, build the NMI examples, predict, score.

Per tweet the upstream stages give the whole image, its kept regions (crops, bboxes) and each
region's description ``E`` (:mod:`iea.vision.interpreter`). The aligner maps each region to a
phrase span of the tweet or to "no phrase" (:mod:`iea.align.aligner`); regions with a phrase
become :class:`iea.nmi.AlignedRegion` and go into the Nearest-to-Match Instruction
(:mod:`iea.nmi`), which the JMASA VLM learns to answer with the aspect-polarity pairs
(:func:`iea.metrics.format_pairs`). Predictions are parsed back onto the tweet's tokens and
scored with :func:`iea.metrics.score`.

Everything here is model-agnostic: a model is ``(model, processor)`` as loaded by
:func:`iea.models.refs.load_vlm`, run through :mod:`iea.models.finetune`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from iea.align.aligner import AlignedSpan, decode_answer, example_for_region
from iea.data.records import Tweet
from iea.keys import stage_code
from iea.metrics import parse_prediction, score
from iea.models.finetune import Example, generate, pixels_digest
from iea.nmi import AlignedRegion, ImagePart, Instruction, build_instruction
from iea.progress import report


@dataclass(frozen=True)
class RegionView:
    """One kept region of a tweet's image: id, bbox ``[x, y, w, h]`` (pixels), crop, ``E``."""

    region_id: int
    bbox: tuple[int, int, int, int]
    crop: Image.Image = field(repr=False)
    description: str


@dataclass(frozen=True)
class TweetInput:
    """A tweet with its image and kept regions (what the interpreter gives)."""

    tweet: Tweet
    image: Image.Image = field(repr=False)
    regions: tuple[RegionView, ...] = ()


def tweet_inputs(
    tweets: Sequence[Tweet],
    images_dir: str | Path,
    interpreter: Any | None,
    *,
    whole_image: bool = False,
    image_batch: int | None = None,
    lazy: bool = False,
) -> Sequence[TweetInput]:
    """Load each tweet's image and, with an ``interpreter`` (:class:`ImageInterpreter`), its
    kept regions: masked crops, bboxes and descriptions ``E`` (cached by the interpreter).
    With ``whole_image`` (the ``no_segmentation`` ablation) the whole image is the one region
    (:meth:`ImageInterpreter.run_whole`).

    Images are loaded once per image id (tweets may share one); with an interpreter,
    ``image_batch`` images at a time (default: its ``interpreter.image_batch``) have their
    missing region crops interpreted in one cross-image VLM pass
    (:meth:`ImageInterpreter.run_many`).

    With ``lazy``, every image is still read and interpreted here (so a bad image raises
    here), but what comes back is a :class:`LazyTweetInputs`: it keeps each kept region's
    description by region id (bytes per tweet) and decodes the image and cuts the crops again
    when an item is read, so no tweet's image is held beyond the last few read. The items
    equal the eager list's.

    Raises:
        iea.data.images.ImageDecodeError: an image is missing or cannot be decoded (named).
    """
    from iea.data.images import ImageDecodeError, load_rgb

    images_dir = Path(images_dir)
    by_image: dict[str, tuple[Image.Image, tuple[RegionView, ...]]] = {}
    described: dict[str, dict[int, str]] = {}  # lazy: image id -> kept region id -> E
    ids = list(dict.fromkeys(t.image_id for t in tweets))
    if interpreter is None:
        for n, image_id in enumerate(ids, 1):
            rgb = load_rgb(images_dir / image_id)
            if not lazy:
                by_image[image_id] = (Image.fromarray(rgb), ())
            report("load images", n, len(ids))
    else:
        step = image_batch or interpreter.settings.interpreter.image_batch
        done = 0
        for start in range(0, len(ids), step):
            group = ids[start : start + step]
            results = interpreter.run_many([images_dir / i for i in group], whole=whole_image)
            for image_id, res in zip(group, results, strict=True):
                if isinstance(res, ImageDecodeError):
                    raise res
                if lazy:
                    described[image_id] = {r.id: res.interpretations[r.id].text for r in res.kept}
                else:
                    by_image[image_id] = (Image.fromarray(res.rgb), region_views(res, res.kept))
            done += len(group)
            report("interpret images", done, len(ids))
    if lazy:
        return LazyTweetInputs(tweets, images_dir, interpreter, described, whole_image=whole_image)
    return [TweetInput(t, *by_image[t.image_id]) for t in tweets]


class LazyTweetInputs(Sequence[TweetInput]):
    """:func:`tweet_inputs`' items, each built when read (see its ``lazy``).

    Holds the tweets, and per image the kept regions' descriptions by region id; reading an
    item decodes its image, takes its segmentation from the interpreter's cache, filters it
    with the same settings and cuts the crops (the last few images are kept, so tweets that
    share an image and a batch's neighbours decode it once). A slice is a ``LazyTweetInputs``.
    """

    KEEP = 8  # images kept decoded (a batch's worth)

    def __init__(
        self,
        tweets: Sequence[Tweet],
        images_dir: Path,
        interpreter: Any | None,
        described: dict[str, dict[int, str]],
        *,
        whole_image: bool = False,
    ):
        self.tweets = list(tweets)
        self.images_dir = Path(images_dir)
        self.interpreter = interpreter
        self.described = described
        self.whole_image = whole_image
        self._load = functools.lru_cache(maxsize=self.KEEP)(self._image)

    def __len__(self) -> int:
        return len(self.tweets)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return LazyTweetInputs(
                self.tweets[i],
                self.images_dir,
                self.interpreter,
                self.described,
                whole_image=self.whole_image,
            )
        tweet = self.tweets[i]
        return TweetInput(tweet, *self._load(tweet.image_id))

    def _image(self, image_id: str) -> tuple[Image.Image, tuple[RegionView, ...]]:
        from iea.data.images import load_rgb
        from iea.data.regions import region_crop

        path = self.images_dir / image_id
        if self.interpreter is None:
            return Image.fromarray(load_rgb(path)), ()
        p = self.interpreter.prepare(path, self.whole_image)
        text = self.described[image_id]
        kept = [r for r, why in zip(p["regions"], p["reasons"], strict=True) if not why]
        if [r.id for r in kept] != list(text):
            raise RuntimeError(
                f"{path}: its kept regions changed since it was interpreted "
                f"({[r.id for r in kept]} now, {list(text)} then): the segmentation cache or "
                "the filter settings changed underneath"
            )
        rgb, label_map = p["rgb"], p["label_map"]
        views = tuple(
            RegionView(
                r.id, tuple(r.bbox), Image.fromarray(region_crop(rgb, label_map, r)), text[r.id]
            )
            for r in kept
        )
        return Image.fromarray(rgb), views


def region_views(res: Any, regions: Sequence[Any]) -> tuple[RegionView, ...]:
    """``regions`` of an interpreter ``ImageResult`` as views: masked crop and description."""
    from iea.data.regions import region_crop

    return tuple(
        RegionView(
            r.id,
            tuple(r.bbox),
            Image.fromarray(region_crop(res.rgb, res.label_map, r)),
            res.interpretations[r.id].text,
        )
        for r in regions
    )


def to_example(parts: Sequence[Any], key: str, target: str, images: dict) -> Example:
    """An engine :class:`Example` from builder parts: ``images`` maps ``None`` (the whole
    image) and each region id to its PIL image."""
    content, ims = [], []
    for part in parts:
        if isinstance(part, ImagePart):
            content.append({"type": "image"})
            ims.append(images[part.region_id if part.kind == "region" else None])
        else:
            content.append({"type": "text", "text": part.text})
    return Example(key, tuple(content), tuple(ims), target)


def align_regions(
    model: Any,
    processor: Any,
    items: Sequence[TweetInput],
    *,
    max_new_tokens: int = 24,
    batch_size: int = 8,
    store: Any | None = None,
    aligner_key: str | None = None,
    chunk: int = 64,
) -> list[list[AlignedRegion]]:
    """Ask the aligner, for every kept region of every tweet, which phrase it shows.

    Args:
        store, aligner_key: with both, each answer is cached in ``store`` under
            ``cache/align/<aligner_key>/<sha256 of image, crop, E, text>.json``, so a rerun
            (or another ablation) asks the aligner only about regions it has not seen.
        chunk: tweets whose region questions are built and answered together (each item is
            read once; only a chunk's images are held, whatever the number of tweets).

    Returns:
        Per tweet, the regions with a valid phrase span (an invalid or "none" answer drops the
        region, never raises), as :class:`AlignedRegion` in region order.
    """
    out: list[list[AlignedRegion]] = []
    n = len(items)
    for start in range(0, n, chunk):
        part = [items[t] for t in range(start, min(n, start + chunk))]
        out.extend(
            _align_part(model, processor, part, max_new_tokens, batch_size, store, aligner_key)
        )
        report("align regions", len(out), n)
    return out


def _align_part(
    model: Any,
    processor: Any,
    items: Sequence[TweetInput],
    max_new_tokens: int,
    batch_size: int,
    store: Any | None,
    aligner_key: str | None,
) -> list[list[AlignedRegion]]:
    """:func:`align_regions` on a list of items."""
    jobs: list[tuple[int, RegionView, str | None]] = []
    examples: list[Example] = []
    answers: dict[int, str] = {}
    cached = store is not None and aligner_key is not None
    code = stage_code("align_answers") if cached else ""  # how questions are asked and read
    for t, item in enumerate(items):
        whole = pixels_digest(item.image) if cached else ""
        for region in item.regions:
            key = None
            if cached:
                h = hashlib.sha256(f"{code}|{whole}|{pixels_digest(region.crop)}|".encode())
                h.update(json.dumps([region.description, list(item.tweet.tokens)]).encode())
                key = f"cache/align/{aligner_key}/{h.hexdigest()}.json"
                if store.exists(key):
                    answers[len(jobs)] = json.loads(store.get(key))["answer"]
            if len(jobs) not in answers:
                ex = example_for_region(
                    item.tweet.tokens, item.tweet.image_id, region.region_id, region.description
                )
                images = {None: item.image, region.region_id: region.crop}
                examples.append(to_example(ex.parts, ex.key, "", images))
            jobs.append((t, region, key))
    todo = [j for j in range(len(jobs)) if j not in answers]
    if examples:
        new = generate(
            model,
            processor,
            examples,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress="align regions: questions",
        )
        for j, answer in zip(todo, new, strict=True):
            answers[j] = answer
            if jobs[j][2] is not None:
                store.put(jobs[j][2], json.dumps({"answer": answer}).encode())
    out: list[list[AlignedRegion]] = [[] for _ in items]
    for j, (t, region, _) in enumerate(jobs):
        span: AlignedSpan | None = decode_answer(answers[j], items[t].tweet.tokens)
        if span is None:
            continue
        out[t].append(
            AlignedRegion(
                region.region_id, span.word_start, span.word_end, region.description, region.bbox
            )
        )
    return out


def jmasa_examples(
    items: Sequence[TweetInput],
    aligned: Sequence[Sequence[AlignedRegion]],
    *,
    ablation: str = "full",
    lazy: bool = False,
) -> tuple[Sequence[Example], list[Instruction]]:
    """The NMI example of every tweet (target = its gold pairs) and the instructions.

    With ``lazy`` the examples are a :class:`NmiExamples`: each built when read, from its item
    (read from ``items`` then, which may be a :class:`LazyTweetInputs`) and its instruction.
    """
    if len(items) != len(aligned):
        raise ValueError(f"{len(items)} tweets but {len(aligned)} alignment lists")
    instructions = [
        build_instruction(_tweet(items, i), list(regions), ablation=ablation)
        for i, regions in enumerate(aligned)
    ]
    examples = NmiExamples(items, instructions)
    return (examples if lazy else [examples[i] for i in range(len(examples))]), instructions


def _tweet(items: Sequence[TweetInput], i: int) -> Tweet:
    """Item ``i``'s tweet, without reading its image when ``items`` is lazy (a lazy sequence,
    :class:`LazyTweetInputs` or :class:`iea.thresholds.KeptInputs`, lists its ``tweets``)."""
    tweets = getattr(items, "tweets", None)
    return tweets[i] if tweets is not None else items[i].tweet


class NmiExamples(Sequence[Example]):
    """The engine examples of ``instructions``, each built when read from its item's images
    (its whole image and its regions' crops). A slice is an ``NmiExamples``."""

    def __init__(self, items: Sequence[TweetInput], instructions: Sequence[Instruction]):
        if len(items) != len(instructions):
            raise ValueError(f"{len(items)} tweets but {len(instructions)} instructions")
        self.items, self.instructions = items, list(instructions)

    def __len__(self) -> int:
        return len(self.instructions)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return NmiExamples(self.items[i], self.instructions[i])
        item, ins = self.items[i], self.instructions[i]
        images: dict[int | None, Image.Image] = {None: item.image}
        images.update({r.region_id: r.crop for r in item.regions})
        return to_example(ins.parts, item.tweet.id, ins.target, images)


def predict(
    model: Any,
    processor: Any,
    examples: Sequence[Example],
    tweets: Sequence[Tweet],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 8,
    cache: Any | None = None,
) -> list[dict[str, Any]]:
    """Generate and parse: one ``{"id", "output", "aspects", "parsed", "unmatched"}`` per
    tweet (aspects as ``{"from", "to", "polarity"}`` word spans, the ``iea eval`` format).
    ``cache``: a :class:`iea.models.finetune.PromptCache` shared by calls that score the same
    tweets again (a dev set every epoch)."""
    texts = generate(
        model,
        processor,
        examples,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress="predict",
        cache=cache,
    )
    rows = []
    for tweet, text in zip(tweets, texts, strict=True):
        p = parse_prediction(text, tweet.tokens)
        rows.append(
            {
                "id": tweet.id,
                "output": text,
                "aspects": [{"from": s, "to": e, "polarity": pol} for s, e, pol in p.aspects],
                "parsed": p.parsed,
                "unmatched": list(p.unmatched),
            }
        )
    return rows


def bound_predict(model: Any, processor: Any, *, max_new_tokens: int, batch_size: int):
    """:func:`predict` with the model and its generation settings bound:
    ``fn(examples, tweets) -> rows``, the ``PredictFn`` of :mod:`iea.thresholds`."""
    return functools.partial(
        predict, model, processor, max_new_tokens=max_new_tokens, batch_size=batch_size
    )


def score_predictions(rows: Sequence[dict[str, Any]], tweets: Sequence[Tweet]) -> dict[str, float]:
    """Flat metrics (``jmasa_f1``, ``mate_p``, ``masc_acc``, ...) of :func:`predict` rows."""
    gold = {t.id: list(t.aspects) for t in tweets}
    pred = {r["id"]: [(a["from"], a["to"], a["polarity"]) for a in r["aspects"]] for r in rows}
    result = score(
        gold,
        pred,
        unparsed=sum(not r["parsed"] for r in rows),
        unmatched=sum(len(r["unmatched"]) for r in rows),
    )
    flat: dict[str, float] = {}
    for task, values in result.items():
        if isinstance(values, dict):
            for k, v in values.items():
                flat[f"{task}_{k}"] = float(v)
        else:
            flat[task] = float(values)
    return flat


def alignment_quality(
    tweets: Sequence[Tweet], aligned: Sequence[Sequence[AlignedRegion]]
) -> tuple[float, float]:
    """``(alignment precision, coverage)`` of one split: the gold aspect spans of ``tweets``
    against the word spans of the regions aligned to each (``aligned[i]`` for ``tweets[i]``;
    :func:`iea.align.aligner.alignment_precision`, :func:`iea.align.aligner.coverage`)."""
    from iea.align.aligner import alignment_precision, coverage

    gold = {t.id: [(a.start, a.end) for a in t.aspects] for t in tweets}
    spans = {
        t.id: [(r.word_start, r.word_end) for r in al]
        for t, al in zip(tweets, aligned, strict=True)
    }
    return alignment_precision(gold, spans), coverage(gold, spans)
