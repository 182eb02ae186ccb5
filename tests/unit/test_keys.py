"""Content keys hold exactly what changes a result (:mod:`iea.keys`): per stage, a setting
that matters changes the key and one that does not leaves it; a changed helper, anywhere the
stage's code imports it, changes the key; a reworded comment or docstring does not."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from iea import keys
from iea.config import load_settings

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo.yaml"


def _settings(*overrides):
    return load_settings(DEMO, list(overrides), env={})


@pytest.fixture
def fake_pkg(tmp_path, monkeypatch):
    """A package ``keytest`` on sys.path: ``stage`` imports ``helper`` inside a function.
    Returns ``write(name, source)``; caches are cleared after each write."""
    pkg = tmp_path / "keytest"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))

    def forget() -> None:  # find_spec imports parents: drop them, and the parsed code
        for m in [m for m in sys.modules if m.split(".")[0] == "keytest"]:
            del sys.modules[m]
        importlib.invalidate_caches()
        keys._module_code.cache_clear()
        keys.code_digest.cache_clear()

    def write(name: str, source: str) -> None:
        (pkg / f"{name}.py").write_text(textwrap.dedent(source))
        forget()

    write("helper", "def prompt():\n    return 'Describe the region.'\n")
    write(
        "stage",
        '''
        """The stage."""
        def run():
            from keytest.helper import prompt
            return prompt()
        ''',
    )
    yield write
    forget()


def test_code_digest_follows_imports_and_ignores_comments_docstrings_and_layout(fake_pkg):
    roots = ("keytest.stage",)
    assert keys.code_closure(roots) == ["keytest.helper", "keytest.stage"]
    base = keys.code_digest(roots)
    fake_pkg(
        "stage",
        '''
        """The stage, reworded."""
        def run():  # a comment
            from keytest.helper import prompt

            return (prompt())
        ''',
    )
    assert keys.code_digest(roots) == base
    fake_pkg("helper", "def prompt():\n    return 'Describe the region briefly.'\n")
    assert keys.code_digest(roots) != base  # a helper the stage calls changed


def test_a_changed_helper_changes_the_keys_of_the_stages_that_use_it(fake_pkg, monkeypatch):
    """A prompt edit in a helper module invalidates the JMASA model and the interpretation
    cache, not only a hand-bumped version constant (the issue's changed-helper test)."""
    from iea.store import LocalStore
    from iea.vision.interpreter import ImageInterpreter

    monkeypatch.setitem(keys.STAGE_CODE, "jmasa", ("keytest.stage",))
    monkeypatch.setitem(keys.STAGE_CODE, "interpret", ("keytest.stage",))
    s = _settings()
    interp = ImageInterpreter(s, LocalStore(Path("/nonexistent")))
    crop = np.zeros((4, 4, 3), np.uint8)
    before = keys.jmasa_key(s, "d1", "full", "a1"), interp.interpretation_key(crop)
    fake_pkg("helper", "def prompt():\n    return 'Name the object.'\n")
    after = keys.jmasa_key(s, "d1", "full", "a1"), interp.interpretation_key(crop)
    assert before[0] != after[0] and before[1] != after[1]


@pytest.mark.parametrize(
    "override, matters",
    [
        ("interpreter.overlay_samples=2", False),
        ("interpreter.concurrency=7", False),
        ("interpreter.pool=cpu", False),
        ("segment.points_per_batch=16", False),
        ("jmasa.pool=cpu", False),
        ("jmasa.register_as=other", False),
        ("tracking.experiment=x", False),
        ("search.sampler=random", False),
        ("promotion.min_gain=0.1", False),
        ("interpreter.max_new_tokens=9", True),
        ("runtime.dtype=bfloat16", True),
        ("filters.t_size=3", True),
        ("segment.num_regions=3", True),
        ("jmasa.lora.r=4", True),
        ("jmasa.train.epochs=2", True),
        ("runtime.seed=5", True),
    ],
)
def test_the_jmasa_key_holds_what_changes_the_model(override, matters):
    base = keys.jmasa_key(_settings(), "d1", "full", "a1")
    assert (keys.jmasa_key(_settings(override), "d1", "full", "a1") != base) is matters
    assert keys.jmasa_key(_settings(), "d2", "full", "a1") != base
    assert keys.jmasa_key(_settings(), "d1", "no_nmi", "a1") != base
    assert keys.jmasa_key(_settings(), "d1", "full", "a2") != base


@pytest.mark.parametrize(
    "override, matters",
    [
        ("interpreter.concurrency=7", False),
        ("jmasa.train.epochs=2", False),
        ("filters.t_size=3", False),
        ("aligner.negatives=0.5", True),
        ("aligner.train.epochs=3", True),
        ("runtime.dtype=bfloat16", True),
    ],
)
def test_the_aligner_key_holds_what_changes_the_aligner(override, matters):
    base = keys.aligner_key(_settings(), "f1")
    assert (keys.aligner_key(_settings(override), "f1") != base) is matters
    assert keys.aligner_key(_settings(), "f2") != base


def test_interpretation_and_segmentation_keys_leave_out_scheduling_settings():
    from iea.store import LocalStore
    from iea.vision.interpreter import ImageInterpreter

    def both(*overrides):
        i = ImageInterpreter(_settings(*overrides), LocalStore(Path("/nonexistent")))
        return i.interpretation_key(np.zeros((4, 4, 3), np.uint8)), i.segmentation_key("img")

    base = both()
    assert both("interpreter.concurrency=7", "interpreter.overlay_samples=1") == base
    assert both("segment.points_per_batch=8") == base
    assert both("interpreter.max_new_tokens=9")[0] != base[0]
    assert both("runtime.dtype=bfloat16")[0] != base[0]
    assert both("segment.num_regions=3")[1] != base[1]


def test_each_stage_names_modules_that_exist_and_iea_config_is_not_code():
    for stage, roots in keys.STAGE_CODE.items():
        closure = keys.code_closure(roots)
        assert set(roots) <= set(closure) and "iea.config" not in closure, stage
    assert "iea.vision.prompts" in keys.code_closure(keys.STAGE_CODE["interpret"])
    assert "iea.nmi" in keys.code_closure(keys.STAGE_CODE["jmasa"])
    assert "iea.align.prompts" in keys.code_closure(keys.STAGE_CODE["fgca"])
