"""Prefect flows and the ``iea`` command: thin wiring over ``iea`` (the method)."""

import os

OFFLINE_ENV: dict[str, str] = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
}
"""Telemetry off everywhere: the platform runs offline (an explicit setting still wins)."""


def set_offline_defaults() -> None:
    for var, val in OFFLINE_ENV.items():
        os.environ.setdefault(var, val)


def _install_prefect_progress() -> None:
    """Long work in a flow run shows as progress artifacts in the Prefect UI
    (:mod:`flows.progress`); installed once, when ``flows`` is imported."""
    from flows.progress import PrefectProgress
    from iea import progress

    progress.install(PrefectProgress())


_install_prefect_progress()
