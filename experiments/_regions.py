"""What the experiment scripts start from: their command line (a config, a split, overrides),
a split's tweets, their kept regions and the trained aligner's alignments (interpretations and
answers from the store's caches when present)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def split_args(doc: str) -> argparse.Namespace:
    """``--config`` (required), ``--split`` (default ``test``) and ``key=value`` overrides,
    the command line of a script whose docstring is ``doc``."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--split", default="test", choices=("train", "dev", "test"))
    ap.add_argument("overrides", nargs="*", help="key=value overrides")
    return ap.parse_args()


def aligned_split_parser(doc: str) -> argparse.ArgumentParser:
    """The command line of a script that reads one split through :func:`aligned_split`:
    ``--config``, ``--tweets``, ``--images`` and ``--aligner`` (required); a script adds more."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--tweets", required=True, type=Path)
    ap.add_argument("--images", required=True, type=Path)
    ap.add_argument("--aligner", required=True, type=Path)
    return ap


def aligned_split(config: str, tweets_file: Path, images: Path, aligner: Path):
    """``(tweets, inputs, aligned)``: :class:`iea.jmasa.TweetInput` per tweet and its regions
    aligned by the aligner saved in ``aligner`` (a ``.../aligner/<key>/model`` folder)."""
    from iea.config import load_settings
    from iea.data.records import Tweet
    from iea.jmasa import align_regions, tweet_inputs
    from iea.models.finetune import load_trained
    from iea.store import open_store
    from iea.vision.interpreter import ImageInterpreter

    settings = load_settings(config, [])
    store = open_store(settings.store)
    lines = tweets_file.read_text().splitlines()
    tweets = [Tweet.from_json(json.loads(x)) for x in lines if x.strip()]
    inputs = tweet_inputs(tweets, images, ImageInterpreter(settings, store))
    model, processor = load_trained(aligner, device="cpu")
    aligned = align_regions(model, processor, inputs, store=store, aligner_key=aligner.parent.name)
    return tweets, inputs, aligned
