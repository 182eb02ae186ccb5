"""The controlled world: deterministic, drawable at any image size, and what it promises."""

from __future__ import annotations

import random

import numpy as np
import pytest

from iea.data.synthetic import (
    WorldSettings,
    aspect_class,
    draw_image,
    draw_scene_of,
    make_tweet,
)
from iea.data.world import POLARITIES, WORLD_CLASSES, draw_scene, sample_distractors

ALL = {"speck": 1.0, "blurred": 1.0, "faint": 1.0}


@pytest.mark.parametrize("size", [(320, 240), (200, 300), (64, 64), (480, 160), (8, 10)])
def test_scenes_with_every_distractor_draw_at_any_size(size):
    tweet = make_tweet(random.Random(1), 0, WorldSettings(distractors=ALL))
    a = np.asarray(draw_image(tweet, size, 5, WorldSettings(distractors=ALL)))
    b = np.asarray(draw_image(tweet, size, 5, WorldSettings(distractors=ALL)))
    assert a.shape == (size[1], size[0], 3) and (a == b).all()


def test_tweets_keep_their_promises():
    rng = random.Random(0)
    tweets = [make_tweet(rng, i) for i in range(300)]
    for t in tweets:
        assert all(aspect_class(t.tokens, a) in WORLD_CLASSES for a in t.aspects)
        if len(t.aspects) > 1:  # never all one polarity
            assert len({a.polarity for a in t.aspects}) > 1, t
    cued = WorldSettings(text_polarity_rate=1.0)
    plain = WorldSettings(text_polarity_rate=0.0)
    cue_words = {"love", "amazing", "happy", "made", "hate", "awful", "sad", "ruined", "ordinary"}
    cue_words |= {"okay", "special"}
    assert all(cue_words & set(make_tweet(random.Random(k), k, cued).tokens) for k in range(50))
    assert not any(
        cue_words & set(make_tweet(random.Random(k), k, plain).tokens) for k in range(50)
    )


def test_distractors_copy_a_mentioned_class_in_another_polarity():
    rng = np.random.default_rng(0)
    for _ in range(50):
        out = sample_distractors(rng, ALL, ["dog", "bus"], ["POS", "NEG"])
        assert [k for k, _, _ in out] == ["speck", "blurred", "faint"]
        for _, name, pol in out:
            assert name in ("dog", "bus") and pol in POLARITIES
            assert pol != {"dog": "POS", "bus": "NEG"}[name]
    rgb, inst, drawn = draw_scene(
        np.random.default_rng(1), [("dog", "POS")], [("speck", "dog", "NEG")]
    )
    assert [d.kind for d in drawn] == ["speck", "object"] and inst.max() == 2


def test_distractors_stand_free_of_the_objects_where_there_is_room():
    """A distractor drawn under an object gives the filters nothing to act on (world-v2's SAM
    found 15 of 54 visible ones): in 320 x 240 tweet images nearly all stand free, whole."""
    from iea.data.world import _overlaps

    world = WorldSettings(distractors=ALL)
    free = total = 0
    for k in range(30):
        _, inst, drawn = draw_scene_of(make_tweet(random.Random(k), k, world), (320, 240), k, world)
        boxes = [d.bbox for d in drawn]
        for i, d in enumerate(drawn):
            if d.is_distractor:
                total += 1
                others = boxes[:i] + boxes[i + 1 :]
                free += not any(_overlaps(d.bbox, b, 0) for b in others)
    assert total == 90 and free >= 0.85 * total, (free, total)


def test_world_settings_are_checked():
    with pytest.raises(ValueError, match="text_polarity_rate"):
        WorldSettings(text_polarity_rate=1.5)
    with pytest.raises(ValueError, match="unknown distractor"):
        WorldSettings(distractors={"smudge": 0.1})


def test_worlds_without_mention_order_are_the_ones_made_before_it():
    """mention_order_rate 0 draws no extra random number: same pixels, same dataset name
    (golden values of world-v3, where mention_order_rate 0 is what the setting's absence was in
    world-v2; a change of WORLD_VERSION changes both)."""
    import hashlib

    world = WorldSettings(distractors=ALL)
    h = hashlib.sha256()
    for k in range(5):
        tweet = make_tweet(random.Random(k), k, world)
        h.update(np.asarray(draw_image(tweet, (160, 120), k, world)).tobytes())
    assert h.hexdigest()[:16] == "8a76489eee654eb3"
    assert WorldSettings().digest() == "60bf1e5a"
    assert WorldSettings(mention_order_rate=0.5).digest() != "60bf1e5a"


def test_mention_order_stands_objects_in_the_texts_order():
    ordered = WorldSettings(mention_order_rate=1.0)
    shuffled_somewhere = False
    for k in range(40):
        tweet = make_tweet(random.Random(k), k, ordered)
        mentioned = [aspect_class(tweet.tokens, a) for a in tweet.aspects]
        for world, must_follow in ((ordered, True), (WorldSettings(), False)):
            _, _, drawn = draw_scene_of(tweet, (320, 240), k, world)
            objects = sorted((d for d in drawn if d.kind == "object"), key=lambda d: d.bbox[0])
            follows = [d.name for d in objects] == mentioned
            if must_follow:
                assert follows, (tweet.text, [d.name for d in objects])
            elif not follows:
                shuffled_somewhere = True
    assert shuffled_somewhere  # the default world's order says nothing about the text's
    with pytest.raises(ValueError, match="mention_order_rate"):
        WorldSettings(mention_order_rate=1.2)


def test_a_longer_test_split_leaves_train_and_dev_as_they_are(tmp_path):
    """The world draws train, dev, then test from one seed, so ``n_test`` only appends test
    tweets: ``iea experiment ablations --n-test`` scores the same trainings on more tweets."""
    from iea.data.synthetic import generate
    from iea.data.twitter import read_file, split_file

    short = generate(tmp_path / "short", n_train=6, n_dev=3, n_test=2, seed=5)
    long = generate(tmp_path / "long", n_train=6, n_dev=3, n_test=5, seed=5)

    def split(ds, name):
        return read_file(ds.format, split_file(ds.format, ds.annotations, name))

    for name in ("train", "dev"):
        assert split(short, name) == split(long, name)
    assert split(long, "test")[:2] == split(short, "test")
    assert len(split(long, "test")) == 5
    for tweet in split(short, "test"):
        a = (short.images / tweet.image_id).read_bytes()
        assert a == (long.images / tweet.image_id).read_bytes()
