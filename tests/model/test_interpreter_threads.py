"""The interpreter stage shared between threads gives the same outputs as one thread.

Flows share one :class:`ImageInterpreter` between the workers of a thread pool. SAM's predictor
keeps the current image's features between ``set_image`` and its predictions, and a VLM can keep
per-call state too (Qwen3-VL keeps ``rope_deltas`` on the model during ``generate``): unless one
image's generation is atomic, two images swap masks or answers, which are then cached under the
wrong image. Each run uses a fresh store, so no cache hides the race, and both models are slowed
down between "set the input" and "use it" (``time.sleep`` yields the GIL) so a race, if there is
one, shows up every time rather than once in a while.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from iea.config import load_settings
from iea.store import LocalStore
from iea.vision.interpreter import ImageInterpreter, write_outputs

pytestmark = pytest.mark.model

N_IMAGES = 20
PAUSE_S = 0.003


class StatefulVLM:
    """A stand-in VLM with per-call state, like a real one: ``generate`` stores its inputs on
    the instance, pauses, and answers from what is stored. The answer is a function of the
    crop's pixels (its digest and mean brightness)."""

    def generate(self, images, prompts, max_new_tokens, batch_size=8):
        self._images = [np.asarray(im) for im in images]
        time.sleep(PAUSE_S)
        answers = []
        for a in self._images:
            digest = hashlib.sha256(a.tobytes() + repr(a.shape).encode()).hexdigest()[:12]
            mood = "positive" if a.mean() > 128 else "negative"
            answers.append(f"Description: crop {digest}\nSentiment: {mood}\nScore: 0.5")
        return answers


def _draw(index: int, size: tuple[int, int] = (96, 72)) -> np.ndarray:
    """``H x W x 3`` uint8: noise plus 2-3 flat-coloured rectangles, by ``index`` alone."""
    rng = np.random.default_rng(1000 + index)
    w, h = size
    rgb = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    for _ in range(int(rng.integers(2, 4))):
        x0, y0 = int(rng.integers(0, w - 30)), int(rng.integers(0, h - 24))
        bw, bh = int(rng.integers(20, 30)), int(rng.integers(16, 24))
        rgb[y0 : y0 + bh, x0 : x0 + bw] = rng.integers(80, 256, 3, dtype=np.uint8)
    return rgb


def _slow_predictor(generator) -> None:
    """Pause after ``set_image``: another thread gets the GIL before this one predicts."""
    predictor = generator.predictor
    set_image = predictor.set_image

    def slow_set_image(*args, **kwargs):
        set_image(*args, **kwargs)
        time.sleep(PAUSE_S)

    predictor.set_image = slow_set_image


def _run(images, root, model_cache, threads: int) -> dict[str, bytes]:
    settings = load_settings(
        overrides=[
            f"store.root={root / 'store'}",
            f"runtime.model_cache={model_cache}",
            "runtime.device=cpu",
            "segment.sam=tiny-sam",
            "segment.points_per_side=4",
            "segment.pred_iou_thresh=0.0",
            "segment.stability_score_thresh=0.0",
            "segment.box_nms_thresh=1.0",
            "filters.t_size=1",
            "filters.t_clarity=0",
            "filters.t_conf=0",
            "interpreter.batch_size=2",
        ],
        env={},
    )
    interp = ImageInterpreter(settings, LocalStore(root / "store"), vlm=StatefulVLM())
    _slow_predictor(interp.generator)
    if threads == 1:
        results = [interp.run(p) for p in images]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(interp.run, images))
    files = {}
    for path, result in zip(images, results, strict=True):
        out = write_outputs(result, root / "out" / path.stem)
        files[f"{path.stem}/regions.json"] = out["regions"].read_bytes()
        files[f"{path.stem}/regions.png"] = out["labels"].read_bytes()
        files[f"{path.stem}/label_map"] = result.label_map.tobytes()
    return files


def test_four_threads_give_the_outputs_of_one_thread(tmp_path, model_cache):
    (tmp_path / "images").mkdir()
    images = []
    for k in range(N_IMAGES):
        path = tmp_path / "images" / f"img{k:02d}.png"
        Image.fromarray(_draw(k)).save(path)
        images.append(path)

    serial = _run(images, tmp_path / "one", model_cache, threads=1)
    parallel = _run(images, tmp_path / "four", model_cache, threads=4)

    # the world is not degenerate: images get several regions, and different label maps
    label_maps = {v for k, v in serial.items() if k.endswith("/label_map")}
    assert len(label_maps) == N_IMAGES
    assert sum(b'"kept": true' in v for k, v in serial.items() if k.endswith(".json")) == N_IMAGES
    differ = sorted(k for k in serial if serial[k] != parallel[k])
    assert not differ, f"{len(differ)} outputs differ between 1 and 4 threads: {differ[:6]}"
