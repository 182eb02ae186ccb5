"""Nearest-to-Match Instruction layouts, ordering rules, target and errors (pure, no images)."""

from __future__ import annotations

import copy

import pytest

from iea import nmi
from iea.data.records import Aspect, Tweet
from iea.metrics import format_pairs, parse_pairs, spans_for
from iea.nmi import (
    ABLATIONS,
    APPENDED_HEADER,
    MAX_DESCRIPTION_CHARS,
    NMI_HEADER,
    NMI_VERSION,
    TASK_HEADER,
    AlignedRegion,
    ImagePart,
    Instruction,
    TextPart,
    build_instruction,
    clean_description,
)

BOX = (0, 0, 10, 10)
IMG = ImagePart("image")


def _nmi_tweet(tokens: str = "RT David Beckham visits the dog park", aspects=()) -> Tweet:
    return Tweet(id="t1-abc", tokens=tuple(tokens.split()), image_id="t1.jpg", aspects=aspects)


def _region(rid: int, start: int, end: int, desc: str = "", score: float = 1.0) -> AlignedRegion:
    return AlignedRegion(rid, start, end, desc or f"desc {rid}", BOX, score)


def _reg(rid: int) -> ImagePart:
    return ImagePart("region", rid)


def test_regions_on_different_phrases_follow_their_phrases_in_text_order():
    tweet = _nmi_tweet()
    aligned = [_region(7, 5, 7, "a green park"), _region(3, 1, 3, "a man in a suit")]
    inst = build_instruction(tweet, aligned)
    assert inst.parts == (
        TextPart(NMI_HEADER + "\n"),
        IMG,
        TextPart("\nText: RT David Beckham [region: "),
        _reg(3),
        TextPart(" a man in a suit] visits the dog park [region: "),
        _reg(7),
        TextPart(" a green park]"),
    )
    assert inst.region_ids == (3, 7)
    assert inst.text_only() == (
        f"{NMI_HEADER}\n<image>\nText: RT David Beckham [region: <region 3> a man in a suit]"
        " visits the dog park [region: <region 7> a green park]"
    )
    assert inst.tweet_id == "t1-abc"
    assert inst.version == NMI_VERSION == "nmi-v2"
    assert inst.ablation == "full"


def test_repeated_phrase_gets_the_region_only_at_the_span_occurrence():
    tweet = _nmi_tweet("the dog saw the dog")
    inst = build_instruction(tweet, [_region(1, 3, 5, "a brown dog")])
    assert inst.text_only().endswith("Text: the dog saw the dog [region: <region 1> a brown dog]")
    first = build_instruction(tweet, [_region(1, 0, 2, "a brown dog")])
    assert first.text_only().endswith("Text: the dog [region: <region 1> a brown dog] saw the dog")


def test_regions_on_the_same_phrase_ordered_by_score_then_id():
    tweet = _nmi_tweet("my dog")
    aligned = [
        _region(5, 1, 2, "low", score=0.2),
        _region(9, 1, 2, "high b", score=0.9),
        _region(4, 1, 2, "high a", score=0.9),
    ]
    inst = build_instruction(tweet, aligned)
    assert inst.region_ids == (4, 9, 5)
    assert inst.text_only().endswith(
        "Text: my dog [region: <region 4> high a] [region: <region 9> high b]"
        " [region: <region 5> low]"
    )


def test_overlapping_spans_sorted_by_end_then_start():
    tweet = _nmi_tweet()  # RT David Beckham visits the dog park
    aligned = [
        _region(1, 2, 3, "face"),  # "Beckham"
        _region(2, 1, 3, "man"),  # "David Beckham": same end, earlier start -> first
        _region(3, 1, 2, "hair"),  # "David": ends first
    ]
    inst = build_instruction(tweet, aligned)
    assert inst.region_ids == (3, 2, 1)
    assert inst.text_only().endswith(
        "Text: RT David [region: <region 3> hair] Beckham [region: <region 2> man]"
        " [region: <region 1> face] visits the dog park"
    )


def test_no_alignment_gives_header_image_plain_text():
    inst = build_instruction(_nmi_tweet("a b c"), [])
    assert inst.parts == (TextPart(NMI_HEADER + "\n"), IMG, TextPart("\nText: a b c"))
    assert inst.region_ids == ()


def test_ablation_layouts():
    tweet = _nmi_tweet("the dog runs")
    aligned = [_region(2, 1, 2, "a brown dog")]
    layouts = {a: build_instruction(tweet, aligned, ablation=a) for a in ABLATIONS}
    plain = (TextPart(TASK_HEADER + "\n"), IMG, TextPart("\nText: the dog runs"))
    assert layouts["no_aligner_nmi"].parts == plain
    # no_segmentation differs upstream (one whole-image region): its layout is full's
    assert layouts["no_segmentation"].parts == layouts["full"].parts
    assert layouts["no_interpretation"].parts == (
        TextPart(NMI_HEADER + "\n"),
        IMG,
        TextPart("\nText: the dog [region: "),
        _reg(2),
        TextPart("] runs"),
    )
    assert layouts["no_nmi"].parts == (
        TextPart(APPENDED_HEADER + "\n"),
        IMG,
        TextPart("\nText: the dog runs\nRegions: [region: "),
        _reg(2),
        TextPart(" a brown dog]"),
    )
    assert layouts["full"].text_only().endswith("the dog [region: <region 2> a brown dog] runs")
    assert {inst.ablation for inst in layouts.values()} == set(ABLATIONS)
    assert len({inst.target for inst in layouts.values()}) == 1


def test_no_nmi_appends_regions_in_region_id_order():
    tweet = _nmi_tweet()
    aligned = [_region(7, 1, 3, "man"), _region(3, 5, 7, "park")]
    inst = build_instruction(tweet, aligned, ablation="no_nmi")
    assert inst.region_ids == (3, 7)
    assert inst.text_only().endswith(
        "Text: RT David Beckham visits the dog park\n"
        "Regions: [region: <region 3> park] [region: <region 7> man]"
    )
    bare = build_instruction(tweet, [], ablation="no_nmi")
    assert bare.parts[-1] == TextPart("\nText: RT David Beckham visits the dog park")


def test_ablations_constant_matches_the_registry():
    assert tuple(nmi._LAYOUTS) == ABLATIONS
    assert len(ABLATIONS) == 6  # the 5 rows of Table 3 and text_only


def test_target_is_format_pairs_of_gold_and_round_trips():
    aspects = (Aspect(1, 3, "POS"), Aspect(5, 6, "NEU"))
    tweet = _nmi_tweet(aspects=aspects)
    inst = build_instruction(tweet, [_region(1, 1, 3)])
    assert inst.target == format_pairs([("David Beckham", "POS"), ("dog", "NEU")])
    assert inst.target == "David Beckham <POS> ; dog <NEU>"
    pairs = parse_pairs(inst.target)
    assert pairs == [("David Beckham", "POS"), ("dog", "NEU")]
    assert spans_for(pairs, tweet.tokens).aspects == aspects


def test_target_without_aspects_is_none():
    assert build_instruction(_nmi_tweet(), []).target == "none"
    assert parse_pairs("none") == []


def test_bad_gold_aspect_raises_naming_the_tweet():
    with pytest.raises(ValueError, match=r"t1-abc.*\[6, 9\)"):
        build_instruction(_nmi_tweet(aspects=(Aspect(6, 9, "POS"),)), [])
    with pytest.raises(ValueError, match=r"t1-abc.*'GOOD'"):
        build_instruction(_nmi_tweet(aspects=(Aspect(1, 2, "GOOD"),)), [])


@pytest.mark.parametrize("start,end", [(5, 9), (3, 3), (4, 2), (-1, 2)])
@pytest.mark.parametrize("ablation", ["full", "no_segmentation"])
def test_bad_region_span_raises_naming_tweet_and_region(start, end, ablation):
    with pytest.raises(ValueError, match=r"tweet t1-abc: region 42 span"):
        build_instruction(_nmi_tweet(), [_region(42, start, end)], ablation=ablation)


def test_repeated_region_id_raises():
    with pytest.raises(ValueError, match=r"t1-abc: region id 4 is aligned twice"):
        build_instruction(_nmi_tweet(), [_region(4, 0, 1), _region(4, 2, 3)])


def test_unknown_ablation_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'no_text'") as err:
        build_instruction(_nmi_tweet(), [], ablation="no_text")
    assert all(a in str(err.value) for a in ABLATIONS)


def test_inputs_not_mutated():
    tweet = _nmi_tweet(aspects=(Aspect(1, 3, "POS"),))
    aligned = [_region(2, 5, 7), _region(1, 1, 3)]
    tweet_before, aligned_before = copy.deepcopy(tweet), copy.deepcopy(aligned)
    for ablation in ABLATIONS:
        build_instruction(tweet, aligned, ablation=ablation)
    assert tweet == tweet_before
    assert aligned == aligned_before


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_messages_match_parts(ablation):
    aligned = [_region(2, 5, 7), _region(1, 1, 3), _region(0, 1, 3, score=0.5)]
    inst = build_instruction(_nmi_tweet(), aligned, ablation=ablation)
    messages = inst.to_messages()
    images = [m for m in messages if m["type"] == "image"]
    n_image_parts = sum(isinstance(p, ImagePart) for p in inst.parts)
    if ablation == "text_only":
        assert images == [] and n_image_parts == 0 and inst.region_ids == ()
        assert inst.parts == (
            TextPart(TASK_HEADER + "\nText: RT David Beckham visits the dog park"),
        )
        return
    assert len(images) == n_image_parts == 1 + len(inst.region_ids)
    assert messages[1] == {"type": "image"}
    assert all(m == {"type": "image"} for m in images)
    texts = [p.text for p in inst.parts if isinstance(p, TextPart)]
    assert [m["text"] for m in messages if m["type"] == "text"] == texts
    # text and image parts alternate: adjacent texts are merged, no empty text parts
    kinds = [m["type"] for m in messages]
    assert all(a != b for a, b in zip(kinds, kinds[1:], strict=False))
    assert all(t for t in texts)
    if ablation not in ("no_aligner_nmi", "text_only"):
        assert sorted(inst.region_ids) == [0, 1, 2]
    else:
        assert inst.region_ids == ()


def test_full_regions_match_image_parts_in_order():
    aligned = [_region(2, 5, 7), _region(1, 1, 3)]
    inst = build_instruction(_nmi_tweet(), aligned)
    regions = [p.region_id for p in inst.parts if isinstance(p, ImagePart)]
    assert regions == [None, 1, 2]
    assert inst.region_ids == (1, 2)


def test_description_cleaning():
    assert clean_description("  a  man\n in\t[red] ") == "a man in (red)"
    assert clean_description("") == ""
    long = " ".join(["word"] * 100)
    cut = clean_description(long)
    assert len(cut) <= MAX_DESCRIPTION_CHARS
    assert cut.endswith("word...")
    assert clean_description("abcdefghij", max_chars=8) == "abcde..."
    with pytest.raises(ValueError, match="max_chars"):
        clean_description("x", max_chars=3)


def test_messy_description_stays_inside_its_group():
    tweet = _nmi_tweet("my dog")
    inst = build_instruction(tweet, [_region(1, 1, 2, " a [big]\n dog ] ")])
    assert inst.text_only().endswith("my dog [region: <region 1> a (big) dog )]")
    blank = build_instruction(tweet, [AlignedRegion(1, 1, 2, " \n ", BOX)])
    assert blank.text_only().endswith("my dog [region: <region 1>]")


def test_part_and_region_validation():
    with pytest.raises(ValueError, match="region_id"):
        ImagePart("image", 3)
    with pytest.raises(ValueError, match="region_id"):
        ImagePart("region")
    with pytest.raises(ValueError, match="'crop'"):
        ImagePart("crop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="region 5: bbox"):
        AlignedRegion(5, 0, 1, "x", (0, 0, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="region 5: score"):
        AlignedRegion(5, 0, 1, "x", BOX, float("nan"))


def test_instruction_is_frozen():
    inst = build_instruction(_nmi_tweet(), [])
    assert isinstance(inst, Instruction)
    with pytest.raises(AttributeError):
        inst.target = "x"  # type: ignore[misc]
