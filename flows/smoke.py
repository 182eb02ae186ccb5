"""A registered version's smoke prediction, run in a fresh process by the promotion gate
(:func:`flows.promotion.smoke_gate`)::

    python -m flows.smoke models:/iea-jmasa/3 IN.json OUT.json

``IN.json``: a list of ``{"image", "text"}``; ``OUT.json``: the pyfunc's answer to each, in
order. The tracking store comes from ``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    uri, inp, out = argv or sys.argv[1:]
    from flows import set_offline_defaults

    set_offline_defaults()
    import mlflow
    import pandas as pd

    rows = json.loads(Path(inp).read_text())
    model = mlflow.pyfunc.load_model(uri)
    answers = model.predict(pd.DataFrame(rows))
    Path(out).write_text(json.dumps(answers, ensure_ascii=False))


if __name__ == "__main__":
    main()
