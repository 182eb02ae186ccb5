"""The MLflow pyfunc that a registered ``iea-jmasa`` / ``iea-aligner`` version loads as.

Artifacts: ``model`` (a trained model folder with ``config.json``, the resolved settings it was
trained with) and, for JMASA, ``aligner``. ``predict`` takes a DataFrame with columns ``image``
(a path on the serving machine, or the image itself as a ``data:image/<type>;base64,`` URI) and
``text`` (the logged signature; the logged input example is one dev tweet with its image
inline) and returns one result dict per row (:meth:`JmasaPredictor.predict`). The version's
requirements name this package.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from pathlib import Path

import mlflow.pyfunc
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

SIGNATURE = ModelSignature(inputs=Schema([ColSpec("string", "image"), ColSpec("string", "text")]))
"""What a version takes: one row per tweet, its image's path and its text."""


def package_requirements() -> list[str]:
    """The pip requirement that brings this code to a serving environment: this package at
    its installed version (the stack comes with it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return [f"iea=={version('iea')}"]
    except PackageNotFoundError:  # running from a checkout without an install
        return ["iea"]


class IeaModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from iea.config import saved_settings
        from iea.predict import JmasaPredictor, read_stage

        model_dir = Path(context.artifacts["model"])
        # the saved settings hold no credentials: this machine's IEA_* environment supplies them
        self.settings = saved_settings(json.loads((model_dir / "config.json").read_text()))
        self.stage = read_stage(model_dir)["stage"]
        self.predictor = None
        if self.stage == "jmasa":
            self.predictor = JmasaPredictor(
                self.settings, model_dir, context.artifacts.get("aligner")
            )
        self.model_dir = model_dir
        self.inline = Path(tempfile.mkdtemp(prefix="iea-inline-images-"))
        # the images of data-URI inputs live as long as the loaded model (or the process)
        weakref.finalize(self, shutil.rmtree, str(self.inline), True)

    def predict(self, context, model_input, params=None):
        if self.predictor is None:
            raise RuntimeError(
                f"a registered {self.stage} model predicts inside the JMASA pipeline: "
                "load an iea-jmasa version for image + text -> pairs"
            )
        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else model_input
        from iea.predict import materialize_image

        answers = self.predictor.predict_many(
            [(materialize_image(r["image"], self.inline), r["text"]) for r in rows]
        )  # one batched pass over the rows
        for i, answer in enumerate(answers):
            if isinstance(answer, Exception):
                raise type(answer)(f"row {i}: {answer}") from answer
        return answers
