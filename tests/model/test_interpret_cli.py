"""``iea interpret`` with the demo config's tiny SAM and tiny Qwen3-VL (acceptance 2 and 3).

"The second run loads no model" is checked through ``models_loaded`` in the command's output:
it reports the change of ``iea.models.refs.LOAD_COUNTS``, which every SAM/VLM load increments.
"""

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iea.data.synthetic import draw_image, make_tweet

pytestmark = pytest.mark.model
DEMO = str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")


def _interpret(image, out, store, cache, check=True):
    cmd = [
        sys.executable,
        "-m",
        "flows.cli",
        "interpret",
        "--image",
        str(image),
        "--config",
        DEMO,
        "--out",
        str(out),
        f"store.root={store}",
        f"runtime.model_cache={cache}",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def test_interpret_twice_second_run_loads_no_model(tmp_path, model_cache):
    image = tmp_path / "tweet.jpg"
    draw_image(make_tweet(random.Random(3), 0), (320, 240), 11).save(image, quality=90)
    first = json.loads(_interpret(image, tmp_path / "D", tmp_path / "store", model_cache).stdout)
    assert first["models_loaded"] == {"sam:tiny-sam-world": 1, "tiny-qwen3-vl-interp": 1}
    assert first["cache"]["segmentation"] == "miss"

    doc = json.loads((tmp_path / "D" / "regions.json").read_text())
    labels = np.asarray(Image.open(tmp_path / "D" / "regions.png"))
    assert labels.shape == (240, 320)
    ids = [r["id"] for r in doc["regions"]]
    assert 1 <= len(ids) <= 5
    assert sorted(np.unique(labels).tolist()) == sorted(ids)  # every pixel has exactly one region
    assert sum(r["area"] for r in doc["regions"]) == 320 * 240
    for r in doc["regions"]:
        assert int((labels == r["id"]).sum()) == r["area"]
        assert r["kept"] == (r["dropped_because"] == [])
        assert (r["text"] is not None) == r["kept"]  # every kept region was interpreted
    assert Image.open(tmp_path / "D" / "overlay.png").width > 320

    second = json.loads(_interpret(image, tmp_path / "D2", tmp_path / "store", model_cache).stdout)
    assert second["models_loaded"] == {}
    assert second["cache"] == {
        "segmentation": "hit",
        "interpretations_hit": first["kept"],
        "interpretations_miss": 0,
    }
    assert json.loads((tmp_path / "D2" / "regions.json").read_text())["regions"] == doc["regions"]


def test_random_bytes_exit_non_zero_naming_the_file(tmp_path, model_cache):
    bad = tmp_path / "random.jpg"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    r = _interpret(bad, tmp_path / "D", tmp_path / "store", model_cache, check=False)
    assert r.returncode == 1
    assert f"{bad}: cannot decode image" in r.stderr
    assert not (tmp_path / "D").exists()
