"""Pilot, not the product: ``tiny-sam-world``'s recipe with its training clicks weighted towards
distractors, to see whether the mask generator then finds more of them.

The recipe (:mod:`iea.recipes.sam`) picks each training click's instance uniformly among the
image's drawn things; here a distractor instance weighs ``WEIGHT`` and an object 1. Everything
else is the recipe's (steps, data, seed, held-out evaluation), so the report's held-out figures
compare with the cached ``tiny-sam-world``'s ``train_report.json``. The result is a folder that
``segment.sam=OUT`` loads; measure it with ``experiments/distractor_reach.py``::

    .venv/bin/python experiments/sam_distractor_clicks.py OUT WEIGHT
    .venv/bin/python experiments/distractor_reach.py --config configs/demo.yaml segment.sam=OUT

It patches two private functions of the recipe for its own process only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

import iea.recipes.sam as recipe


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    out, weight = sys.argv[1], float(sys.argv[2])
    plain_init = recipe._Data.__init__

    def init(self, sam, seed, n):
        plain_init(self, sam, seed, n)
        self.kinds = []  # per image: instance id -> kind
        for k in range(n):
            _, _, drawn = recipe.scene(seed, k, recipe.TRAIN["distractors"])
            self.kinds.append({i + 1: d.kind for i, d in enumerate(drawn)})

    def sample_prompts(data, idx, rng):
        """:func:`iea.recipes.sam._sample_prompts` with weighted instances."""
        points, targets, owner, scale = [], [], [], []
        for j, i in enumerate(idx.tolist()):
            pixels = data.pixels[i]
            objects = [k for k in pixels if k > 0]
            w = np.array([1.0 if data.kinds[i].get(k) == "object" else weight for k in objects])
            for _ in range(recipe.TRAIN["prompts_per_image"]):
                bg = not objects or rng.random() < recipe.TRAIN["background_clicks"]
                bg = (bg or 0 not in pixels) and 0 in pixels
                target = 0 if bg else objects[int(rng.choice(len(objects), p=w / w.sum()))]
                where = pixels[target]
                y, x = where[int(rng.integers(len(where)))]
                points.append((float(x) + 0.5, float(y) + 0.5))
                m = data.maps[i]
                targets.append(torch.zeros_like(m, dtype=torch.bool) if bg else m == target)
                owner.append(j)
                scale.append(recipe.FAINT_IOU_SCALE if target in data.faint[i] else 1.0)
        return (
            torch.tensor(points), torch.stack(targets), torch.tensor(owner), torch.tensor(scale)
        )  # fmt: skip

    recipe._Data.__init__ = init
    recipe._sample_prompts = sample_prompts
    torch.set_num_threads(2)
    recipe.build(out, 0, log=print)
    report = json.loads((Path(out) / "train_report.json").read_text())
    print(json.dumps(report["heldout"], indent=1))


if __name__ == "__main__":
    main()
