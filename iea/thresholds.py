"""Region-filter threshold trials over cached stages: a trial recomputes only what the
thresholds change.

Everything upstream of the filter is independent of ``t_size``/``t_clarity``/``t_conf`` and is
computed once per split (:func:`all_regions`): each image's regions with their features (SAM
scores, bbox, Laplacian variance), and the interpretation and the aligner's answer for *every*
region, as the stage would give them with every filter off. A trial (:class:`TrialEvaluator`)
is then one vectorised :func:`~iea.vision.filters.keep_mask` over all regions of the split, the
aligned regions that survive, their NMI instructions, the fixed JMASA model's predictions and
the scores. Dropping a region from the stage's input or from its output is the same thing here:
the interpreter and the aligner look at one region at a time, and their answers are cached per
region, so a trial at the config's thresholds builds exactly the instructions the training
flow builds.

Two trials that keep the same *aligned* regions build the same instructions (a kept region the
aligner maps to no phrase is in no instruction), so they share one evaluation: the memo is
keyed by that set. Below it, predictions are memoised per tweet (keyed by the tweet and its
surviving aligned regions): a trial that changes a few images' regions asks the model only
about the tweets of those images.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from iea.data.records import Tweet
from iea.jmasa import TweetInput, jmasa_examples
from iea.models.finetune import Example
from iea.nmi import AlignedRegion
from iea.vision.filters import RegionFeatures, Thresholds, keep_mask

PredictFn = Callable[[Sequence[Example], Sequence[Tweet]], list[dict[str, Any]]]
"""``(examples, tweets) -> rows`` as :func:`iea.jmasa.predict` returns them."""
ScoreFn = Callable[[Sequence[dict[str, Any]], Sequence[Tweet]], dict[str, float]]
"""``(rows, tweets) -> flat metrics`` as :func:`iea.jmasa.score_predictions` returns them."""


@dataclass
class SplitRegions:
    """One split with every region of its images, filters off.

    ``items``: per tweet, its image and *every* region as a view (a lazy sequence from
    :func:`all_regions`: an item is decoded when read, so the split holds no image);
    ``aligned``: per tweet, the regions the aligner maps to a phrase (region order);
    ``features``: struct of arrays over the R regions of the split's distinct images,
    ``owner[k]`` = ``(image_id, region_id)`` of entry k. Everything a trial needs short of
    the instructions themselves (the kept set, the memo keys, coverage) reads ``tweets``,
    ``aligned``, ``features`` and ``owner`` only, never an item.
    """

    items: Sequence[TweetInput]
    aligned: list[list[AlignedRegion]]
    features: RegionFeatures
    owner: list[tuple[str, int]]
    tweets: list[Tweet] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.items) != len(self.aligned):
            raise ValueError(f"{len(self.items)} tweets but {len(self.aligned)} alignment lists")
        if len(self.owner) != len(self.features.width):
            raise ValueError(f"{len(self.owner)} owners for {len(self.features.width)} regions")
        lazy = getattr(self.items, "tweets", None)
        self.tweets = list(lazy) if lazy is not None else [item.tweet for item in self.items]

    def kept(self, t: Thresholds) -> set[tuple[str, int]]:
        """``(image_id, region_id)`` of the regions that pass every filter at ``t``."""
        mask = keep_mask(self.features, t)
        return {self.owner[k] for k in np.flatnonzero(mask)}

    def coverage(self, t: Thresholds) -> float:
        """The aligner's coverage of the gold aspects (Table 4) with the regions kept at
        ``t``: the share of gold aspects some kept, aligned region's phrase overlaps."""
        from iea.align.aligner import coverage

        kept = self.kept(t)
        gold = {tw.id: [(a.start, a.end) for a in tw.aspects] for tw in self.tweets}
        spans = {
            tw.id: [(r.word_start, r.word_end) for r in al if (tw.image_id, r.region_id) in kept]
            for tw, al in zip(self.tweets, self.aligned, strict=True)
        }
        return coverage(gold, spans)

    def kept_fraction(self, t: Thresholds) -> float:
        """Share of the split's regions kept at ``t`` (1.0 for a split with no region)."""
        n = len(self.owner)
        return float(keep_mask(self.features, t).sum()) / n if n else 1.0

    def select(
        self, t: Thresholds, index: Sequence[int] | None = None
    ) -> tuple[KeptInputs, list[list[AlignedRegion]]]:
        """The split (or its tweets ``index``) as the stage gives it at ``t``: per tweet, only
        the kept regions (views and alignments, in region order). The items are built when
        read (:class:`KeptInputs`)."""
        kept = self.kept(t)
        index = range(len(self.tweets)) if index is None else index
        aligned = []
        for i in index:
            image = self.tweets[i].image_id
            aligned.append([r for r in self.aligned[i] if (image, r.region_id) in kept])
        return KeptInputs(self.items, self.tweets, kept, index), aligned


class KeptInputs(Sequence[TweetInput]):
    """Items ``index`` of a split's ``items``, each with only the views of its ``kept``
    regions, built when read (reading the underlying item then); ``tweets`` lists their
    tweets without reading any item. A slice is a ``KeptInputs``."""

    def __init__(
        self,
        items: Sequence[TweetInput],
        tweets: Sequence[Tweet],
        kept: set[tuple[str, int]],
        index: Sequence[int],
    ):
        self._items, self._all, self._kept = items, tweets, kept
        self.index = list(index)
        self.tweets = [tweets[i] for i in self.index]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return KeptInputs(self._items, self._all, self._kept, self.index[i])
        item = self._items[self.index[i]]
        image = item.tweet.image_id
        views = tuple(v for v in item.regions if (image, v.region_id) in self._kept)
        return TweetInput(item.tweet, item.image, views)


def all_regions(
    tweets: Sequence[Tweet],
    images_dir: str | Path,
    interpreter: Any,
    align: Callable[[Sequence[TweetInput]], list[list[AlignedRegion]]],
) -> SplitRegions:
    """Gather a split's regions with every filter off.

    Every image is read, segmented and interpreted here (so a bad image raises here), but the
    split keeps only the regions' features and descriptions: its items are a
    :class:`iea.jmasa.LazyTweetInputs`, which decodes an image and cuts its crops again from
    the interpreter's caches when an item is read. Memory does not grow with the images.

    Args:
        interpreter: an :class:`iea.vision.interpreter.ImageInterpreter` whose thresholds keep
            every region (its ``run`` and ``prepare`` are used; its caches make a second call
            cheap).
        align: ``items -> aligned regions per tweet`` (:func:`iea.jmasa.align_regions` with a
            loaded aligner and its cache; it reads the items a chunk at a time).

    Raises:
        ValueError: the interpreter dropped a region (its thresholds are not all off).
        iea.data.images.ImageDecodeError: an image is missing or cannot be decoded (named).
    """
    from iea.jmasa import LazyTweetInputs

    images_dir = Path(images_dir)
    described: dict[str, dict[int, str]] = {}
    regions_of: list[tuple[str, Any]] = []
    for tweet in tweets:
        if tweet.image_id in described:
            continue
        res = interpreter.run(images_dir / tweet.image_id)
        if len(res.kept) != len(res.regions):
            raise ValueError(
                f"{tweet.image_id}: the interpreter dropped {len(res.regions) - len(res.kept)}"
                " regions; gather every region with thresholds 0/0/0"
            )
        described[tweet.image_id] = {r.id: res.interpretations[r.id].text for r in res.regions}
        regions_of += [(tweet.image_id, r) for r in res.regions]
    items = LazyTweetInputs(tweets, images_dir, interpreter, described)
    features = RegionFeatures.of([r for _, r in regions_of])
    owner = [(image_id, r.id) for image_id, r in regions_of]
    return SplitRegions(items, align(items), features, owner)


@dataclass(frozen=True)
class TrialResult:
    """One trial's outcome: the metrics of :data:`ScoreFn`, the share of regions kept, how
    many aligned regions reached the instructions, whether the memo answered, and seconds."""

    metrics: dict[str, float]
    kept_fraction: float
    aligned_kept: int
    cache_hit: bool
    seconds: float
    predicted: int = 0
    """Tweets the model was asked about in this trial (the others' answers were known)."""


@dataclass
class TrialEvaluator:
    """Score a fixed JMASA model on one split under any thresholds (see the module doc).

    ``predict`` and ``score`` are the model's prediction and the metrics; ``ablation`` the NMI
    layout its instructions use. ``hits``/``misses`` count memo answers and evaluations,
    ``predicted`` the tweets the model was asked about: a tweet's prediction depends only on its
    own instruction, so a trial asks the model only about tweets whose instruction no earlier
    trial built (a model's answer to one instruction does not depend on the other tweets of
    its batch, up to float rounding in padded batches).
    Threads may share one evaluator (the memo and counts take a lock; two threads missing the
    same key at once both evaluate it, and both count a miss).
    """

    split: SplitRegions
    predict: PredictFn
    score: ScoreFn
    ablation: str = "full"
    hits: int = 0
    misses: int = 0
    predicted: int = 0
    _memo: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)
    _rows: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def tweet_keys(self, t: Thresholds) -> list[str]:
        """Per tweet, what its instruction depends on at ``t``: its id and the ids of its
        aligned regions that survive the filters."""
        surviving = zip(self.split.tweets, self._surviving(t), strict=True)
        return [f"{tw.id}:{ids}" for tw, ids in surviving]

    def _surviving(self, t: Thresholds) -> list[list[int]]:
        """Per tweet, the ids of its aligned regions that survive the filters at ``t``."""
        kept = self.split.kept(t)
        return [
            [r.region_id for r in regions if (tweet.image_id, r.region_id) in kept]
            for tweet, regions in zip(self.split.tweets, self.split.aligned, strict=True)
        ]

    def key(self, t: Thresholds) -> str:
        """The memo key at ``t``: a digest of the aligned regions that survive the filters."""
        return hashlib.sha256("".join(f"{k};" for k in self.tweet_keys(t)).encode()).hexdigest()

    def __call__(self, t: Thresholds) -> TrialResult:
        t0 = time.perf_counter()
        surviving = self._surviving(t)
        tweet_keys = [
            f"{tw.id}:{ids}" for tw, ids in zip(self.split.tweets, surviving, strict=True)
        ]
        key = hashlib.sha256("".join(f"{k};" for k in tweet_keys).encode()).hexdigest()
        with self._lock:
            metrics = self._memo.get(key)
            hit = metrics is not None
            if hit:
                self.hits += 1
            else:
                self.misses += 1
            todo = [] if hit else [i for i, k in enumerate(tweet_keys) if k not in self._rows]
        if metrics is None:
            if todo:  # only the tweets whose instruction no earlier trial built
                items, aligned = self.split.select(t, todo)  # read a batch at a time
                examples, _ = jmasa_examples(items, aligned, ablation=self.ablation, lazy=True)
                rows = self.predict(examples, items.tweets)
                with self._lock:
                    self._rows.update(
                        (tweet_keys[i], row) for i, row in zip(todo, rows, strict=True)
                    )
                    self.predicted += len(todo)
            metrics = self.score([self._rows[k] for k in tweet_keys], self.split.tweets)
            with self._lock:
                self._memo[key] = metrics
        return TrialResult(
            dict(metrics),
            self.split.kept_fraction(t),
            sum(len(ids) for ids in surviving),
            hit,
            time.perf_counter() - t0,
            len(todo),
        )


def overlay(
    split: SplitRegions, trials: Sequence[tuple[str, Thresholds]], n_images: int = 2
) -> Image.Image:
    """Which regions each of ``trials`` (``(label, thresholds)``, e.g. a good and a bad one)
    keeps on ``n_images`` images of the split (those with the most regions): one row per
    image, one column per trial; a kept region's box green (thick when the aligner put it next
    to a phrase), a dropped one red. Returns an RGB image."""
    first: dict[str, int] = {}  # image id -> its first tweet
    aligned_of: dict[str, set[int]] = {}
    for i, (tweet, regions) in enumerate(zip(split.tweets, split.aligned, strict=True)):
        first.setdefault(tweet.image_id, i)
        aligned_of.setdefault(tweet.image_id, set()).update(r.region_id for r in regions)
    n_regions = Counter(image_id for image_id, _ in split.owner)
    ranked = sorted(first, key=lambda image_id: (-n_regions[image_id], image_id))
    chosen = [split.items[first[image_id]] for image_id in ranked[:n_images]]  # read these only
    if not chosen or not trials:
        raise ValueError("overlay needs at least one image with regions and one trial")
    kept = [split.kept(t) for _, t in trials]
    w = max(it.image.width for it in chosen)
    h = max(it.image.height for it in chosen)
    head = 16
    canvas = Image.new("RGB", (w * len(trials), (h + head) * len(chosen)), "white")
    draw = ImageDraw.Draw(canvas)
    for row, item in enumerate(chosen):
        image_id = item.tweet.image_id
        for col, ((label, _), keep) in enumerate(zip(trials, kept, strict=True)):
            x0, y0 = col * w, row * (h + head)
            canvas.paste(item.image.convert("RGB"), (x0, y0 + head))
            n_kept = sum((image_id, v.region_id) in keep for v in item.regions)
            caption = f"{label}: {image_id} kept {n_kept}/{len(item.regions)}"
            draw.text((x0 + 2, y0 + 2), caption, fill="black")
            for v in item.regions:
                bx, by, bw, bh = v.bbox
                box = (x0 + bx, y0 + head + by, x0 + bx + bw - 1, y0 + head + by + bh - 1)
                if (image_id, v.region_id) in keep:
                    width = 3 if v.region_id in aligned_of[image_id] else 1
                    draw.rectangle(box, outline=(0, 170, 0), width=width)
                else:
                    draw.rectangle(box, outline=(220, 0, 0), width=1)
    return canvas
