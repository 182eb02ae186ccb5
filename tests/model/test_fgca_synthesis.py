"""FGCA text synthesis with real tiny LLMs: the trained copier writes every phrase, a random
tiny Qwen3 does not, and :func:`synthesize` turns both into the right results."""

from __future__ import annotations

import json

import pytest

from iea.align.synthesize import synthesize
from iea.models.refs import ensure_tiny, load_causal_lm
from iea.models.vlm import CausalLanguageModel
from iea.recipes.copier import RECIPE, evaluate_copier, make_examples

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def copier(model_cache):
    return CausalLanguageModel.from_ref("tiny-qwen3-fgca", device="cpu", cache=model_cache)


@pytest.fixture(scope="module")
def random_llm(model_cache):
    return CausalLanguageModel.from_ref("tiny-qwen3", device="cpu", cache=model_cache)


def test_copier_report_and_heldout_success_beats_random_base(copier, random_llm, model_cache):
    report = json.loads(
        (ensure_tiny("tiny-qwen3-fgca", cache=model_cache) / "train_report.json").read_text()
    )
    assert report["final_loss"] < 0.5 * report["first_loss"]
    assert report["heldout_success"] >= 0.85, report["heldout_examples"]
    # Fresh prompts (another seed than the report's), 1-4 phrases drawn uniformly.
    fresh = make_examples(48, seed=12345, tokenizer=copier.tokenizer, heldout=True)
    trained, texts = evaluate_copier(copier.model, copier.tokenizer, fresh, RECIPE.max_new_tokens)
    untrained, _ = evaluate_copier(
        random_llm.model, random_llm.tokenizer, fresh, RECIPE.max_new_tokens
    )
    assert trained >= 0.8, list(zip([e.phrases for e in fresh], texts, strict=True))[:5]
    assert untrained <= 0.1 and trained - untrained >= 0.7


def test_copier_tokenizer_is_the_tiny_qwen3_one(copier, random_llm):
    assert copier.tokenizer.get_vocab() == random_llm.tokenizer.get_vocab()
    model, _ = load_causal_lm("tiny-qwen3-fgca", device="cpu")  # loads by name, same path
    assert type(model).__name__ == "Qwen3ForCausalLM"


def test_synthesize_with_the_copier_gives_exact_spans(copier):
    items = [
        ("a", ["dog", "potted plant"], ["a brown dog", ""]),
        ("b", ["sky"], ["blue"]),
        ("c", ["person", "bicycle", "road"], ["", "", "grey road"]),
        ("d", ["train", "tree"], ["", ""]),
    ]
    results = synthesize(copier, items, seed=0, max_new_tokens=48, max_attempts=3, batch_size=4)
    ok = [r for r in results if r.ok]
    assert len(ok) >= 3, [r.to_json() for r in results]
    for r in ok:
        for phrase, span in r.spans.items():
            assert r.text[span.start : span.end].lower() == phrase.lower()
            words = r.text.split()[span.word_start : span.word_end]
            assert phrase.split()[0].lower() in words[0].lower()


def test_synthesize_with_a_random_llm_reports_misses(random_llm):
    items = [("a", ["dog", "potted plant"], ["", ""]), ("b", ["sky", "grass"], ["", ""])]
    results = synthesize(random_llm, items, seed=0, max_new_tokens=16, max_attempts=2, batch_size=2)
    assert not any(r.ok for r in results)
    for r in results:
        assert r.attempts == 2 and len(r.texts) == 2 and r.missing
        assert r.reason.startswith(("missing phrase", "empty text"))
