"""The suite's order (``tests/conftest.py``): the tests that need no tiny model first, then the
model files by how far into the background build their models are ready, so the files that
need only the random models run while the trained ones build, and each file stays whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _collected_files() -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    files = [line.split("::")[0] for line in out.stdout.splitlines() if "::" in line]
    order = list(dict.fromkeys(files))
    # each file whole: its tests form one block
    blocks = [f for i, f in enumerate(files) if i == 0 or files[i - 1] != f]
    assert blocks == order, "a file's tests were split"
    return order


def test_files_run_in_the_order_their_models_are_ready():
    order = _collected_files()
    at = {f: i for i, f in enumerate(order)}
    no_model = at["tests/unit/test_world.py"]
    random_only = at["tests/model/test_finetune.py"]  # tiny-qwen3-vl: built first, in seconds
    sam_only = at["tests/model/test_fast_masks.py"]
    interpreter = at["tests/model/test_world_models.py"]
    everything = at["tests/flows/test_train_flows.py"]
    assert no_model < random_only < sam_only < interpreter < everything, order[-20:]
