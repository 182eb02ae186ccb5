"""The arrows point one way: iea/ (the method) never imports Prefect, MLflow or GX."""

import ast
import subprocess
import sys
from pathlib import Path

IEA = Path(__file__).resolve().parents[2] / "iea"
FORBIDDEN = {"prefect", "mlflow", "great_expectations", "flows", "expectations"}


def test_no_framework_import_in_iea_source():
    files = sorted(IEA.rglob("*.py"))
    assert len(files) >= 10
    offenders = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{f}:{node.lineno}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_importing_iea_loads_no_framework():
    mods = [
        f"iea.{p.relative_to(IEA).with_suffix('').as_posix().replace('/', '.')}"
        for p in IEA.rglob("*.py")
    ]
    mods = [m.removesuffix(".__init__") for m in mods]
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
