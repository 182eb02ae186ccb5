"""The LoRA training engine on the tiny Qwen3-VL: it learns (one batch overfit to near zero),
accumulation equals one big batch, a killed run resumes to the same weights, and a NaN loss
stops the run with a clear error."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from iea.models.finetune import (
    Example,
    FinetuneConfig,
    TrainingDiverged,
    generate,
    latest_checkpoint,
    prepare_model,
    train,
)
from iea.models.refs import load_vlm

pytestmark = pytest.mark.model
COLOURS = ("red", "blue", "green", "yellow", "white", "black")


def _examples(n: int = 4) -> list[Example]:
    out = []
    for i in range(n):
        c = COLOURS[i % len(COLOURS)]
        crop = Image.new("RGB", (40, 72), COLOURS[(i + 1) % len(COLOURS)])
        content = (
            {"type": "image"},
            {"type": "text", "text": f"Item {i}: the colour, then the region"},
            {"type": "image"},
            {"type": "text", "text": "answer"},
        )
        out.append(Example(f"e{i}", content, (Image.new("RGB", (64, 48), c), crop), f"{c} <POS>"))
    return out


def _model(model_cache, cfg: FinetuneConfig):
    model, processor = load_vlm("tiny-qwen3-vl", device="cpu", cache=model_cache)
    torch.manual_seed(cfg.seed)  # LoRA's A matrices are drawn from the global RNG
    return prepare_model(model, cfg), processor


def _weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _losses_and_weights(model_cache, cfg, exs, out_dir):
    """Train a fresh model: the loss of every step and the trained weights."""
    model, proc = _model(model_cache, cfg)
    losses: list[float] = []
    train(model, proc, exs, cfg, out_dir=out_dir, log=lambda m, s: losses.append(m["train.loss"]))
    return losses, _weights(model)


def test_overfit_one_batch_then_generate_the_targets(tmp_path, model_cache):
    cfg = FinetuneConfig(epochs=60, learning_rate=1e-2, batch_size=4, lora_dropout=0.0)
    model, processor = _model(model_cache, cfg)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    assert 0 < n_trainable < 0.1 * n_all  # LoRA adapters only
    losses: list[float] = []
    exs = _examples()
    model, result = train(
        model,
        processor,
        exs,
        cfg,
        out_dir=tmp_path,
        log=lambda m, step: losses.append(m["train.loss"]),
    )
    assert result.steps == 60 and len(losses) == 60
    assert losses[0] > 3.0 and losses[-1] < 0.05
    assert generate(model, processor, exs, max_new_tokens=8) == [e.target for e in exs]


def test_gradient_accumulation_equals_one_big_batch(tmp_path, model_cache):
    exs = _examples(4)
    exs[0] = Example(exs[0].key, exs[0].content, exs[0].images, "a much longer target <NEU>")
    big = FinetuneConfig(epochs=2, learning_rate=1e-3, batch_size=4, lora_dropout=0.0)
    acc = FinetuneConfig(epochs=2, learning_rate=1e-3, batch_size=1, grad_accum=4, lora_dropout=0.0)
    (l1, w1), (l2, w2) = (
        _losses_and_weights(model_cache, cfg, exs, tmp_path / name)
        for cfg, name in ((big, "big"), (acc, "acc"))
    )
    # the loss is token-weighted over the whole optimizer step, so micro-batches of unequal
    # target lengths add up to the big batch's loss, and step 2 sees the same weights
    assert len(l1) == len(l2) == 2 and l1 == pytest.approx(l2, rel=1e-5)
    for k in w1:  # Adam's first steps are ~lr * sign(grad): near-zero grads may flip
        torch.testing.assert_close(w1[k], w2[k], rtol=0, atol=2e-4)


class _Killed(Exception):
    pass


@pytest.mark.parametrize("group", [False, True], ids=["shuffled", "grouped-by-length"])
def test_killed_run_resumes_to_the_same_weights(tmp_path, model_cache, group):
    """Also with steps grouped by length (the demo's JMASA setting), on examples of three
    lengths: the resumed run sees the same steps in the same order."""
    cfg = FinetuneConfig(
        epochs=3,
        learning_rate=5e-3,
        batch_size=2,
        lora_dropout=0.1,
        checkpoint_every=1,
        group_by_length=group,
    )
    # 3 steps per epoch, 9 in all; dropout on: the RNG must resume too
    exs = _varied_examples(6) if group else _examples(6)
    ref_model, proc = _model(model_cache, cfg)
    ref_losses: list[float] = []
    train(
        ref_model,
        proc,
        exs,
        cfg,
        out_dir=tmp_path / "ref",
        log=lambda m, s: ref_losses.append(m["train.loss"]),
    )

    def crash_at_5(metrics, step):
        if step == 5:
            raise _Killed

    model, proc = _model(model_cache, cfg)
    with pytest.raises(_Killed):
        train(model, proc, exs, cfg, out_dir=tmp_path / "run", log=crash_at_5)
    assert latest_checkpoint(tmp_path / "run").name == "step-0000004"

    model, proc = _model(model_cache, cfg)  # a new process would start from the base again
    losses: list[float] = []
    model, result = train(
        model,
        proc,
        exs,
        cfg,
        out_dir=tmp_path / "run",
        log=lambda m, s: losses.append(m["train.loss"]),
    )
    assert result.resumed_from == 4 and result.steps == 9
    assert losses == pytest.approx(ref_losses[4:], rel=1e-5)
    ref, got = _weights(ref_model), _weights(model)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-7)


def test_resume_with_other_settings_is_refused(tmp_path, model_cache):
    cfg = FinetuneConfig(epochs=1, learning_rate=1e-3, batch_size=4, lora_dropout=0.0)
    model, proc = _model(model_cache, cfg)
    train(model, proc, _examples(), cfg, out_dir=tmp_path)
    other = FinetuneConfig(epochs=1, learning_rate=2e-3, batch_size=4, lora_dropout=0.0)
    model, proc = _model(model_cache, other)
    with pytest.raises(ValueError, match="other settings"):
        train(model, proc, _examples(), other, out_dir=tmp_path)


def test_resume_on_other_data_is_refused_and_no_resume_starts_from_an_empty_folder(
    tmp_path, model_cache
):
    """A checkpoint belongs to its examples (their fingerprint), not only to the settings;
    ``resume=False`` clears the checkpoints of an earlier run before training."""
    cfg = FinetuneConfig(epochs=1, learning_rate=1e-3, batch_size=4, lora_dropout=0.0)
    model, proc = _model(model_cache, cfg)
    train(model, proc, _examples(4), cfg, out_dir=tmp_path)
    other = _examples(4)
    other[0] = Example("e0", other[1].content, other[1].images, other[1].target)  # same key
    model, proc = _model(model_cache, cfg)
    with pytest.raises(ValueError, match="other data"):
        train(model, proc, other, cfg, out_dir=tmp_path)
    marker = tmp_path / "checkpoints" / "stale"
    marker.write_text("from the earlier run")
    model, proc = _model(model_cache, cfg)
    _, result = train(model, proc, other, cfg, out_dir=tmp_path, resume=False)
    assert result.resumed_from is None and not marker.exists()


def test_a_non_finite_gradient_norm_stops_like_a_nan_loss(tmp_path, model_cache):
    cfg = FinetuneConfig(epochs=1, learning_rate=1e-3, batch_size=2, lora_dropout=0.0)
    model, proc = _model(model_cache, cfg)
    p = next(p for n, p in model.named_parameters() if "lora_A" in n)
    p.register_hook(lambda g: g * float("inf"))  # the loss stays finite, its gradient does not
    with pytest.raises(TrainingDiverged, match=r"gradient norm is (nan|inf) at step 1"):
        train(model, proc, _examples(), cfg, out_dir=tmp_path)


def test_nan_loss_stops_with_a_clear_error(tmp_path, model_cache):
    cfg = FinetuneConfig(epochs=2, learning_rate=1e-3, batch_size=2, lora_dropout=0.0)
    model, proc = _model(model_cache, cfg)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 1 .* examples \['e"):
        train(model, proc, _examples(), cfg, out_dir=tmp_path)


def test_bad_examples_are_named(tmp_path, model_cache):
    cfg = FinetuneConfig(epochs=1, lora_dropout=0.0)
    model, proc = _model(model_cache, cfg)
    ex = _examples(1)[0]
    no_image = Example("tweet-7", ex.content, ex.images[:1], "x <POS>")
    with pytest.raises(ValueError, match="tweet-7.*2 image entries.*1 images"):
        train(model, proc, [no_image], cfg, out_dir=tmp_path)
    with pytest.raises(ValueError, match="empty target"):
        train(model, proc, [Example("t", ex.content, ex.images, "")], cfg, out_dir=tmp_path)


def test_examples_over_max_tokens_are_left_out_and_listed(tmp_path, model_cache):
    """A length cap: the longer examples are not trained on, each is listed with its key and
    length in ``rejects.jsonl``; a cap no example fits names itself."""
    import json

    from iea.models.finetune import encode

    model, proc = _model(model_cache, FinetuneConfig(epochs=1, lora_dropout=0.0))
    exs = _varied_examples(6)  # 0, 1 or 2 region crops: three lengths
    lengths = {e.key: len(encode(proc, e).input_ids) for e in exs}
    cap = sorted(set(lengths.values()))[1]  # the longest third is over it
    cfg = FinetuneConfig(epochs=1, batch_size=2, lora_dropout=0.0, max_tokens=cap)
    _, result = train(model, proc, exs, cfg, out_dir=tmp_path / "a")
    over = sorted(k for k, n in lengths.items() if n > cap)
    assert over and result.rejected == len(over) and result.train_examples_seen == 6 - len(over)
    rows = [json.loads(x) for x in (tmp_path / "a" / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["key"] for r in rows) == over
    assert all(r["tokens"] == lengths[r["key"]] > cap == r["max_tokens"] for r in rows)
    cfg = FinetuneConfig(epochs=1, lora_dropout=0.0, max_tokens=min(lengths.values()) - 1)
    with pytest.raises(ValueError, match=r"all 6 examples are over max_tokens=.*rejects.jsonl"):
        train(model, proc, exs, cfg, out_dir=tmp_path / "b")
    with pytest.raises(ValueError, match="max_tokens"):
        FinetuneConfig(max_tokens=0)


def test_eval_every_evaluates_those_epochs_and_the_last_and_selects_among_them(
    tmp_path, model_cache
):
    cfg = FinetuneConfig(epochs=5, learning_rate=1e-3, batch_size=4, lora_dropout=0.0, eval_every=2)
    model, proc = _model(model_cache, cfg)
    seen: list[int] = []
    scores = {1: 0.9, 2: 0.2, 3: 0.99, 4: 0.5, 5: 0.4}  # epoch 3 would win if it were evaluated

    def evaluate(m) -> dict[str, float]:
        seen.append(len(seen))
        epoch = (2, 4, 5)[len(seen) - 1]
        return {"acc": scores[epoch]}

    model, result = train(
        model, proc, _examples(), cfg, out_dir=tmp_path, evaluate=evaluate, select="acc"
    )
    assert len(seen) == 3
    assert [("acc" in row) for row in result.history] == [False, True, False, True, True]
    assert result.best_epoch == 4 and result.best_metric == 0.5


def test_patience_stops_after_evaluations_without_a_better_metric_and_keeps_the_best(
    tmp_path, model_cache
):
    """Patience 2 stops two epochs after the best (epoch 2 of 8), keeps epoch 2's weights, and
    the epochs that ran are the full run's (the LR schedule still spans 8 epochs): the same
    weights at epoch 2 and the same losses as a run without patience."""
    scores = [0.3, 0.8, 0.5, 0.7, 0.9, 0.9, 0.9, 0.9]

    def run(patience: int, out):
        cfg = FinetuneConfig(
            epochs=8, learning_rate=1e-3, batch_size=4, lora_dropout=0.0, patience=patience
        )
        model, proc = _model(model_cache, cfg)
        seen, kept, losses = [], {}, []

        def evaluate(m) -> dict[str, float]:
            seen.append(len(seen) + 1)
            kept[len(seen)] = _weights(m)
            return {"acc": scores[len(seen) - 1]}

        model, result = train(
            model,
            proc,
            _examples(),
            cfg,
            out_dir=out,
            evaluate=evaluate,
            select="acc",
            log=lambda m, s: losses.append(m.get("train.loss")),
        )
        return model, result, seen, kept, losses

    model, result, seen, kept, losses = run(2, tmp_path / "p")
    assert seen == [1, 2, 3, 4] and result.stopped_early and result.steps == 4
    assert result.best_epoch == 2 and result.best_metric == 0.8
    assert all(torch.equal(w, kept[2][n]) for n, w in _weights(model).items())
    _, full, seen_full, kept_full, losses_full = run(0, tmp_path / "f")
    assert seen_full == list(range(1, 9)) and not full.stopped_early and full.best_epoch == 5
    assert losses == losses_full[: len(losses)]
    assert all(torch.equal(w, kept_full[2][n]) for n, w in kept[2].items())
    # a resumed run that had stopped does not train on
    again = FinetuneConfig(epochs=8, learning_rate=1e-3, batch_size=4, lora_dropout=0.0, patience=2)
    m2, p2 = _model(model_cache, again)
    _, res2 = train(
        m2,
        p2,
        _examples(),
        again,
        out_dir=tmp_path / "p",
        evaluate=lambda m: {"acc": 1.0},
        select="acc",
    )
    assert res2.resumed_from == 4 and res2.steps == 4 and res2.stopped_early


def test_patience_needs_a_metric_to_wait_on(tmp_path, model_cache):
    cfg = FinetuneConfig(epochs=2, learning_rate=1e-3, batch_size=4, patience=1)
    model, proc = _model(model_cache, cfg)
    with pytest.raises(ValueError, match="patience needs evaluate and select"):
        train(model, proc, _examples(), cfg, out_dir=tmp_path)
    with pytest.raises(ValueError, match="patience"):
        FinetuneConfig(patience=-1)


def test_eval_every_must_be_positive():
    with pytest.raises(ValueError, match="eval_every"):
        FinetuneConfig(eval_every=0)


def _varied_examples(n: int) -> list[Example]:
    """Examples of different lengths: 0 to 2 region crops, targets of 1 to 3 pairs."""
    out = []
    for i in range(n):
        c = COLOURS[i % len(COLOURS)]
        content: list[dict] = [{"type": "image"}, {"type": "text", "text": f"Item {i}"}]
        images = [Image.new("RGB", (64, 48), c)]
        for k in range(i % 3):
            content += [{"type": "image"}, {"type": "text", "text": f"region {k}"}]
            images.append(Image.new("RGB", (32 + 16 * k, 40), COLOURS[(i + k + 1) % 6]))
        target = ", ".join(f"{COLOURS[(i + k) % 6]} <POS>" for k in range(1 + i % 3))
        out.append(Example(f"v{i}", tuple(content), tuple(images), target))
    return out


def test_target_only_logits_give_the_full_loss_and_gradients(tmp_path, model_cache):
    from iea.models.finetune import collate, encode, target_loss

    cfg = FinetuneConfig(epochs=1, learning_rate=1e-3, batch_size=4, lora_dropout=0.0)
    model, proc = _model(model_cache, cfg)
    batch = collate([encode(proc, e) for e in _varied_examples(4)], proc.tokenizer.pad_token_id)
    labels = batch.pop("labels")
    grads = []
    for target_logits in (False, True):
        model.zero_grad()
        loss = target_loss(model, batch, labels, target_logits=target_logits)
        loss.backward()
        grads.append((float(loss), {n: p.grad.clone() for n, p in _trainable_params(model)}))
    (full, g_full), (only, g_only) = grads
    assert only == pytest.approx(full, rel=1e-5) and full > 1.0
    for n in g_full:
        # The two paths multiply matrices of other shapes, so their sums are split differently:
        # equal up to float32 rounding, measured against the gradient's own scale (on an Intel
        # AVX-512 machine one entry of 2048 differed by 3.5e-6; the largest entries are 1 to 9).
        scale = float(g_full[n].abs().max())
        torch.testing.assert_close(g_only[n], g_full[n], rtol=1e-4, atol=1e-4 * scale)


def _trainable_params(model):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def test_fast_path_trains_like_the_naive_one(tmp_path, model_cache):
    """Split passes, target-only logits and the cached vision tower (the defaults) against
    consecutive slices, whole-vocab logits and the tower at every step (the HF way): the same
    batches, the same loss curve and weights up to float rounding; a batch of 4 examples of
    three lengths is split into passes."""
    from iea.models.finetune import encode, micro_batches

    exs = _varied_examples(12)
    fast = FinetuneConfig(epochs=3, learning_rate=5e-3, batch_size=4, lora_dropout=0.0)
    naive = FinetuneConfig(
        epochs=3,
        learning_rate=5e-3,
        batch_size=4,
        lora_dropout=0.0,
        split_by_length=False,
        target_logits=False,
        cache_vision=False,
    )
    l_fast, w_fast = _losses_and_weights(model_cache, fast, exs, tmp_path / "fast")
    l_naive, w_naive = _losses_and_weights(model_cache, naive, exs, tmp_path / "naive")
    _, proc = load_vlm("tiny-qwen3-vl", device="cpu", cache=model_cache)
    lengths = [len(encode(proc, e).input_ids) for e in exs]
    assert len(micro_batches([0, 1, 2, 3], lengths, 4, split=True)) > 1
    assert len(l_fast) == 9 and l_fast[-1] < 0.7 * l_fast[0]
    assert l_fast == pytest.approx(l_naive, rel=1e-3)
    for k in w_naive:
        torch.testing.assert_close(w_fast[k], w_naive[k], rtol=1e-3, atol=1e-4)


def test_a_prompt_cache_encodes_each_prompt_once_and_answers_the_same(model_cache):
    from iea.models.finetune import PromptCache

    cfg = FinetuneConfig(lora_dropout=0.0)
    model, processor = _model(model_cache, cfg)
    plain = generate(model, processor, _examples(4), max_new_tokens=6)
    cache = PromptCache()
    first = generate(model, processor, _examples(4), max_new_tokens=6, cache=cache)
    assert (cache.misses, cache.hits) == (4, 0) and cache.bytes > 0
    again = generate(model, processor, _examples(4), max_new_tokens=6, cache=cache)  # new objects
    assert (cache.misses, cache.hits) == (4, 4)
    assert first == again == plain
    other = _examples(1)[0]
    repainted = Example(other.key, other.content, (other.images[1], other.images[0]))
    generate(model, processor, [repainted], max_new_tokens=6, cache=cache)
    assert (cache.misses, cache.hits) == (5, 4)  # other pixels: another prompt
    full = PromptCache(max_bytes=0)  # holds nothing: every call encodes
    generate(model, processor, _examples(2), max_new_tokens=6, cache=full)
    generate(model, processor, _examples(2), max_new_tokens=6, cache=full)
    assert (full.misses, full.hits, full.bytes) == (4, 0, 0)


def test_a_buffering_logger_is_flushed_after_every_checkpoint(tmp_path, model_cache):
    class Buffering:
        def __init__(self) -> None:
            self.waiting: list[int] = []
            self.written: list[list[int]] = []

        def __call__(self, metrics, step):
            self.waiting.append(step)

        def flush(self):
            self.written.append(self.waiting)
            self.waiting = []

    cfg = FinetuneConfig(epochs=2, batch_size=1, lora_dropout=0.0, checkpoint_every=3)
    model, proc = _model(model_cache, cfg)
    log = Buffering()
    train(model, proc, _examples(4), cfg, out_dir=tmp_path, log=log)
    # checkpoints at steps 3, 4 (epoch end), 6, 8 (epoch end): all written, none waiting
    assert log.written == [[1, 2, 3], [4], [5, 6], [7, 8]] and log.waiting == []
