"""Shared test set-up: offline switches and the location of the real annotation files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows import set_offline_defaults

set_offline_defaults()

REPO = Path(__file__).resolve().parents[1]
TWITTER = REPO.parent / "shared" / "data" / "twitter"


@pytest.fixture(scope="session")
def twitter_root() -> Path:
    """``../shared/data/twitter`` (the real annotation files); skips when it is absent."""
    if not TWITTER.is_dir():
        pytest.skip(f"real Twitter annotations not found at {TWITTER}")
    return TWITTER


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """A session-wide temporary cache where ``tiny-*`` models are built once;
    ``$IEA_TEST_MODEL_CACHE`` names a folder to reuse between runs instead (local iteration;
    a changed recipe still rebuilds, as its folder name holds its source hash)."""
    reuse = os.environ.get("IEA_TEST_MODEL_CACHE")
    path = Path(reuse) if reuse else tmp_path_factory.mktemp("model-cache")
    old = os.environ.get("IEA_MODEL_CACHE")
    os.environ["IEA_MODEL_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("IEA_MODEL_CACHE", None)
    else:
        os.environ["IEA_MODEL_CACHE"] = old
