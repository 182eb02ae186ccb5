import pytest

from iea.metrics import format_pairs, parse_pairs, parse_prediction, score, spans_for

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
    # MASC over 4 gold aspects: POS right, NEG->POS wrong, NEU right, NEG missing
    assert r["masc"]["acc"] == pytest.approx(0.5)
    assert r["masc"]["coverage"] == pytest.approx(0.75)
    # per class F1: POS tp1 pred2 gold1 -> 2/3; NEU 1.0; NEG tp0 -> 0  => macro 5/9
    assert r["masc"]["f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    assert r["tweets"] == 3


def test_perfect_and_empty():
    gold = {"a": [(0, 2, "POS")], "b": []}
    assert score(gold, gold)["jmasa"]["f1"] == 1.0
    empty = score(gold, {})
    assert empty["jmasa"] == {"p": 0.0, "r": 0.0, "f1": 0.0, "tp": 0, "pred": 0, "gold": 1}
    assert empty["masc"]["acc"] == 0.0


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
