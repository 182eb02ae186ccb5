"""The real Twitter-2015/2017 annotations through the NMI and back (oracle round trip).

Every tweet of every split becomes an NMI instruction, for every ablation, with fake aligned
regions on its gold spans; its target, parsed back onto the tweet's tokens with
``iea.metrics.parse_prediction``, must give exactly its gold pairs (JMASA F1 1.0), whatever
the tokens hold: hashtags and mentions split into ``#`` / ``@`` tokens, ``RT``, URLs, emoji,
the same phrase twice, long tweets. The same holds when each aspect is written glued
(``#LFC`` for the tokens ``#``, ``LFC``), as a model may write it.
"""

from __future__ import annotations

import unicodedata

import pytest

from iea.data.convert import read_split
from iea.data.records import Tweet
from iea.metrics import compact, format_pairs, parse_prediction, score
from iea.nmi import ABLATIONS, AlignedRegion, build_instruction

pytestmark = pytest.mark.real_data

DATASETS = ("twitter2015", "twitter2017")
SPLITS = ("train", "dev", "test")
SHOWN = 5


@pytest.fixture(scope="module")
def tweets(twitter_root) -> dict[tuple[str, str], list[Tweet]]:
    out = {}
    for dataset in DATASETS:
        for split in SPLITS:
            got, rejects = read_split("vlp", twitter_root / dataset / "vlp_json", split)
            assert not rejects
            out[dataset, split] = got
    return out


def _regions(tweet: Tweet) -> list[AlignedRegion]:
    """One fake region per gold span (brackets in E, to be cleaned), and one on the last word."""
    regions = [
        AlignedRegion(
            k + 1,
            a.start,
            a.end,
            f"[a region] showing {' '.join(tweet.tokens[a.start : a.end])}",
            (k, k, 10 + k, 10 + k),
            score=1.0 - 0.1 * k,
        )
        for k, a in enumerate(tweet.aspects)
    ]
    n = len(tweet.tokens)
    regions.append(AlignedRegion(len(regions) + 1, n - 1, n, "", (0, 0, 5, 5)))
    return regions


def _in_order(words, text: str) -> bool:
    pieces = iter(text.split())
    return all(any(p == w for p in pieces) for w in words)


def _round_trip(tweet: Tweet) -> list[str]:
    """What goes wrong for one tweet (empty when nothing does)."""
    problems = []
    regions = _regions(tweet)
    ids = {r.region_id for r in regions}
    targets = set()
    for ablation in ABLATIONS:
        ins = build_instruction(tweet, regions, ablation=ablation)
        targets.add(ins.target)
        if ins.tweet_id != tweet.id or not set(ins.region_ids) <= ids:
            problems.append(f"{ablation}: id {ins.tweet_id} / regions {ins.region_ids}")
        if ablation == "full" and sorted(ins.region_ids) != sorted(ids):
            problems.append(f"full: regions {ins.region_ids}, aligned {sorted(ids)}")
        if not _in_order(tweet.tokens, ins.text_only().split("Text:", 1)[-1]):
            problems.append(f"{ablation}: the tweet's words are not all there, in order")
    if len(targets) != 1:
        problems.append(f"the target depends on the ablation: {sorted(targets)}")
    gold = set(tweet.aspects)
    pairs = [(" ".join(tweet.tokens[a.start : a.end]), a.polarity) for a in tweet.aspects]
    for how, text in (
        ("target", next(iter(targets))),
        ("glued", format_pairs([(compact(t), p) for t, p in pairs])),
    ):
        p = parse_prediction(text, tweet.tokens)
        if not p.parsed or p.unmatched or set(p.aspects) != gold:
            problems.append(f"{how} {text!r} -> {p.aspects} (unmatched {p.unmatched})")
    return problems


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_every_tweet_round_trips_through_the_nmi(tweets, dataset, split):
    items = tweets[dataset, split]
    failing = {}
    pred = {}
    for tweet in items:
        problems = _round_trip(tweet)
        if problems:
            failing[tweet.id] = problems
        target = build_instruction(tweet, [], ablation="full").target
        pred[tweet.id] = parse_prediction(target, tweet.tokens).aspects
    shown = "\n".join(
        f"{tid}: {' '.join(t.tokens)}\n    " + "\n    ".join(failing[tid])
        for t in items
        if (tid := t.id) in failing
    ).split("\n")[: 4 * SHOWN]
    assert list(failing) == [], f"{len(failing)} of {len(items)} tweets fail:\n" + "\n".join(shown)
    oracle = score({t.id: t.aspects for t in items}, pred)
    assert oracle["jmasa"]["f1"] == 1.0 and oracle["mate"]["f1"] == 1.0
    assert oracle["masc"]["acc"] == 1.0 and oracle["masc_joint"]["acc"] == 1.0
    assert oracle["jmasa"]["gold"] == sum(len(t.aspects) for t in items)


def _has(tweet: Tweet, what: str) -> bool:
    toks = tweet.tokens
    terms = [" ".join(toks[a.start : a.end]) for a in tweet.aspects]
    return {
        "hashtag": "#" in toks,
        "mention": "@" in toks,
        "RT": "RT" in toks,
        "URL": any("http" in t for t in toks),
        "emoji": any(unicodedata.category(c) == "So" for t in toks for c in t),
        "same aspect text twice": len(set(terms)) < len(terms),
        "aspect text also outside its span": any(
            sum(toks[i : i + a.end - a.start] == toks[a.start : a.end] for i in range(len(toks)))
            > 1
            for a in tweet.aspects
        ),
        "30+ tokens": len(toks) >= 30,
    }[what]


@pytest.mark.parametrize(
    "what",
    [
        "hashtag",
        "mention",
        "RT",
        "URL",
        "emoji",
        "same aspect text twice",
        "aspect text also outside its span",
        "30+ tokens",
    ],
)
def test_the_round_trip_covers_the_hard_cases(tweets, what):
    """The tweets above hold every kind of token the round trip has to survive."""
    assert sum(_has(t, what) for items in tweets.values() for t in items) >= 5


def test_glued_hashtag_maps_to_the_split_tokens(tweets):
    """``#LFC`` (and ``# LFC``) name the gold span of the tokens ``#``, ``LFC``."""
    (tweet,) = [t for t in tweets["twitter2015", "test"] if t.id == "268501-ff2947b2"]
    assert tweet.tokens[:6] == ("RT", "@", "LFC", ":", "#", "LFC")
    assert tweet.aspects[0] == (4, 6, "NEU")  # and Steven Gerrard (9, 11)
    for written in ("#LFC <NEU>", "# LFC <NEU>", "#lfc <NEU>"):
        p = parse_prediction(written, tweet.tokens)
        assert p.aspects == ((4, 6, "NEU"),) and p.unmatched == (), written
    # the mention "@ LFC" is another span: written so, it is found there
    assert parse_prediction("@LFC <NEU>", tweet.tokens).aspects == ((1, 3, "NEU"),)
    (dev,) = [t for t in tweets["twitter2015", "dev"] if t.id == "617127-143169a6"]
    assert parse_prediction("#LFC <POS>", dev.tokens).aspects == ((7, 9, "POS"),)
    assert (7, 9, "POS") in dev.aspects


def test_retweet_header_is_not_the_aspect(tweets):
    """``RT @ CERN : ... CERN researchers``: the annotated CERN is the word, not the account."""
    (tweet,) = [t for t in tweets["twitter2015", "train"] if t.id == "859356-b0edcbd9"]
    assert tweet.aspects == ((7, 8, "NEU"),)
    assert parse_prediction("CERN <NEU>", tweet.tokens).aspects == tweet.aspects
