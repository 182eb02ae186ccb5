"""Registered model versions as local folders: what a stage that takes ``--model
models:/iea-jmasa/3`` (or ``models:/iea-jmasa@champion``, ``models:/iea-jmasa/latest``) reads.

A registered ``iea-jmasa`` version (``flows/train.py``, ``_register``) is a pyfunc whose
artifacts are ``model`` (the trained folder, with the settings it was trained with in
``config.json``) and ``aligner``; its tags hold ``model.key``, ``aligner.key`` and
``ablation``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import mlflow

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+|latest)|@(?P<alias>[\w-]+))$")


@dataclass(frozen=True)
class RegisteredModel:
    """One registered version, downloaded: ``model_dir`` and ``aligner_dir`` are local
    folders (``aligner_dir`` None for a model registered without one)."""

    name: str
    version: int
    uri: str
    model_dir: Path
    aligner_dir: Path | None
    tags: dict[str, str]

    @property
    def trained_settings(self) -> dict:
        """The resolved settings the model was trained with (its ``config.json``)."""
        return json.loads((self.model_dir / "config.json").read_text())


def model_version(uri: str):
    """The registry's ``ModelVersion`` that ``uri`` names (an alias or ``latest`` resolved).

    Raises:
        ValueError: ``uri`` is not ``models:/NAME/VERSION``, ``models:/NAME/latest`` or
            ``models:/NAME@ALIAS``; or no such model, version or alias (names which).
    """
    m = _URI.match(uri)
    if not m:
        raise ValueError(
            f"model {uri!r}: expected models:/NAME/VERSION, models:/NAME/latest or"
            " models:/NAME@ALIAS"
        )
    client = mlflow.MlflowClient()
    name = m["name"]
    try:
        if m["alias"]:
            return client.get_model_version_by_alias(name, m["alias"])
        if m["version"] == "latest":
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise ValueError(f"model {uri!r}: {name!r} has no version")
            return max(versions, key=lambda v: int(v.version))
        return client.get_model_version(name, m["version"])
    except mlflow.exceptions.MlflowException as e:
        raise ValueError(f"model {uri!r}: {e.message}") from None


def version_of(uri: str) -> tuple[str, int]:
    """``(name, version)`` of the version ``uri`` names (see :func:`model_version`)."""
    mv = model_version(uri)
    return mv.name, int(mv.version)


def download_dir(work_dir: str | Path, uri: str) -> Path:
    """Where a stage downloads the version ``uri`` names: one folder per URI under
    ``<work_dir>/registry``, shared by the threshold search, the smoke and the re-score."""
    return Path(work_dir) / "registry" / re.sub(r"[^\w.@-]+", "_", uri)


def resolve(uri: str, dst: Path | None = None) -> RegisteredModel:
    """The version ``uri`` names in the active tracking server's registry, its artifacts
    downloaded under ``dst`` (default: a temporary folder MLflow chooses).

    Raises:
        ValueError: as :func:`model_version`; or the version holds no trained folder.
    """
    mv = model_version(uri)
    name = mv.name
    fixed = f"models:/{name}/{mv.version}"
    kwargs = {"dst_path": str(dst)} if dst is not None else {}
    if dst is not None:
        dst.mkdir(parents=True, exist_ok=True)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=fixed, **kwargs))
    paths = _artifact_paths(local)
    model_dir = local / paths.get("model", "artifacts/model")
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"model {uri!r} ({fixed}): no trained folder at {model_dir}")
    aligner = local / paths["aligner"] if "aligner" in paths else None
    return RegisteredModel(
        name=name,
        version=int(mv.version),
        uri=fixed,
        model_dir=model_dir,
        aligner_dir=aligner if aligner is not None and aligner.is_dir() else None,
        tags=dict(mv.tags),
    )


def _artifact_paths(local: Path) -> dict[str, str]:
    """Artifact name -> its path inside a downloaded pyfunc (``MLmodel``'s
    ``python_function.artifacts``; MLflow 3 stores them as ``artifacts/<n>/<folder>``)."""
    import yaml

    mlmodel = local / "MLmodel"
    if not mlmodel.is_file():
        return {}
    flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {})
    artifacts = flavor.get("python_function", {}).get("artifacts") or {}
    return {k: v["path"] for k, v in artifacts.items() if isinstance(v, dict) and "path" in v}


def load_predictor(model: str, aligner: str | Path | None = None):
    """``(predictor, answered_by)`` for ``model``: a registry URI (``models:/NAME@ALIAS``,
    ``/VERSION``, ``/latest``; ``runs:/...``) loaded as its pyfunc from the active tracking
    server, or a trained JMASA folder with ``aligner`` its aligner's folder. ``answered_by``
    names the version (``{"model", "name", "version"}``) or the folder.

    Raises:
        ValueError: an unknown model, version or alias (names which).
    """
    from iea.predict import JmasaPredictor

    if model.startswith("models:/"):
        name, version = version_of(model)
        uri = f"models:/{name}/{version}"
        predictor = mlflow.pyfunc.load_model(uri).unwrap_python_model().predictor
        return predictor, {"model": uri, "name": name, "version": version}
    if model.startswith("runs:/"):
        return mlflow.pyfunc.load_model(model).unwrap_python_model().predictor, {"model": model}
    from iea.config import saved_settings

    folder = Path(model)
    if not (folder / "config.json").is_file():
        raise ValueError(f"model {model!r}: not a registry URI nor a trained model folder")
    settings = saved_settings(json.loads((folder / "config.json").read_text()))
    return JmasaPredictor(settings, folder, aligner), {"model": str(folder)}
