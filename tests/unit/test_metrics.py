import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from iea.metrics import (
    compact,
    format_pairs,
    matches,
    occurrences,
    parse_pairs,
    parse_prediction,
    score,
    spans_for,
)

TOKENS = tuple("RT @ fan : Chuck Bass is everything # MCM and Chuck loves Chuck Bass".split(" "))


def test_hand_worked_scores():
    gold = {
        "a": [(0, 2, "POS"), (3, 4, "NEG")],
        "b": [(1, 3, "NEU")],
        "c": [(0, 1, "NEG")],
    }
    pred = {
        "a": [
            (0, 2, "POS"),
            (3, 4, "POS"),
            (5, 6, "NEU"),
        ],  # 1 right, 1 wrong polarity, 1 extra span
        "b": [(1, 3, "NEU")],  # right
        # "c" missing: empty prediction
    }
    r = score(gold, pred)
    # JMASA: tp 2, predicted 4, gold 4
    assert r["jmasa"]["tp"] == 2 and r["jmasa"]["pred"] == 4 and r["jmasa"]["gold"] == 4
    assert r["jmasa"]["p"] == pytest.approx(0.5) and r["jmasa"]["r"] == pytest.approx(0.5)
    assert r["jmasa"]["f1"] == pytest.approx(0.5)
    # MATE: spans (0,2),(3,4),(1,3) right out of 4 predicted, 4 gold
    assert r["mate"]["p"] == pytest.approx(0.75) and r["mate"]["r"] == pytest.approx(0.75)
    # MASC given the aspect: the 3 gold aspects whose span was found: POS right, NEG->POS
    # wrong, NEU right; the missed NEG of "c" is a MATE error, not a MASC one
    assert r["masc"]["n"] == 3 and r["masc"]["acc"] == pytest.approx(2 / 3)
    assert r["masc"]["coverage"] == pytest.approx(0.75) == r["mate"]["r"]
    # per class F1: POS tp1 pred2 gold1 -> 2/3; NEU 1.0; NEG tp0 -> 0  => macro 5/9
    assert r["masc"]["f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    # joint: over all 4 gold aspects, the missed one counts wrong
    assert r["masc_joint"]["n"] == 4 and r["masc_joint"]["acc"] == pytest.approx(0.5)
    assert r["masc_joint"]["acc"] == pytest.approx(r["masc"]["acc"] * r["masc"]["coverage"])
    assert r["masc_joint"]["f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    assert r["tweets"] == 3


def test_masc_is_not_lowered_by_missed_spans():
    gold = {"a": [(0, 1, "POS"), (2, 3, "NEG"), (4, 5, "NEU"), (6, 7, "NEU")]}
    r = score(gold, {"a": [(0, 1, "POS"), (2, 3, "NEG")]})  # half the aspects missed
    assert r["masc"] == {"acc": 1.0, "f1": 1.0, "n": 2, "coverage": 0.5}
    assert r["masc_joint"]["acc"] == 0.5 and r["masc_joint"]["n"] == 4
    # NEU: never predicted -> F1 0; POS and NEG perfect
    assert r["masc_joint"]["f1"] == pytest.approx(2 / 3)


def test_masc_span_with_two_polarities_is_wrong():
    r = score({"a": [(0, 1, "POS")]}, {"a": [(0, 1, "POS"), (0, 1, "NEG")]})
    assert r["masc"]["n"] == 1 and r["masc"]["acc"] == 0.0
    assert r["jmasa"]["tp"] == 1 and r["jmasa"]["pred"] == 2


def test_perfect_and_empty():
    gold = {"a": [(0, 2, "POS")], "b": []}
    perfect = score(gold, gold)
    assert perfect["jmasa"]["f1"] == 1.0
    assert perfect["masc"]["acc"] == perfect["masc_joint"]["acc"] == 1.0
    empty = score(gold, {})
    assert empty["jmasa"] == {"p": 0.0, "r": 0.0, "f1": 0.0, "tp": 0, "pred": 0, "gold": 1}
    assert empty["masc"] == {"acc": 0.0, "f1": 0.0, "n": 0, "coverage": 0.0}
    assert empty["masc_joint"] == {"acc": 0.0, "f1": 0.0, "n": 1}


def test_unknown_ids_are_an_error():
    with pytest.raises(ValueError, match="not in the gold set: zz"):
        score({"a": []}, {"zz": []})


def test_predictions_are_sets():
    gold = {"a": [(0, 2, "POS")]}
    r = score(gold, {"a": [(0, 2, "POS"), (0, 2, "POS")]})
    assert r["jmasa"]["pred"] == 1 and r["jmasa"]["p"] == 1.0


def test_unmatched_count_as_wrong_predictions():
    r = score({"a": [(0, 2, "POS")]}, {"a": [(0, 2, "POS")]}, unmatched=1, unparsed=2)
    assert r["jmasa"]["p"] == pytest.approx(0.5) and r["unparsed"] == 2


def test_format_parse_round_trip():
    pairs = [("Chuck Bass", "POS"), ("# MCM", "NEU")]
    text = format_pairs(pairs)
    assert text == "Chuck Bass <POS> ; # MCM <NEU>"
    assert parse_pairs(text) == pairs
    assert parse_pairs(format_pairs([])) == []
    assert parse_pairs("Chuck Bass <pos>") == [("Chuck Bass", "POS")]


@pytest.mark.parametrize(
    "bad", ["Chuck Bass is great", "Chuck Bass <POS> trailing", "<POS>", "x <MAYBE>"]
)
def test_unparseable_text(bad):
    assert parse_pairs(bad) is None
    p = parse_prediction(bad, TOKENS)
    assert p.parsed is False and p.aspects == ()


def test_spans_for_maps_strings_to_word_spans():
    p = spans_for([("Chuck Bass", "POS"), ("# mcm", "NEU"), ("Elvis", "NEG")], TOKENS)
    assert p.aspects == ((4, 6, "POS"), (8, 10, "NEU"))
    assert p.unmatched == ("Elvis",)


def test_repeated_string_takes_successive_occurrences():
    p = spans_for([("Chuck Bass", "POS"), ("Chuck Bass", "NEG")], TOKENS)
    assert p.aspects == ((4, 6, "POS"), (13, 15, "NEG"))


def test_repeated_identical_pair_counts_once():
    tokens = ("Go", "Elvis", "!")
    p = spans_for([("Elvis", "POS"), ("Elvis", "POS"), ("Zed", "NEG"), ("Zed", "NEG")], tokens)
    assert p.aspects == ((1, 2, "POS"),) and p.unmatched == ("Zed",)


@pytest.mark.parametrize(
    ("tokens", "written", "span"),
    [
        (("RT", "#", "LFC", "win"), "#LFC", (1, 3)),
        (("RT", "#", "LFC", "win"), "# LFC", (1, 3)),
        (("RT", "#LFC", "win"), "# LFC", (1, 2)),
        (("thanks", "@", "user", "!"), "@user", (1, 3)),
        (("Mr", ".", "Smith", "came"), "Mr. Smith", (0, 3)),
        (("Mr.", "Smith", "came"), "Mr . Smith", (0, 2)),
        (("the", "U.S", ".", "team"), "U.S.", (1, 3)),
        (("the", "U", ".", "S", ".", "team"), "U.S .", (1, 5)),
        (("I", "don", "'t", "care"), "don't", (1, 3)),
        (("I", "love", "❤", "Paris"), "love❤", (1, 3)),
        (("2014", "-", "15", "season"), "2014-15 season", (0, 4)),
        (("RT", "#", "lfc", "win"), "#LFC", (1, 3)),  # case after spacing
    ],
)
def test_spacing_around_split_punctuation_does_not_matter(tokens, written, span):
    p = spans_for([(written, "POS")], tokens)
    assert p.aspects == ((*span, "POS"),) and p.unmatched == ()


@pytest.mark.parametrize(
    ("tokens", "written"),
    [
        (("#", "LFCicon"), "#LFC"),  # never inside a token
        (("#LFCicon",), "LFC"),
        (("New", "Yorker"), "NewYork"),
    ],
)
def test_matches_on_token_boundaries_only(tokens, written):
    p = spans_for([(written, "NEU")], tokens)
    assert p.aspects == () and p.unmatched == (written,)


def test_whitespace_removed_entirely_is_the_weakest_form():
    tokens = ("New", "York", "and", "NewYork", "#", "JustinBieber")
    assert occurrences("New York", tokens) == [(0, 2)]
    assert occurrences("NewYork", tokens) == [(3, 4)]
    assert matches("NewYork", tokens) == {(0, 2): 4, (3, 4): 0}
    assert spans_for([("Justin Bieber", "POS")], tokens).aspects == ((5, 6, "POS"),)
    assert spans_for([("newyork", "POS")], tokens).aspects == ((3, 4, "POS"),)
    assert compact("New  York") == "New York"  # a space between two letters is kept


def test_exact_form_wins_over_a_respaced_one():
    tokens = ("#", "LFC", "and", "#LFC")
    assert occurrences("#LFC", tokens) == [(3, 4)]
    assert occurrences("# LFC", tokens) == [(0, 2)]


def test_order_can_take_a_worse_form():
    tokens = ("#", "LFC", "x", "#LFC")
    p = spans_for([("x", "POS"), ("# LFC", "NEU")], tokens)
    assert p.aspects == ((2, 3, "POS"), (3, 4, "NEU"))
    # a lower-cased answer keeps the text order rather than the exact-case tag body
    tokens = tuple("moms group in Peoria ? # parenting # peoria".split())
    p = spans_for([("peoria", "NEU"), ("# peoria", "NEU")], tokens)
    assert p.aspects == ((3, 4, "NEU"), (7, 9, "NEU"))


def test_occurrence_after_the_previous_pair():
    tokens = tuple("Obama says Donald Trump - Trump is not losing sleep".split())
    p = spans_for([("Obama", "NEG"), ("Donald Trump", "POS"), ("Trump", "NEU")], tokens)
    assert p.aspects == ((0, 1, "NEG"), (2, 4, "POS"), (5, 6, "NEU"))
    # a string listed before the longer phrase takes the one inside it
    p = spans_for([("Trump", "NEU")], tokens)
    assert p.aspects == ((3, 4, "NEU"),)


def test_bare_string_prefers_the_plain_word_to_a_tag_body():
    tokens = tuple("RT @ CERN : Breaking news : CERN researchers confirm".split())
    assert spans_for([("CERN", "NEU")], tokens).aspects == ((7, 8, "NEU"),)
    assert spans_for([("@ CERN", "NEU")], tokens).aspects == ((1, 3, "NEU"),)
    # both annotated: order decides, the tag body is taken where it has to be
    both = spans_for([("CERN", "NEG"), ("CERN", "POS")], tokens)
    assert both.aspects == ((2, 3, "NEG"), (7, 8, "POS"))
    # a tag body is still found when it is the only occurrence
    assert spans_for([("MCM", "NEU")], TOKENS).aspects == ((9, 10, "NEU"),)


def test_out_of_order_answer_still_maps_every_string():
    tokens = tuple("A x B x A".split())
    p = spans_for([("B", "POS"), ("A", "NEG"), ("A", "NEU")], tokens)
    assert {(s, e) for s, e, _ in p.aspects} <= {(0, 1), (2, 3), (4, 5)}
    assert len(p.aspects) == 3 and p.unmatched == ()


def test_compact():
    assert compact("  # LFC ") == "#LFC"
    assert compact("Mr .  Smith") == "Mr.Smith"
    assert compact("New \t York") == "New York"
    assert compact("") == ""


# --------------------------------------------------------------------------- properties

_WORD = st.text(
    alphabet=st.characters(blacklist_categories=("Z", "C")), min_size=1, max_size=6
).filter(lambda s: s.split() == [s])
_TOKENS = st.lists(_WORD, min_size=1, max_size=12)


@st.composite
def _written_span(draw):
    """Tokens, a span of them, and that span written with any spacing a tokeniser could undo:
    one or more spaces between two letters/digits, none or some elsewhere."""
    tokens = draw(_TOKENS)
    i = draw(st.integers(0, len(tokens) - 1))
    j = draw(st.integers(i + 1, len(tokens)))
    text = tokens[i]
    for a, b in zip(tokens[i : j - 1], tokens[i + 1 : j], strict=True):
        if a[-1].isalnum() and b[0].isalnum():
            sep = draw(st.sampled_from([" ", "  "]))
        else:
            sep = draw(st.sampled_from(["", " ", "  "]))
        text += sep + b
    return tokens, (i, j), text


@settings(max_examples=200, deadline=None)
@given(_written_span())
def test_property_any_spacing_finds_the_span(case):
    tokens, span, text = case
    hits = occurrences(text, tokens)
    assert hits, (tokens, text)
    # sound: each hit is a whole-token span naming the string (same case, or casefolded)
    for a, b in hits:
        got = compact(" ".join(tokens[a:b]))
        assert got == compact(text) or got.casefold() == compact(text).casefold()
    # complete: the span itself is found, unless the same words occur exactly elsewhere
    exact = [h for h in hits if list(tokens[h[0] : h[1]]) == text.split()]
    assert span in hits or exact


# Gold phrases and filler share no token, so each gold phrase occurs only inside gold spans:
# then the answer must parse back to exactly the gold, written spaced or glued.
_GOLD_TOKENS = ["Trump", "Donald", "#", "@", "LFC", "U", ".", "S", "❤", "Mr", "Smith", "'t"]
_FILLER = ["RT", ":", "the", "and", ",", "!", "http://t.co/x", "…", "is"]
_POL = st.sampled_from(["POS", "NEU", "NEG"])


@st.composite
def _tweet(draw):
    tokens: list[str] = []
    gold: list[tuple[int, int, str]] = []
    for _ in range(draw(st.integers(0, 6))):
        tokens += draw(st.lists(st.sampled_from(_FILLER), max_size=3))
        if gold and draw(st.booleans()):  # the previous phrase again, any polarity
            phrase = tokens_of(tokens, gold[-1])
        else:
            phrase = draw(st.lists(st.sampled_from(_GOLD_TOKENS), min_size=1, max_size=3))
        gold.append((len(tokens), len(tokens) + len(phrase), draw(_POL)))
        tokens += phrase
    tokens += draw(st.lists(st.sampled_from(_FILLER), max_size=3))
    return tuple(tokens or ["RT"]), gold


def tokens_of(tokens, aspect):
    return list(tokens[aspect[0] : aspect[1]])


@settings(max_examples=300, deadline=None)
@given(_tweet(), st.booleans())
def test_property_gold_target_round_trips(tweet, glued):
    tokens, gold = tweet
    terms = [" ".join(tokens[s:e]) for s, e, _ in gold]
    if glued:
        terms = [compact(t) for t in terms]
    text = format_pairs([(t, pol) for t, (_, _, pol) in zip(terms, gold, strict=True)])
    p = parse_prediction(text, tokens)
    assert p.parsed and p.unmatched == ()
    assert set(p.aspects) == set(gold)
    assert score({"t": gold}, {"t": p.aspects})["jmasa"]["f1"] == (1.0 if gold else 0.0)


@example(tokens=["Ê", "ê"], pol="POS")
@settings(max_examples=100, deadline=None)
@given(_TOKENS, _POL)
def test_property_repeated_pair_and_unknown_string(tokens, pol):
    """A repeated string takes successive occurrences in any form (the module's rule (a) comes
    before (b)), and counts once when it matches one span only; hypothesis found the case
    where a casefolded second occurrence exists."""
    term = tokens[0]
    hits = occurrences(term, tokens)
    anywhere = set(matches(term, tokens))  # every form: repeats take successive occurrences,
    once = spans_for([(term, pol)], tokens)  # also a casefolded one (['Ê', 'ê'] gives both)
    again = spans_for([(term, pol)] * (len(anywhere) + 2), tokens)
    assert once.aspects == ((*hits[0], pol),)
    assert set(again.aspects) <= {(*h, pol) for h in anywhere} and once.aspects[0] in again.aspects
    if len(anywhere) == 1:  # a repeated prediction counts once
        assert again.aspects == once.aspects
    stranger = "\u2603" * 80  # longer than any span of these tokens
    assert spans_for([(stranger, pol)], tokens).unmatched == (stranger,)
