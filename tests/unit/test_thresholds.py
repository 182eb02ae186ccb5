"""Threshold trials over cached stages (iea/thresholds.py): the filter picks exactly the
regions the interpreter stage keeps, and trials that keep the same aligned regions share one
evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iea.data.records import Aspect, Tweet
from iea.jmasa import RegionView, TweetInput
from iea.nmi import AlignedRegion
from iea.thresholds import SplitRegions, TrialEvaluator, all_regions, overlay
from iea.vision.filters import RegionFeatures, Thresholds, drop_reasons

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def _split(seed: int = 0, n_images: int = 6, per_image: int = 4) -> SplitRegions:
    """Tweets "a dog and a cat", each with its own image of ``per_image`` regions; every odd
    region is aligned to "dog" (words 1:2), every region id 2 to "cat" (4:5)."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (8, 8))
    items, aligned, owner = [], [], []
    widths, heights, lap, iou = [], [], [], []
    for i in range(n_images):
        tokens = ("a", "dog", "and", "a", "cat")
        tweet = Tweet(f"t{i}", tokens, f"{i}.jpg", (Aspect(1, 2, "POS"), Aspect(4, 5, "NEG")))
        views, regions = [], []
        for rid in range(per_image):
            bbox = (0, 0, int(rng.integers(1, 60)), int(rng.integers(1, 60)))
            views.append(RegionView(rid, bbox, image, f"region {rid}"))
            if rid % 2 or rid == 2:
                span = (1, 2) if rid % 2 else (4, 5)
                regions.append(AlignedRegion(rid, *span, f"region {rid}", bbox))
            owner.append((tweet.image_id, rid))
            widths.append(bbox[2])
            heights.append(bbox[3])
            lap.append(float(rng.uniform(0, 300)))
            iou.append(float(rng.uniform(0, 1)))
        items.append(TweetInput(tweet, image, tuple(views)))
        aligned.append(regions)
    features = RegionFeatures(*(np.array(a, dtype=np.float64) for a in (widths, heights, lap, iou)))
    return SplitRegions(items, aligned, features, owner)


class _Model:
    """A stand-in JMASA model: counts its calls; predicts nothing, scores by region images."""

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, examples, tweets):
        self.calls += 1
        pairs = zip(examples, tweets, strict=True)
        return [{"id": t.id, "regions": len(ex.images) - 1} for ex, t in pairs]

    @staticmethod
    def score(rows, tweets):
        return {"regions": float(sum(r["regions"] for r in rows))}


@pytest.mark.parametrize("seed", range(5))
def test_a_trial_keeps_exactly_what_the_interpreter_stage_keeps(seed):
    split = _split(seed)
    rng = np.random.default_rng(100 + seed)
    for _ in range(20):
        t = Thresholds(
            float(rng.integers(0, 60)), float(rng.uniform(0, 300)), float(rng.uniform(0, 1))
        )
        # the stage: drop_reasons per region, as ImageInterpreter.run applies them
        reasons = drop_reasons(split.features, t)
        stage_kept = {o for o, why in zip(split.owner, reasons, strict=True) if not why}
        assert split.kept(t) == stage_kept
        assert split.kept_fraction(t) == pytest.approx(len(stage_kept) / len(split.owner))
        items, aligned = split.select(t)
        for item, regions in zip(items, aligned, strict=True):
            image = item.tweet.image_id
            assert all((image, v.region_id) in stage_kept for v in item.regions)
            assert all((image, r.region_id) in stage_kept for r in regions)
            n_stage = sum((image, rid) in stage_kept for rid in range(4))
            assert len(item.regions) == n_stage


def test_trials_keeping_the_same_aligned_regions_share_one_evaluation():
    split = _split(n_images=3, per_image=4)
    # every region passes size and clarity; confidence decides
    split.features.width[:] = 50
    split.features.height[:] = 50
    split.features.laplacian_var[:] = 500
    # region 0 (never aligned) scores 0.1, region 1 (aligned) 0.5, regions 2, 3: 0.9
    split.features.predicted_iou[:] = np.tile([0.1, 0.5, 0.9, 0.9], 3)
    model = _Model()
    trial = TrialEvaluator(split, model.predict, model.score)

    keep_all = trial(Thresholds(0, 0, 0.0))
    assert not keep_all.cache_hit and keep_all.kept_fraction == 1.0
    assert keep_all.aligned_kept == 3 * 3 and keep_all.metrics == {"regions": 9.0}
    # dropping region 0 drops no aligned region: same instructions, the memo answers
    same = trial(Thresholds(0, 0, 0.3))
    assert same.cache_hit and same.metrics == keep_all.metrics and same.kept_fraction == 0.75
    # dropping region 1 drops an aligned one: a new evaluation
    fewer = trial(Thresholds(0, 0, 0.7))
    assert not fewer.cache_hit and fewer.metrics == {"regions": 6.0} and fewer.aligned_kept == 6
    assert (trial.hits, trial.misses, model.calls) == (1, 2, 2)


def test_a_trial_asks_the_model_only_about_tweets_whose_instruction_is_new():
    split = _split(n_images=4, per_image=4)
    split.features.width[:] = 50
    split.features.height[:] = 50
    split.features.laplacian_var[:] = 500
    split.features.predicted_iou[:] = 0.9
    split.features.predicted_iou[1] = 0.5  # image 0's aligned region 1 is the only one at 0.5
    model = _Model()
    trial = TrialEvaluator(split, model.predict, model.score)
    everything = trial(Thresholds(0, 0, 0.0))
    assert everything.predicted == 4
    fewer = trial(Thresholds(0, 0, 0.7))  # changes tweet t0's instruction only
    assert not fewer.cache_hit and fewer.predicted == 1 and trial.predicted == 5
    fresh = TrialEvaluator(split, _Model().predict, _Model.score)(Thresholds(0, 0, 0.7))
    assert fewer.metrics == fresh.metrics == {"regions": everything.metrics["regions"] - 1}


def test_gathering_refuses_an_interpreter_that_filters():
    class _Result:
        regions = [object(), object()]
        kept = [object()]

    class _Filtering:
        def run(self, path):
            return _Result()

    with pytest.raises(ValueError, match=r"0\.jpg: the interpreter dropped 1 regions"):
        all_regions([Tweet("t", ("a",), "0.jpg")], "/nowhere", _Filtering(), lambda items: [])


class _Interpreter:
    """A stand-in interpreter with every filter off: each image 32x32 with 3 square regions,
    region r described as "region r"; counts the images it prepares (decodes) for items."""

    def __init__(self) -> None:
        self.prepared: list[str] = []

    def _regions(self):
        from iea.data.regions import Region

        return [Region(r, (8 * r, 0, 8, 8), 64, 0.3 * r, 0.9, False, 50.0 * r) for r in range(3)]

    def run(self, path):
        from types import SimpleNamespace

        regions = self._regions()
        texts = {r.id: SimpleNamespace(text=f"region {r.id}") for r in regions}
        return SimpleNamespace(regions=regions, kept=regions, interpretations=texts)

    def prepare(self, path, whole=False):
        self.prepared.append(Path(path).name)
        rgb = np.full((32, 32, 3), int(Path(path).stem), dtype=np.uint8)
        label_map = np.full((32, 32), -1, dtype=np.int32)
        for r in range(3):
            label_map[0:8, 8 * r : 8 * r + 8] = r
        return {"rgb": rgb, "label_map": label_map, "regions": self._regions(), "reasons": [[]] * 3}


def _images_reachable(root, stop) -> int:
    """PIL images reachable from ``root`` through object references (not through ``stop``)."""
    import gc
    from types import FunctionType, ModuleType

    seen, todo, n = {id(stop)}, [root], 0
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type | ModuleType | FunctionType):
            continue
        seen.add(id(obj))
        n += isinstance(obj, Image.Image)
        todo.extend(gc.get_referents(obj))
    return n


def test_a_gathered_split_holds_no_image_and_a_trial_reads_only_the_tweets_it_asks_about():
    from iea.jmasa import LazyTweetInputs

    interp = _Interpreter()
    tweets = [
        Tweet(f"t{i}", ("a", "dog", "and", "a", "cat"), f"{i}.png", (Aspect(1, 2, "POS"),))
        for i in range(40)
    ]

    def align(items):  # reads every item, as the aligner does; aligns region 1 to "dog"
        return [
            [AlignedRegion(1, 1, 2, v.description, v.bbox) for v in it.regions if v.region_id == 1]
            for it in items
        ]

    split = all_regions(tweets, "/images", interp, align)
    assert len(interp.prepared) == 40  # the aligner read each item once
    # at most the lazy items' few most recent images with their 3 crops, not every tweet's
    assert _images_reachable(split, interp) <= 4 * LazyTweetInputs.KEEP < 4 * 40
    assert split.tweets == tweets and len(split.owner) == 3 * 40
    before = len(interp.prepared)
    assert split.coverage(Thresholds(0, 0, 0.0)) == 1.0
    assert split.coverage(Thresholds(0, 0, 0.5)) == 0.0  # region 1 scores 0.3
    assert split.kept_fraction(Thresholds(0, 0, 0.5)) == pytest.approx(1 / 3)
    assert len(interp.prepared) == before  # none of these read an item

    read: list[int] = []

    def predict(examples, tweets):
        rows = []
        for i in range(len(examples)):
            ex = examples[i]
            read.append(len(ex.images))
            rows.append({"id": ex.key, "regions": len(ex.images) - 1})
        return rows

    def score(rows, tweets):
        return {"regions": float(sum(r["regions"] for r in rows))}

    trial = TrialEvaluator(split, predict, score)
    assert trial(Thresholds(0, 0, 0.0)).metrics == {"regions": 40.0}
    assert read == [2] * 40  # the whole image and region 1's crop, per tweet
    assert trial(Thresholds(0, 0, 0.5)).metrics == {"regions": 0.0}
    assert len(read) == 80
    assert trial(Thresholds(0, 0, 0.1)).cache_hit and len(read) == 80
    items, aligned = split.select(Thresholds(0, 0, 0.5), [3, 7])
    assert items.tweets == [tweets[3], tweets[7]] and aligned == [[], []]
    assert [v.region_id for v in items[1].regions] == [2]
    assert np.asarray(items[1].image)[0, 0, 0] == 7


def test_a_search_that_could_not_act_is_refused_with_every_reason():
    from flows.thresholds import check_search, on_grid
    from iea.config import load_settings

    check_search(load_settings(DEMO_CONFIG))  # the demo searches as it is
    with pytest.raises(ValueError) as err:
        check_search(
            load_settings(
                DEMO_CONFIG,
                ["segment.pred_iou_thresh=0.3", "filters.t_size=27", "search.ablation=text_only"],
            )
        )
    text = str(err.value)
    assert "segment.pred_iou_thresh (0.3) is above search.t_conf.low (0.0)" in text
    assert "filters.t_size = 27.0 is not on search.t_size's grid" in text
    assert "search.ablation 'text_only'" in text
    grid = load_settings(DEMO_CONFIG).search.t_conf
    assert on_grid(grid, 0.8500000000000001) == 0.85


def test_the_paper_config_can_search():
    from flows.thresholds import check_search
    from iea.config import load_settings

    check_search(load_settings(DEMO_CONFIG.parent / "paper.yaml"))


def test_overlay_draws_kept_regions_green_and_dropped_red_per_trial():
    split = _split(per_image=4)
    big = Image.new("RGB", (64, 64), "white")
    split.items[:] = [
        TweetInput(
            it.tweet,
            big,
            tuple(RegionView(v.region_id, (2, 2, 30, 30), big, "") for v in it.regions),
        )
        for it in split.items
    ]
    keep_all, keep_none = Thresholds(0, 0, 0.0), Thresholds(1000, 1e9, 1.0)
    img = np.asarray(overlay(split, [("all", keep_all), ("none", keep_none)], n_images=2))
    assert img.shape == (2 * (64 + 16), 2 * 64, 3)
    left, right = img[16:80, :64], img[16:80, 64:]
    assert (left == (0, 170, 0)).all(axis=-1).any() and not (left == (220, 0, 0)).all(-1).any()
    assert (right == (220, 0, 0)).all(axis=-1).any() and not (right == (0, 170, 0)).all(-1).any()
    with pytest.raises(ValueError, match="at least one"):
        overlay(split, [])
