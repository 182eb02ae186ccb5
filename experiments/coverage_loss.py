"""Where the aligner's coverage is lost on the demo world's tweets.

Every gold aspect of one split falls in one of three kinds: ``covered`` (a kept region is aligned
to a span overlapping it), ``named, not aligned`` (a kept region's description names the
aspect's class, but the aligner did not align it there), ``no region names the class`` (SAM, the
filters or the interpreter lost it). Aligned regions are also checked: ``right`` when the
description names a class word of the span it is aligned to. The world's aspect terms end in
their class name (:func:`iea.data.synthetic.aspect_class`), so this needs no region labels.

    .venv/bin/python experiments/coverage_loss.py --config configs/demo.yaml \\
        --tweets outputs/store/datasets/twitter/synthetic-twitter/<version>/test.jsonl \\
        --images outputs/work/synthetic/<folder>/images \\
        --aligner outputs/work/models/aligner/<key>/model

Interpretations and alignments come from the store's caches when present (same config).
"""

from __future__ import annotations

import collections
import json


def main() -> None:
    from _regions import aligned_split_parser

    ap = aligned_split_parser(__doc__)
    ap.add_argument("--show", type=int, default=5, help="misses to print")
    args = ap.parse_args()

    from _regions import aligned_split

    from iea.data.synthetic import aspect_class

    _, inputs, aligned = aligned_split(args.config, args.tweets, args.images, args.aligner)
    kinds: collections.Counter = collections.Counter()
    shown = 0
    for item, al in zip(inputs, aligned, strict=True):
        tokens = item.tweet.tokens
        for a in item.tweet.aspects:
            cls = aspect_class(tokens, a)
            named = [r for r in item.regions if cls in r.description.split()]
            if any(r.word_start < a.end and a.start < r.word_end for r in al):
                kinds["covered"] += 1
            elif named:
                kinds["named, not aligned"] += 1
                if shown < args.show:
                    shown += 1
                    print("miss:", " ".join(tokens), "|", [r.description for r in named])
            else:
                kinds["no region names the class"] += 1
    right = sum(
        any(w in r.description.split() for w in item.tweet.tokens[r.word_start : r.word_end])
        for item, al in zip(inputs, aligned, strict=True)
        for r in al
    )
    total = sum(map(len, aligned))
    regions = sum(len(item.regions) for item in inputs)
    print(json.dumps({**kinds, "aligned": f"{right}/{total} right", "kept regions": regions}))


if __name__ == "__main__":
    main()
