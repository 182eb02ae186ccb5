"""The synthetic Twitter-like dataset of the controlled world (:mod:`iea.data.world`).

Deterministic by seed. Every aspect term is a class name of the world, often after a modifier
that stays outside the span ("my [dog]", "the old [bus]"): with modifiers inside the span the
tiny demo model could not learn the spans from 200 tweets (test MATE F1 0.43), which would hide
every difference the world is built to show. Each aspect
is drawn in the tweet's image as its class's shape and texture in its polarity's colour, objects
shuffled left to right (their order says nothing about the text's; with ``mention_order_rate``
a share of images stands them in the order the text mentions them instead), and a tweet's
aspects do not all share one polarity when it has several, so only the region of an aspect tells
its polarity.

The text carries an aspect's polarity (a cue clause such as "love {x}" or "{x} is awful") for
only a fraction ``text_polarity_rate`` of the aspects; the others sit in polarity-free clauses
("saw {x} today"), so text alone cannot score well. Distractors (:data:`DISTRACTOR_KINDS`:
specks, blurred and faint copies of a mentioned class in another polarity) appear at the rates
given. The files are written in one of the public formats and read back like real data.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from iea.data.records import SPLITS, Aspect, Tweet, base_id
from iea.data.twitter import split_file, write_file
from iea.data.world import (
    DISTRACTOR_KINDS,
    POLARITIES,
    WORLD_CLASSES,
    WORLD_VERSION,
    draw_scene,
    sample_distractors,
)

MODIFIERS: tuple[str, ...] = ("", "my", "the", "the old", "our", "this", "a big", "the little")
"""Words put before a class name in an aspect term ("" = the bare class name)."""
CUE_CLAUSES: dict[str, tuple[str, ...]] = {
    "POS": ("love {} so much", "{} is amazing", "so happy with {}", "{} made my day"),
    "NEU": ("{} is just ordinary", "nothing special about {}", "{} is okay I guess"),
    "NEG": ("hate {}", "{} is awful", "so sad about {}", "{} ruined my day"),
}
"""Clauses whose words carry the aspect's polarity."""
PLAIN_CLAUSES: tuple[str, ...] = (
    "saw {} today",
    "look at {}",
    "{} was there",
    "here is {}",
    "a photo of {}",
    "met {} again",
    "{} next to the window",
    "spent the morning with {}",
)
"""Polarity-free clauses: the text says nothing about the aspect's polarity."""
OPENERS: tuple[str, ...] = ("", "", "RT @ fan :", "Morning !", "# weekend", "Guess what :")
JOINERS: tuple[str, ...] = ("and", ",", "while", "but")
CLOSERS: tuple[str, ...] = ("", "", "!", "# photo", "# pic", "today")
ASPECT_COUNTS = (1, 2, 3)
ASPECT_WEIGHTS = (0.3, 0.45, 0.25)


@dataclass(frozen=True)
class SyntheticDataset:
    annotations: Path
    """Directory of the public-format split files."""
    images: Path
    """Directory of the JPEG images."""
    format: str


@dataclass(frozen=True)
class WorldSettings:
    """How the tweets of the world are made (mirrors ``data.synthetic`` in the settings)."""

    text_polarity_rate: float = 0.3
    """Share of aspects whose clause carries their polarity."""
    distractors: dict[str, float] = field(
        default_factory=lambda: {"speck": 0.5, "blurred": 0.4, "faint": 0.4}
    )
    """Per image, the probability of each distractor kind."""
    mention_order_rate: float = 0.0
    """Share of images whose objects stand left to right in the order the text mentions them
    (the rest are shuffled): an implicit alignment a whole-image model can learn from data.
    0 draws no extra random number, so the world is the one made before this setting."""

    def digest(self) -> str:
        """8 hex digits naming these settings and :data:`~iea.data.world.WORLD_VERSION`
        (``mention_order_rate`` only when it is not 0: the worlds without it keep their names)."""
        parts: list = [WORLD_VERSION, self.text_polarity_rate, sorted(self.distractors.items())]
        if self.mention_order_rate:
            parts.append(["mention_order_rate", self.mention_order_rate])
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:8]

    def __post_init__(self) -> None:
        if not 0.0 <= self.text_polarity_rate <= 1.0:
            raise ValueError(f"text_polarity_rate must be in [0, 1], got {self.text_polarity_rate}")
        for kind, rate in self.distractors.items():
            if kind not in DISTRACTOR_KINDS:
                raise ValueError(f"unknown distractor kind {kind!r}: one of {DISTRACTOR_KINDS}")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"distractor rate {kind} must be in [0, 1], got {rate}")
        if not 0.0 <= self.mention_order_rate <= 1.0:
            raise ValueError(f"mention_order_rate must be in [0, 1], got {self.mention_order_rate}")


def aspect_class(tokens: tuple[str, ...] | list[str], aspect: Aspect) -> str:
    """The world class an aspect term names: its last word (the term is the class name).

    Raises:
        ValueError: the term's last word is no class of :data:`WORLD_CLASSES`.
    """
    word = tokens[aspect.end - 1]
    if word not in WORLD_CLASSES:
        raise ValueError(f"aspect {' '.join(tokens[aspect.start : aspect.end])!r} names no class")
    return word


def _polarities(rng: random.Random, n: int) -> list[str]:
    while True:
        pols = [rng.choice(POLARITIES) for _ in range(n)]
        if n == 1 or len(set(pols)) > 1:
            return pols


def make_tweet(rng: random.Random, index: int, world: WorldSettings | None = None) -> Tweet:
    """One tweet of the world with its gold aspects (word spans, polarity)."""
    world = world or WorldSettings()
    n = rng.choices(ASPECT_COUNTS, ASPECT_WEIGHTS)[0]
    classes = rng.sample(WORLD_CLASSES, n)
    pols = _polarities(rng, n)
    tokens: list[str] = rng.choice(OPENERS).split()
    aspects = []
    for k, (name, pol) in enumerate(zip(classes, pols, strict=True)):
        if k:
            tokens.append(rng.choice(JOINERS))
        cued = rng.random() < world.text_polarity_rate
        clause = rng.choice(CUE_CLAUSES[pol] if cued else PLAIN_CLAUSES)
        modifier = rng.choice(MODIFIERS).split()
        for piece in clause.split():
            if piece == "{}":
                tokens.extend(modifier)
                aspects.append(Aspect(len(tokens), len(tokens) + 1, pol))
                tokens.append(name)
            else:
                tokens.append(piece)
    tokens += rng.choice(CLOSERS).split()
    image_id = f"syn_{index:05d}.jpg"
    return Tweet(base_id(image_id, tokens), tuple(tokens), image_id, tuple(sorted(aspects)))


def draw_image(
    tweet: Tweet, size: tuple[int, int], seed: int, world: WorldSettings | None = None
) -> Image.Image:
    """The tweet's image: its aspects' objects (shuffled left to right, or with probability
    ``world.mention_order_rate`` in the order the text mentions them) and the distractors.
    ``size`` = (W, H) px."""
    rgb, _, _ = draw_scene_of(tweet, size, seed, world)
    return Image.fromarray(rgb, "RGB")


def draw_scene_of(
    tweet: Tweet, size: tuple[int, int], seed: int, world: WorldSettings | None = None
) -> tuple[np.ndarray, np.ndarray, list]:
    """:func:`draw_image`'s scene: ``(rgb, instances, drawn)`` as
    :func:`~iea.data.world.draw_scene` returns them."""
    world = world or WorldSettings()
    nrng = np.random.default_rng(seed)
    objects = [(aspect_class(tweet.tokens, a), a.polarity) for a in tweet.aspects]
    order = nrng.permutation(len(objects))
    if world.mention_order_rate and nrng.random() < world.mention_order_rate:
        order = np.arange(len(objects))  # tweet.aspects is sorted by span: mention order
    objects = [objects[i] for i in order]
    distractors = (
        sample_distractors(
            nrng, world.distractors, [o[0] for o in objects], [o[1] for o in objects]
        )
        if objects
        else []
    )
    return draw_scene(nrng, objects, distractors, size)


def corpus_texts(n: int = 400, seed: int = 0) -> list[str]:
    """Texts of the world for training a tokenizer: tweets, clauses and phrases."""
    rng = random.Random(seed)
    texts = [make_tweet(rng, i).text for i in range(n)]
    texts += [c for cs in CUE_CLAUSES.values() for c in cs] + list(PLAIN_CLAUSES)
    texts += [f"{m} {c}".strip() for m in MODIFIERS for c in WORLD_CLASSES]
    return texts


def generate(
    out: Path,
    *,
    n_train: int = 200,
    n_dev: int = 50,
    n_test: int = 50,
    seed: int = 13,
    fmt: str = "vlp",
    image_size: tuple[int, int] = (320, 240),
    world: WorldSettings | None = None,
) -> SyntheticDataset:
    """Write ``out/annotations/<split files>`` in ``fmt`` and ``out/images/*.jpg``."""
    out = Path(out)
    world = world or WorldSettings()
    rng = random.Random(seed)
    counts = {"train": n_train, "dev": n_dev, "test": n_test}
    ann, img = out / "annotations", out / "images"
    img.mkdir(parents=True, exist_ok=True)
    index = 0
    for split in SPLITS:
        tweets = []
        for _ in range(counts[split]):
            tweet = make_tweet(rng, index, world)
            draw_image(tweet, image_size, seed * 100_003 + index, world).save(
                img / tweet.image_id, quality=90
            )
            tweets.append(tweet)
            index += 1
        write_file(fmt, split_file(fmt, ann, split), tweets)
    return SyntheticDataset(ann, img, fmt)
