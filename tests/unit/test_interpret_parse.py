import numpy as np

from iea.vision.interpret import parse_answer, region_crop
from iea.vision.segment import Region


def test_parse_full_answer():
    i = parse_answer("Description: A man on a sofa.\nSentiment: Positive\nScore: 0.8")
    assert (i.description, i.polarity, i.score, i.parsed) == ("A man on a sofa.", "POS", 0.8, True)
    assert i.text == "A man on a sofa. (sentiment: positive, score +0.80)"


def test_parse_is_lenient_on_case_order_and_missing_score():
    i = parse_answer("sentiment = negative.\ndescription: rain")
    assert (i.description, i.polarity, i.score) == ("rain", "NEG", None)
    assert parse_answer("Description: x\nSentiment: neutral\nScore: 7").score == 1.0


def test_unparsed_is_kept_as_raw_text():
    for raw in [
        "",
        "qz qz <|im_end|> qz",
        "Description: x\nSentiment: happy",
        "Sentiment: positive",
    ]:
        i = parse_answer(raw)
        assert i.parsed is False and i.polarity is None and i.raw == raw
        assert i.text == i.description == " ".join(raw.split())


def test_region_crop_grays_out_other_regions():
    rgb = np.full((4, 4, 3), 9, np.uint8)
    labels = np.zeros((4, 4), np.int32)
    labels[1:3, 1:4] = 1
    labels[2, 3] = 0
    crop = region_crop(rgb, labels, Region(1, (1, 1, 3, 2), 5, 0.9, 0.9, False))
    assert crop.shape == (2, 3, 3)
    assert crop[:, :, 0].tolist() == [[9, 9, 9], [9, 9, 128]]


def test_thin_regions_are_padded_to_a_processable_aspect():
    rgb = np.zeros((2, 600, 3), np.uint8)
    labels = np.ones((2, 600), np.int32)
    crop = region_crop(rgb, labels, Region(1, (0, 0, 600, 2), 1200, 0.9, 0.9, False))
    assert crop.shape == (30, 600, 3)  # 600 / 20
    assert (crop[14:16] == 0).all() and (crop[0] == 128).all()
    tall = region_crop(
        rgb.transpose(1, 0, 2), labels.T, Region(1, (0, 0, 2, 600), 1200, 0.9, 0.9, False)
    )
    assert tall.shape == (600, 30, 3)
