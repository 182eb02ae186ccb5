"""Registry references as the stages take them (``flows/registry.py``)."""

import mlflow
import pytest

from flows.registry import resolve


@pytest.mark.parametrize("uri", ["iea-jmasa", "models:/iea-jmasa", "models:/a/b/c", "runs:/x/m"])
def test_a_reference_that_is_not_a_model_version_is_refused(uri):
    with pytest.raises(ValueError, match="expected models:/NAME/VERSION"):
        resolve(uri)


def test_a_missing_model_or_alias_names_the_reference(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        for uri in ("models:/nope/1", "models:/nope@champion", "models:/nope/latest"):
            with pytest.raises(ValueError, match=uri):
                resolve(uri)
    finally:
        mlflow.set_tracking_uri(None)
