"""Shared test set-up: offline switches and the location of the real annotation files."""

from __future__ import annotations

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
