"""Would trained JMASA models find the aspects if their answers could only use the tweet's words?

Scores trained JMASA models on one split twice: as they answer (greedy, as ``iea eval`` scores
them), and with the answer's tokens restricted to the tokens of the tweet's words plus the
answer format's own (the separator and the three polarity tokens) and the end token: a class
word that is not in the tweet, copied from a region's description, can no longer be written.
Nothing else changes (same instructions, greedy, same parser and scorer); the polarity tokens
are always all allowed. The unconstrained pass must give each model's saved
``test_predictions.jsonl`` answers again (checked when the split is its test split), so the
instructions are the ones it was trained and scored with.

    IEA_MODEL_CACHE=DIR .venv/bin/python experiments/constrained_terms.py \\
        --config configs/demo.yaml \\
        --tweets outputs/store/datasets/twitter/synthetic-twitter/<version>/test.jsonl \\
        --images outputs/work/synthetic/<folder>/images \\
        --aligner outputs/work/models/aligner/<key>/model \\
        outputs/work/models/jmasa/<key> [outputs/work/models/jmasa/<key> ...]
"""

from __future__ import annotations

import json
from pathlib import Path

FORMAT = "x <POS> ; x <NEG> ; x <NEU>"
"""An answer in the format, whose tokens other than the ``x`` ones are always allowed."""


def allowed_ids(tokenizer, words: list[str], ends: list[int]) -> list[int]:
    """Token ids an answer to a tweet of ``words`` may use."""
    x = set(tokenizer(" x", add_special_tokens=False)["input_ids"])
    x |= set(tokenizer("x", add_special_tokens=False)["input_ids"])
    ids = {i for i in tokenizer(FORMAT, add_special_tokens=False)["input_ids"] if i not in x}
    for w in words:
        for form in (w, " " + w):
            ids.update(tokenizer(form, add_special_tokens=False)["input_ids"])
    return sorted(ids | set(ends))


def _held_to(generate, allow: list[list[int]]):
    """``generate`` whose ``k``-th call may only write the token ids ``allow[k]``."""
    calls = iter(allow)

    def held(*a, **kw):
        mine = next(calls)
        return generate(*a, prefix_allowed_tokens_fn=lambda _b, _ids: mine, **kw)

    return held


def main() -> None:
    from _regions import aligned_split_parser

    ap = aligned_split_parser(__doc__)
    ap.add_argument("models", nargs="+", type=Path, help="outputs/work/models/jmasa/<key> folders")
    args = ap.parse_args()

    from _regions import aligned_split

    from iea.jmasa import jmasa_examples, predict, score_predictions
    from iea.models.finetune import load_trained
    from iea.models.vlm import _end_token_ids

    tweets, inputs, aligned = aligned_split(args.config, args.tweets, args.images, args.aligner)
    none = [[] for _ in inputs]
    for folder in args.models:
        result = json.loads((folder / "result.json").read_text())
        ablation = result["ablation"]
        examples, _ = jmasa_examples(
            inputs,
            aligned if ablation in ("full", "no_interpretation", "no_nmi") else none,
            ablation=ablation,
        )
        model, processor = load_trained(folder / "model", device="cpu")
        tok = processor.tokenizer
        ends = _end_token_ids(model, tok)
        plain = predict(model, processor, examples, tweets, max_new_tokens=32, batch_size=8)
        saved = folder / "test_predictions.jsonl"
        if saved.is_file():
            old = {r["id"]: r["output"] for r in map(json.loads, saved.read_text().splitlines())}
            if set(old) == {r["id"] for r in plain}:
                same = sum(old[r["id"]] == r["output"] for r in plain)
                print(f"{folder.name}: {same}/{len(plain)} answers as saved", flush=True)

        allow = [allowed_ids(tok, t.tokens, ends) for t in tweets]
        generate = model.generate
        model.generate = _held_to(generate, allow)  # one tweet a call: batch_size 1 below
        bound = predict(model, processor, examples, tweets, max_new_tokens=32, batch_size=1)
        model.generate = generate
        for name, rows in (("as trained", plain), ("tweet words only", bound)):
            s = score_predictions(rows, tweets)
            unmatched = sum(len(r["unmatched"]) for r in rows)
            print(
                f"{folder.name} {ablation} {result['train_examples']} tweets, {name}: "
                + ", ".join(f"{k} {s[k]:.3f}" for k in ("jmasa_f1", "mate_f1", "masc_acc"))
                + f", unmatched {unmatched}",
                flush=True,
            )


if __name__ == "__main__":
    main()
