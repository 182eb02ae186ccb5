"""The interpreter stage with stand-in models: caching, lazy loading, resizing, outputs."""

import json

import numpy as np
import pytest
from PIL import Image

from iea.config import load_settings
from iea.data.images import ImageDecodeError
from iea.store import LocalStore
from iea.vision.interpreter import ImageInterpreter, write_outputs


class FakeGenerator:
    """Two masks at whatever size it is given: the left half (iou 0.9), the top half (0.8)."""

    def __init__(self):
        self.calls = []

    def generate(self, image):
        h, w = image.shape[:2]
        self.calls.append((h, w))
        left = np.zeros((h, w), bool)
        left[:, : w // 2] = True
        top = np.zeros((h, w), bool)
        top[: h // 2] = True
        return [
            {"segmentation": top, "predicted_iou": 0.8, "stability_score": 0.9},
            {"segmentation": left, "predicted_iou": 0.9, "stability_score": 0.95},
        ]


class FakeVLM:
    def __init__(self):
        self.calls = 0

    def generate(self, images, prompts, max_new_tokens, batch_size=8):
        self.calls += 1
        return [
            f"Description: a {im.width}x{im.height} patch\nSentiment: positive\nScore: 0.5"
            for im in images
        ]


def _settings(tmp_path, *extra):
    return load_settings(
        overrides=[
            f"store.root={tmp_path / 'store'}",
            "filters.t_clarity=10",
            "filters.t_size=4",
            *extra,
        ],
        env={},
    )


def _noise_image(path, w, h, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)).save(path)
    return path


def test_second_run_calls_no_model(tmp_path):
    s = _settings(tmp_path)
    img = _noise_image(tmp_path / "a.png", 64, 48)
    gen, vlm = FakeGenerator(), FakeVLM()
    first = ImageInterpreter(s, LocalStore(tmp_path / "store"), generator=gen, vlm=vlm).run(img)
    assert len(gen.calls) == 1 and vlm.calls == 1
    assert [r.id for r in first.regions] == [0, 1, 2]  # background, left half, top-right quarter
    assert first.cache == {
        "segmentation": "miss",
        "interpretations_hit": 0,
        "interpretations_miss": 3,
    }

    gen2, vlm2 = FakeGenerator(), FakeVLM()
    second = ImageInterpreter(s, LocalStore(tmp_path / "store"), generator=gen2, vlm=vlm2).run(img)
    assert gen2.calls == [] and vlm2.calls == 0
    assert second.cache == {
        "segmentation": "hit",
        "interpretations_hit": 3,
        "interpretations_miss": 0,
    }
    assert second.to_json() == {**first.to_json(), "cache": second.cache}


def test_settings_change_invalidates_only_what_depends_on_it(tmp_path):
    img = _noise_image(tmp_path / "a.png", 64, 48)
    store = LocalStore(tmp_path / "store")
    ImageInterpreter(_settings(tmp_path), store, generator=FakeGenerator(), vlm=FakeVLM()).run(img)
    # A filter change re-filters cached regions: no model at all.
    gen, vlm = FakeGenerator(), FakeVLM()
    r = ImageInterpreter(
        _settings(tmp_path, "filters.t_size=30"), store, generator=gen, vlm=vlm
    ).run(img)
    assert (
        gen.calls == [] and vlm.calls == 0 and len(r.kept) == 1
    )  # only the background is >= 30 px
    # A mask-generator setting change re-segments.
    gen = FakeGenerator()
    ImageInterpreter(
        _settings(tmp_path, "segment.points_per_side=8"), store, generator=gen, vlm=FakeVLM()
    ).run(img)
    assert len(gen.calls) == 1


def test_large_image_is_resized_for_sam_and_mapped_back(tmp_path):
    s = _settings(tmp_path, "segment.max_side=600")
    img = _noise_image(tmp_path / "big.jpg", 6000, 4000)
    gen = FakeGenerator()
    r = ImageInterpreter(s, LocalStore(tmp_path / "store"), generator=gen, vlm=FakeVLM()).run(img)
    assert gen.calls == [(400, 600)]
    assert r.label_map.shape == (4000, 6000) and r.size == (6000, 4000)
    left = next(x for x in r.regions if x.id == 1)
    assert left.bbox == (0, 0, 3000, 4000) and left.area == 3000 * 4000
    assert sum(x.area for x in r.regions) == 6000 * 4000
    paths = write_outputs(r, tmp_path / "out")
    assert Image.open(paths["labels"]).size == (6000, 4000)
    assert max(Image.open(paths["overlay"]).size) <= 1024 + 380


@pytest.mark.parametrize("side", [1, 8])
def test_tiny_images_skip_sam(tmp_path, side):
    img = _noise_image(tmp_path / "t.png", side, side)
    gen, vlm = FakeGenerator(), FakeVLM()
    s = _settings(tmp_path, "filters.t_size=25")
    r = ImageInterpreter(s, LocalStore(tmp_path / "store"), generator=gen, vlm=vlm).run(img)
    assert gen.calls == [] and vlm.calls == 0
    assert [(x.id, x.bbox) for x in r.regions] == [(0, (0, 0, side, side))]
    assert "too_small" in r.reasons[0]


def test_all_black_image_keeps_nothing(tmp_path):
    img = tmp_path / "black.png"
    Image.new("RGB", (64, 48)).save(img)
    vlm = FakeVLM()
    r = ImageInterpreter(
        _settings(tmp_path), LocalStore(tmp_path / "store"), generator=FakeGenerator(), vlm=vlm
    ).run(img)
    assert r.kept == [] and vlm.calls == 0
    assert all("blurry" in why for why in r.reasons)


def test_outputs(tmp_path):
    img = _noise_image(tmp_path / "a.png", 64, 48)
    r = ImageInterpreter(
        _settings(tmp_path),
        LocalStore(tmp_path / "store"),
        generator=FakeGenerator(),
        vlm=FakeVLM(),
    ).run(img)
    paths = write_outputs(r, tmp_path / "out")
    doc = json.loads(paths["regions"].read_text())
    assert [x["id"] for x in doc["regions"]] == [0, 1, 2]
    assert (
        doc["regions"][1]["description"] == "a 32x48 patch"
        and doc["regions"][1]["polarity"] == "POS"
    )
    assert set(doc["regions"][0]) >= {
        "bbox",
        "area",
        "predicted_iou",
        "laplacian_var",
        "kept",
        "dropped_because",
    }
    labels = np.asarray(Image.open(paths["labels"]))
    assert labels.shape == (48, 64) and sorted(np.unique(labels).tolist()) == [0, 1, 2]
    assert Image.open(paths["overlay"]).mode == "RGB"


def test_undecodable_image_names_the_file(tmp_path):
    bad = tmp_path / "noise.jpg"
    bad.write_bytes(np.random.default_rng(1).bytes(1000))
    with pytest.raises(ImageDecodeError, match="noise.jpg"):
        ImageInterpreter(
            _settings(tmp_path), LocalStore(tmp_path / "store"), generator=FakeGenerator()
        ).run(bad)


def test_run_many_is_run_one_by_one_with_one_vlm_pass(tmp_path):
    """Several images' missing crops go to the VLM in one pass; every result equals the one
    image at a time run's, a bad image keeps its error in its place, and a crop two images
    share is answered once."""
    paths = [_noise_image(tmp_path / f"{i}.png", 64 + 8 * i, 48, seed=i) for i in range(3)]
    twin = tmp_path / "twin.png"  # the same pixels as 0.png under another name
    twin.write_bytes(paths[0].read_bytes())
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    images = [paths[0], bad, paths[1], twin, paths[2]]

    one_store = LocalStore(tmp_path / "one")
    vlm_one = FakeVLM()
    one = ImageInterpreter(_settings(tmp_path), one_store, generator=FakeGenerator(), vlm=vlm_one)
    singles = [one.run(p) for p in paths]

    vlm = FakeVLM()
    many = ImageInterpreter(
        _settings(tmp_path, "interpreter.batch_size=32"),
        LocalStore(tmp_path / "many"),
        generator=FakeGenerator(),
        vlm=vlm,
    ).run_many(images)
    assert vlm.calls == 1 and vlm_one.calls == 3
    assert isinstance(many[1], ImageDecodeError) and "bad.png" in str(many[1])
    for got, want in zip([many[0], many[2], many[4]], singles, strict=True):
        assert got.to_json() == want.to_json()
        assert got.cache == want.cache
    assert many[3].to_json()["regions"] == singles[0].to_json()["regions"]
    # the twin's crops were answered for 0.png in the same pass: no miss of its own
    assert many[3].cache["interpretations_miss"] == 0
    assert many[3].cache["interpretations_hit"] == len(many[3].kept)


def test_run_whole_through_run_many(tmp_path):
    img = _noise_image(tmp_path / "a.png", 40, 30)
    vlm = FakeVLM()
    res = ImageInterpreter(
        _settings(tmp_path), LocalStore(tmp_path / "s"), generator=FakeGenerator(), vlm=vlm
    ).run_whole(img)
    assert [r.bbox for r in res.regions] == [(0, 0, 40, 30)] and res.reasons == [[]]
    assert res.cache == {
        "segmentation": "none",
        "interpretations_hit": 0,
        "interpretations_miss": 1,
    }
    assert res.interpretations[0].text.startswith("a 40x30 patch")


@pytest.mark.parametrize("whole", [False, True])
def test_lazy_tweet_inputs_equal_the_eager_list_and_hold_no_image(tmp_path, whole):
    """``tweet_inputs(lazy=True)`` interprets every image up front, then builds each item
    when read (image decoded again, segmentation from the cache): the same items, images and
    crops pixel for pixel, as the eager list; it holds no decoded image beyond its last few
    (the rest pickles to a few hundred bytes a tweet), and the NMI examples built from it
    equal the eager ones."""
    import pickle

    from iea.data.records import Tweet
    from iea.jmasa import LazyTweetInputs, NmiExamples, jmasa_examples, tweet_inputs
    from iea.nmi import AlignedRegion

    for i in range(3):
        _noise_image(tmp_path / f"{i}.png", 64 + 8 * i, 48, seed=i)
    tweets = [
        Tweet(f"t{i}", ("my", "dog", "and", "the", "bus", str(i)), f"{i % 3}.png") for i in range(5)
    ]  # tweets 3 and 4 share images with 0 and 1

    def interp(vlm):
        return ImageInterpreter(
            _settings(tmp_path), LocalStore(tmp_path / "s"), generator=FakeGenerator(), vlm=vlm
        )

    eager = tweet_inputs(tweets, tmp_path, interp(FakeVLM()), whole_image=whole)
    vlm = FakeVLM()
    lazy = tweet_inputs(tweets, tmp_path, interp(vlm), whole_image=whole, lazy=True)
    assert isinstance(lazy, LazyTweetInputs) and len(lazy) == 5
    assert vlm.calls == 0  # every description came from the cache the eager run filled
    assert [lazy[i] for i in range(5)] == eager  # tweets, images, boxes, crops, descriptions
    assert list(lazy[1:4]) == eager[1:4]
    assert all(item.regions for item in eager)
    # what it holds besides the interpreter: tweets and descriptions, no pixels
    held = {k: v for k, v in vars(lazy).items() if k not in ("interpreter", "_load")}
    size = len(pickle.dumps(held))
    assert size < 600 * len(tweets), size
    assert lazy._load.cache_info().currsize <= LazyTweetInputs.KEEP

    aligned = [
        [AlignedRegion(r.region_id, 1, 2, r.description, r.bbox)]
        for r in (item.regions[0] for item in eager)
    ]
    want, want_ins = jmasa_examples(eager, aligned)
    got, got_ins = jmasa_examples(lazy, aligned, lazy=True)
    assert isinstance(got, NmiExamples) and got_ins == want_ins
    assert [got[i] for i in range(5)] == want and list(got[:2]) == want[:2]


def test_lazy_tweet_inputs_without_an_interpreter_load_the_images(tmp_path):
    from iea.data.records import Tweet
    from iea.jmasa import tweet_inputs

    _noise_image(tmp_path / "a.png", 40, 30)
    tweets = [Tweet("t", ("a",), "a.png")]
    lazy = tweet_inputs(tweets, tmp_path, None, lazy=True)
    assert lazy[0] == tweet_inputs(tweets, tmp_path, None)[0] and lazy[0].regions == ()
    with pytest.raises(ImageDecodeError, match="missing.png"):
        tweet_inputs([Tweet("t", ("a",), "missing.png")], tmp_path, None, lazy=True)
