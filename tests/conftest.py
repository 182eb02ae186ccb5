"""Shared test set-up: offline switches and the location of the real annotation files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

for _var, _val in (
    ("DO_NOT_TRACK", "1"),
    ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
    ("MLFLOW_DISABLE_TELEMETRY", "true"),
    ("GX_ANALYTICS_ENABLED", "false"),
):
    os.environ.setdefault(_var, _val)

REPO = Path(__file__).resolve().parents[1]
TWITTER = REPO.parent / "shared" / "data" / "twitter"


@pytest.fixture(scope="session")
def twitter_root() -> Path:
    """``../shared/data/twitter`` (the real annotation files); skips when it is absent."""
    if not TWITTER.is_dir():
        pytest.skip(f"real Twitter annotations not found at {TWITTER}")
    return TWITTER
