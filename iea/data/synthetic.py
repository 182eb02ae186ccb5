"""A small synthetic Twitter-like dataset: templated tweets + drawn images, in a public format.

Deterministic by seed. Each aspect of a tweet is drawn in its image as one shape whose colour
follows the aspect's polarity (POS green, NEU grey-blue, NEG red) over a textured background,
so later stages have a visual signal to find; the template's cue words carry the same polarity
in the text. The files are written in one of the public formats and read back like real data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from iea.data.records import SPLITS, Aspect, Tweet, base_id
from iea.data.twitter import split_file, write_file

NAMES = [
    "David Beckham",
    "Emma Watson",
    "Chuck Bass",
    "Lydia",
    "Barbara Hepworth",
    "Taylor Swift",
    "LeBron James",
    "Serena Williams",
    "Oklahoma",
    "New York City",
    "Paris",
    "the Lakers",
    "Manchester United",
    "Tribeca Film Festival",
    "Apple",
    "Starbucks",
    "# MCM",
    "# WorldCup",
    "Jessica Fortner",
    "Obama",
    "London",
    "Real Madrid",
    "Chicago",
    "Adele",
]
# Each template: (text with {0}, {1} slots, polarity of each slot).
TEMPLATES: list[tuple[str, tuple[str, ...]]] = [
    ("RT @ fan : {0} is everything !", ("POS",)),
    ("Spent the morning on a sofa with {0}", ("POS",)),
    ("So proud of {0} tonight , amazing win", ("POS",)),
    ("Loved every minute with {0} : )", ("POS",)),
    ("{0} ruined the whole night again", ("NEG",)),
    ("Terrible news from {0} , so sad", ("NEG",)),
    ("Worst service ever at {0} # fail", ("NEG",)),
    ("{0} arrives in {1} for the summit", ("NEU", "NEU")),
    ("Photos from {0} taken on Monday", ("NEU",)),
    ("{0} meets {1} at the premiere", ("NEU", "NEU")),
    ("Great game by {0} but {1} was awful", ("POS", "NEG")),
    ("{0} was brilliant while {1} looked lost", ("POS", "NEG")),
    ("Live from {0} : {1} is on stage now", ("NEU", "NEU")),
    ("Happy birthday {0} ! Love from {1}", ("POS", "NEU")),
]
COLOURS = {"POS": (40, 200, 60), "NEU": (90, 110, 160), "NEG": (220, 40, 40)}


@dataclass(frozen=True)
class SyntheticDataset:
    annotations: Path
    """Directory of the public-format split files."""
    images: Path
    """Directory of the JPEG images."""
    format: str


def make_tweet(rng: random.Random, index: int) -> Tweet:
    """One templated tweet with its gold aspects (word spans, polarity)."""
    template, pols = rng.choice(TEMPLATES)
    names = rng.sample(NAMES, len(pols))
    tokens: list[str] = []
    aspects = []
    for piece in template.split():
        if piece.startswith("{") and piece.endswith("}"):
            k = int(piece[1:-1])
            words = names[k].split()
            aspects.append(Aspect(len(tokens), len(tokens) + len(words), pols[k]))
            tokens.extend(words)
        else:
            tokens.append(piece)
    image_id = f"syn_{index:05d}.jpg"
    return Tweet(base_id(image_id, tokens), tuple(tokens), image_id, tuple(sorted(aspects)))


def draw_image(tweet: Tweet, size: tuple[int, int], seed: int) -> Image.Image:
    """A textured background with one polarity-coloured shape per aspect. ``size`` = (W, H) px."""
    width, height = size
    nrng = np.random.default_rng(seed)
    base = nrng.integers(150, 230, size=3)
    noise = nrng.normal(0, 18, size=(height, width, 1))
    pixels = np.clip(base[None, None, :] + noise, 0, 255).astype(np.uint8)
    im = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(im)
    n = max(1, len(tweet.aspects))
    for k, aspect in enumerate(tweet.aspects):
        cell = width // n
        w = int(nrng.integers(cell // 2, max(cell // 2 + 1, cell - 8)))
        h = int(nrng.integers(height // 3, height - 20))
        x0 = k * cell + int(nrng.integers(0, max(1, cell - w)))
        y0 = int(nrng.integers(5, max(6, height - h - 5)))
        box = (x0, y0, x0 + w, y0 + h)
        colour = COLOURS[aspect.polarity]
        if k % 3 == 0:
            draw.ellipse(box, fill=colour, outline=(0, 0, 0), width=3)
        elif k % 3 == 1:
            draw.rectangle(box, fill=colour, outline=(0, 0, 0), width=3)
        else:
            draw.polygon(
                [(x0, y0 + h), (x0 + w // 2, y0), (x0 + w, y0 + h)], fill=colour, outline=(0, 0, 0)
            )
    return im


def generate(
    out: Path,
    *,
    n_train: int = 200,
    n_dev: int = 50,
    n_test: int = 50,
    seed: int = 13,
    fmt: str = "vlp",
    image_size: tuple[int, int] = (320, 240),
) -> SyntheticDataset:
    """Write ``out/annotations/<split files>`` in ``fmt`` and ``out/images/*.jpg``."""
    out = Path(out)
    rng = random.Random(seed)
    counts = {"train": n_train, "dev": n_dev, "test": n_test}
    ann, img = out / "annotations", out / "images"
    img.mkdir(parents=True, exist_ok=True)
    index = 0
    for split in SPLITS:
        tweets = []
        for _ in range(counts[split]):
            tweet = make_tweet(rng, index)
            draw_image(tweet, image_size, seed * 100_003 + index).save(
                img / tweet.image_id, quality=90
            )
            tweets.append(tweet)
            index += 1
        write_file(fmt, split_file(fmt, ann, split), tweets)
    return SyntheticDataset(ann, img, fmt)
