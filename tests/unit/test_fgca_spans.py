"""FGCA phrase location (spans) and the synthesis prompt: fast, no model."""

from __future__ import annotations

import pytest

from iea.align.prompts import (
    FGCA_PROMPT_VERSION,
    MAX_DESCRIPTION_CHARS,
    build_prompt,
    clean_description,
    prompt_phrases,
)
from iea.align.synthesize import Span, SynthesisResult, locate, locate_all, synthesize


def _check(text: str, phrase: str, span: Span) -> None:
    assert text[span.start : span.end].lower() == phrase.lower()
    words = text.split()[span.word_start : span.word_end]
    assert phrase.split()[0].lower() in words[0].lower()
    assert phrase.split()[-1].lower() in words[-1].lower()


def test_exact_match_char_and_word_span():
    text = "Lazy Sunday: the dog and the sofa"
    span = locate(text, "dog")
    assert span == Span(17, 20, 3, 4)
    assert text[span.start : span.end] == "dog"
    assert text.split()[span.word_start : span.word_end] == ["dog"]


def test_case_insensitive_keeps_the_texts_spelling():
    text = "My DOG loves the Potted Plant!"
    dog = locate(text, "dog")
    plant = locate(text, "potted plant")
    assert text[dog.start : dog.end] == "DOG"
    assert text[plant.start : plant.end] == "Potted Plant"
    assert (plant.word_start, plant.word_end) == (4, 6)
    _check(text, "potted plant", plant)


def test_whole_words_only():
    assert locate("a category of things", "cat") is None
    assert locate("the bobcat sleeps", "cat") is None
    assert locate("cats everywhere", "cat") is None
    assert locate("the cat_1 file", "cat") is not None  # "_" is not alphanumeric
    text = "category first, then the cat."
    span = locate(text, "cat")
    assert text[span.start : span.end] == "cat"
    assert span.start == text.index(" cat.") + 1
    assert text.split()[span.word_start : span.word_end] == ["cat."]


def test_boundaries_at_text_edges_and_punctuation():
    for text in ("dog", "dog!", "#dog", "(dog)", "dog's bowl", "the dog\nsleeps", "¡dog"):
        span = locate(text, "dog")
        assert span is not None, text
        assert text[span.start : span.end] == "dog"


def test_punctuation_attached_words():
    text = "Morning walk: my dog, the sofa; a potted plant!"
    spans = locate_all(text, ["dog", "sofa", "potted plant"])
    words = text.split()
    assert words[spans["dog"].word_start : spans["dog"].word_end] == ["dog,"]
    assert words[spans["sofa"].word_start : spans["sofa"].word_end] == ["sofa;"]
    assert words[spans["potted plant"].word_start : spans["potted plant"].word_end] == [
        "potted",
        "plant!",
    ]


def test_repeated_phrase_takes_the_first_free_occurrence():
    text = "dog meets dog"
    assert locate(text, "dog") == Span(0, 3, 0, 1)
    assert locate(text, "dog", taken=[(0, 3)]) == Span(10, 13, 2, 3)
    assert locate(text, "dog", taken=[(0, 3), (10, 13)]) is None
    assert locate(text, "dog", taken=[(2, 5)]) == Span(10, 13, 2, 3)  # overlap, not only equal


def test_longest_first_potted_plant_before_plant():
    # "plant" alone would match inside "potted plant" first; longest first prevents that.
    text = "A potted plant next to a plant."
    spans = locate_all(text, ["plant", "potted plant"])
    assert list(spans) == ["plant", "potted plant"]  # the order given
    pp, p = spans["potted plant"], spans["plant"]
    assert text[pp.start : pp.end] == "potted plant"
    assert pp.start == 2
    assert p.start == text.rindex("plant")
    assert (p.word_start, p.word_end) == (6, 7)
    # Only the long phrase in the text: "plant" has no word of its own.
    spans = locate_all("A potted plant.", ["plant", "potted plant"])
    assert spans["potted plant"] is not None
    assert spans["plant"] is None


def test_missing_phrase_is_none():
    assert locate("a dog on a sofa", "potted plant") is None
    assert locate("", "dog") is None
    assert locate("a dog", "") is None
    assert locate("potted  plant", "potted plant") is None  # spaces must match
    spans = locate_all("a dog on a sofa", ["dog", "sky"])
    assert spans["sky"] is None and spans["dog"] is not None


def test_regex_characters_in_phrase_are_literal():
    assert locate("tv monitor", "tv.monitor") is None
    assert locate("a (tv) here", "(tv)") == Span(2, 6, 1, 2)


def test_synthesis_result_ok_and_reason():
    good = SynthesisResult("img", text="a dog", spans={"dog": Span(2, 5, 1, 2)}, attempts=1)
    assert good.ok and good.reason == ""
    bad = SynthesisResult("img", text="junk", attempts=3, missing=["dog"], texts=["a", "b", "junk"])
    assert not bad.ok
    assert "dog" in bad.reason and "3" in bad.reason
    assert bad.to_json()["texts"] == ["a", "b", "junk"]
    assert not SynthesisResult("img").ok


def test_build_prompt_lists_each_phrase_with_its_description():
    prompt = build_prompt(["potted plant", "dog"], ["a green plant in a pot", "a brown dog"])
    assert FGCA_PROMPT_VERSION
    assert "exactly as written: dog, potted plant\n" in prompt  # sorted, whatever the order
    assert "- dog: a brown dog\n" in prompt
    assert prompt.endswith("- potted plant: a green plant in a pot")
    assert prompt.index("- dog:") < prompt.index("- potted plant:")
    assert build_prompt(["dog", "potted plant"], ["a brown dog", "a green plant in a pot"]) == (
        prompt
    )


def test_build_prompt_with_empty_and_junk_descriptions():
    junk = "Description: \x00\x07 ]]{{ \n\n Sentiment: ??? " + "x" * 500 + "\tScore: nan"
    prompt = build_prompt(["dog", "sofa", "sky"], ["", junk, "   \n "])
    lines = [ln for ln in prompt.splitlines() if ln.startswith("- ")]
    assert len(lines) == 3
    assert lines[0] == "- dog"
    assert lines[1] == "- sky"
    assert lines[2].startswith("- sofa: Description: ]]{{ Sentiment: ??? xxx")
    assert len(lines[2]) == len("- sofa: ") + MAX_DESCRIPTION_CHARS
    assert lines[2].endswith("...")
    assert "\x00" not in prompt and "\x07" not in prompt
    assert prompt.count("\n") == 4  # after the instruction, "Regions:" and two lines
    # No descriptions at all is fine too.
    assert build_prompt(["dog"], []).endswith("Regions:\n- dog")


def test_build_prompt_lists_phrases_equal_up_to_case_once():
    pairs = prompt_phrases(["Dog", "cat", "dog"], ["first", "", "second"])
    assert pairs == [("cat", ""), ("Dog", "first")]


def test_build_prompt_rejects_bad_input():
    with pytest.raises(ValueError):
        build_prompt([], [])
    with pytest.raises(ValueError):
        build_prompt(["dog", "sofa"], ["one"])
    with pytest.raises(ValueError):
        build_prompt(["dog\ncat"], [])
    with pytest.raises(ValueError):
        build_prompt(["  "], [])


def test_clean_description():
    assert clean_description(None) == ""
    assert clean_description("  a  b\n c ") == "a b c"
    assert len(clean_description("y" * 1000)) == MAX_DESCRIPTION_CHARS


class _FakeLLM:
    """Answers from a script: ``answers[attempt][prompt index]``; records every call."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def generate_text(self, prompts, max_new_tokens, *, batch_size, do_sample, temperature, seed):
        k = len(self.calls)
        self.calls.append(
            {"n": len(prompts), "do_sample": do_sample, "seed": seed, "temperature": temperature}
        )
        return list(self.answers[k][: len(prompts)])


def test_synthesize_retries_only_misses_with_seeded_sampling():
    items = [("a", ["dog", "sofa"], ["", ""]), ("b", ["cat"], ["junk"]), ("c", ["sky"], [])]
    llm = _FakeLLM(
        [
            ["<think>\n\n</think>\n\n A dog on a Sofa! ", "nothing here", "no"],
            ["a cat", "still nothing"],  # attempt 2: items b, c
            ["sky?"],  # attempt 3: item c
        ]
    )
    res = synthesize(llm, items, seed=10, max_new_tokens=16, max_attempts=3, batch_size=4)
    assert [c["do_sample"] for c in llm.calls] == [False, True, True]
    assert [c["seed"] for c in llm.calls] == [None, 12, 13]
    assert [c["n"] for c in llm.calls] == [3, 2, 1]
    a, b, c = res
    assert a.ok and a.attempts == 1 and a.text == "A dog on a Sofa!"
    assert a.text[a.spans["sofa"].start : a.spans["sofa"].end] == "Sofa"
    assert b.ok and b.attempts == 2 and b.texts == ["nothing here", "a cat"]
    assert c.ok and c.attempts == 3 and c.texts == ["no", "still nothing", "sky?"]


def test_synthesize_quarantines_after_max_attempts_without_raising():
    items = [("a", ["potted plant", "plant"], ["", ""])]
    llm = _FakeLLM([["a potted plant"], [""], [None]])  # bad outputs, even a non-string
    (res,) = synthesize(llm, items, seed=0, max_new_tokens=8, max_attempts=3, batch_size=1)
    assert not res.ok
    assert res.attempts == 3 and len(res.texts) == 3
    assert res.missing == ["potted plant", "plant"]
    assert res.spans == {}
    assert "missing" in res.reason or "empty" in res.reason


def test_synthesize_rejects_bad_arguments_before_generating():
    llm = _FakeLLM([])
    with pytest.raises(ValueError):
        synthesize(llm, [("a", [], [])], seed=0, max_new_tokens=8, max_attempts=1, batch_size=1)
    with pytest.raises(ValueError):
        synthesize(llm, [("a", ["dog"], [])], seed=0, max_new_tokens=8, max_attempts=0,
                   batch_size=1)  # fmt: skip
    assert llm.calls == []


def test_synthesize_phrases_equal_up_to_case_share_a_span():
    llm = _FakeLLM([["A dog and a cat"]])
    (res,) = synthesize(
        llm, [("a", ["Dog", "cat", "dog"], [])], seed=0, max_new_tokens=8, max_attempts=1,
        batch_size=1,
    )  # fmt: skip
    assert res.ok
    assert set(res.spans) == {"Dog", "cat", "dog"}
    assert res.spans["Dog"] == res.spans["dog"] == Span(2, 5, 1, 2)


def test_synthesize_samples_the_first_attempt_when_not_greedy_first():
    llm = _FakeLLM([["no"], ["a dog"]])
    (res,) = synthesize(
        llm, [("a", ["dog"], [])], seed=10, max_new_tokens=8, max_attempts=2, batch_size=1,
        greedy_first=False,
    )  # fmt: skip
    assert [c["do_sample"] for c in llm.calls] == [True, True]
    assert [c["seed"] for c in llm.calls] == [11, 12]
    assert res.ok and res.attempts == 2


def test_fgca_cache_key_changes_with_the_interpreters_recipe(tmp_path, monkeypatch):
    """The per-image FGCA cache holds the interpreter's descriptions: a rebuilt tiny
    interpreter (same name, new recipe) must miss, a logging setting must not."""
    from types import SimpleNamespace

    import numpy as np

    import iea.align.build as build
    from iea.config import load_settings
    from iea.store import open_store

    image = tmp_path / "a.jpg"
    image.write_bytes(b"pixels")
    sample = SimpleNamespace(image_path=image, label_map=np.zeros((4, 4), np.int32))
    settings = load_settings("configs/demo.yaml", [f"store.root={tmp_path / 'store'}"])
    builder = build.FgcaBuilder(settings, open_store(settings.store), llm=object(), interpreter=1)
    before = builder.cache_key(sample)
    real = build.tiny_identity
    monkeypatch.setattr(
        build,
        "tiny_identity",
        lambda name, seed: real(name, seed=seed) + ("-new" if "interp" in name else ""),
    )
    assert builder.cache_key(sample) != before
