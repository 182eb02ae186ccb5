"""Does a trained JMASA model read the region descriptions ``E`` next to the phrases?

Scores one trained model on one split four times, changing only the descriptions of the
aligned regions in its instructions (``--ablation``, default ``full``): as the interpreter
wrote them, with every colour and sentiment word rotated (green -> red -> blue -> green,
positive -> negative -> neutral -> positive), with the world's class words hidden ("a green
thing with dots"), and blanked to "a thing". A model that takes the polarity from ``E``
follows the rotation (MASC falls towards 0 on the aligned aspects); one that ignores ``E``
does not move. One that pairs an appended region with its phrase by the class word
(``--ablation no_nmi``) loses the pairing when the class words are hidden.
Per-aspect counts split the gold aspects into those a region is aligned to and the rest.

    .venv/bin/python experiments/read_descriptions.py --config configs/demo.yaml \\
        --tweets outputs/store/datasets/twitter/synthetic-twitter/<version>/test.jsonl \\
        --images outputs/work/synthetic/<folder>/images \\
        --jmasa outputs/work/models/jmasa/<key>/model \\
        --aligner outputs/work/models/aligner/<key>/model [--ablation no_nmi]

Interpretations and alignments come from the store's caches when present (same config).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

ROTATE = {
    "positive": "negative",
    "negative": "neutral",
    "neutral": "positive",
    "green": "red",
    "red": "blue",
    "blue": "green",
}


def rotate(description: str) -> str:
    out = []
    for word in description.replace("(", "( ").split():
        bare = word.rstrip(",")
        out.append(ROTATE.get(bare, bare) + word[len(bare) :])
    return " ".join(out).replace("( ", "(")


def main() -> None:
    from _regions import aligned_split_parser

    ap = aligned_split_parser(__doc__)
    ap.add_argument("--jmasa", required=True, type=Path)
    ap.add_argument("--ablation", default="full", help="the layout the model was trained on")
    args = ap.parse_args()

    from _regions import aligned_split

    from iea.data.world import WORLD_CLASSES
    from iea.jmasa import jmasa_examples, predict, score_predictions
    from iea.models.finetune import load_trained

    tweets, inputs, aligned = aligned_split(args.config, args.tweets, args.images, args.aligner)
    jm, jp = load_trained(args.jmasa, device="cpu")

    def hide_classes(description: str) -> str:
        out = []
        for word in description.replace("(", "( ").split():
            bare = word.rstrip(",.")
            out.append(("thing" if bare in WORLD_CLASSES else bare) + word[len(bare) :])
        return " ".join(out).replace("( ", "(")

    variants = {
        "as written": None,
        "rotated": rotate,
        "classes hidden": hide_classes,
        "blank": lambda _: "a thing",
    }
    report = {}
    for name, change in variants.items():
        regions = [
            [dataclasses.replace(r, description=change(r.description)) if change else r for r in al]
            for al in aligned
        ]
        examples, _ = jmasa_examples(inputs, regions, ablation=args.ablation)
        rows = predict(jm, jp, examples, tweets, max_new_tokens=32, batch_size=8)
        scores = score_predictions(rows, tweets)
        counts = {"aligned": [0, 0], "not aligned": [0, 0]}  # [polarity right, found]
        for item, al, row in zip(inputs, aligned, rows, strict=True):
            got = {(a["from"], a["to"]): a["polarity"] for a in row["aspects"]}
            for a in item.tweet.aspects:
                kind = (
                    "aligned"
                    if any(r.word_start < a.end and a.start < r.word_end for r in al)
                    else "not aligned"
                )
                if (a.start, a.end) in got:
                    counts[kind][1] += 1
                    counts[kind][0] += got[(a.start, a.end)] == a.polarity
        report[name] = {
            **{k: round(scores[k], 3) for k in ("jmasa_f1", "mate_f1", "masc_acc")},
            **{f"masc_{k}": f"{r}/{f}" for k, (r, f) in counts.items()},
        }
        print(name, report[name], flush=True)


if __name__ == "__main__":
    main()
