"""``docker/``: no Docker engine runs here, so the compose file is checked by reading it: every
service has an image or a build whose Dockerfile and copied paths exist, every command names
an executable the images have (and an ``iea`` subcommand the CLI has), every variable is in
``docker/.env.example`` with no default credential, and the images install the package the way
``make setup`` does."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
VAR = re.compile(r"\$\{(\w+)(:?[?-])?([^}]*)\}")


def _dockerfile(service: dict) -> Path | None:
    build = service.get("build")
    if not build:
        return None
    context = (DOCKER / build["context"]).resolve()
    return context / build.get("dockerfile", "Dockerfile")


def test_every_service_has_an_image_or_a_build_whose_files_exist():
    expected = {
        "postgres", "minio", "minio-init", "mlflow", "prefect-server", "worker-cpu",
        "worker-gpu", "gpu-image", "deploy",
    }  # fmt: skip
    assert set(COMPOSE["services"]) == expected
    built = {str(_dockerfile(s)) for s in COMPOSE["services"].values() if s.get("build")}
    tags = {s.get("image") for s in COMPOSE["services"].values() if s.get("build")}
    for name, svc in COMPOSE["services"].items():
        assert svc.get("image") or svc.get("build"), name
        df = _dockerfile(svc)
        if df is None:
            # an image the stack builds itself must be built by some service
            if svc["image"].startswith("iea-"):
                assert svc["image"] in tags, f"{name}: nothing builds {svc['image']}"
            continue
        assert df.is_file(), f"{name}: {df} missing"
        for line in df.read_text().splitlines():
            if line.startswith("COPY "):
                *srcs, _ = line.split()[1:]
                for src in srcs:
                    assert (REPO / src).exists(), f"{df.name}: COPY {src}: not in the repo"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (DOCKER / src).exists(), f"{name}: volume {src} missing"
    assert len(built) == 3  # worker-cpu, worker-gpu, mlflow


def _command(svc: dict) -> list[str]:
    cmd = svc.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def test_every_command_names_something_the_repo_or_its_images_have():
    from flows.cli import app

    iea_commands = {c.name for c in app.registered_commands}
    for name, svc in COMPOSE["services"].items():
        cmd = _command(svc)
        entry = svc.get("entrypoint")
        if entry:
            assert entry[0] in ("/bin/sh",), name
            continue
        if not cmd:  # the image's own command
            assert svc["image"].startswith(("postgres:", "minio/")), name
            continue
        assert cmd[0] in {"iea", "prefect", "mlflow", "python3", "server"}, (name, cmd)
        if cmd[0] == "iea":
            assert cmd[1] in iea_commands, f"{name}: iea {cmd[1]}: no such command"
        if cmd[:3] == ["prefect", "worker", "start"]:
            pool = cmd[cmd.index("--pool") + 1]
            kind = cmd[cmd.index("--type") + 1]
            plan = yaml.safe_load((REPO / "prefect.yaml").read_text())
            assert {"name": pool, "type": kind}.items() <= {
                k: v for p in plan["work_pools"] if p["name"] == pool for k, v in p.items()
            }.items(), f"{name}: pool {pool} of type {kind} is not in prefect.yaml"


def test_every_variable_is_in_env_example_and_no_credential_has_a_default():
    text = (DOCKER / "compose.yaml").read_text()
    used = {m.group(1) for m in VAR.finditer(text)}
    example = {
        line.split("=", 1)[0]
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert used <= example, f"not in docker/.env.example: {sorted(used - example)}"
    defaults = [m.group(0) for m in VAR.finditer(text) if m.group(2) == ":-"]
    assert defaults == [], f"defaults in compose.yaml: {defaults}"
    for secret in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"):
        assert f"${{{secret}:?" in text  # the stack refuses to start without it
        assert re.search(rf"^{secret}=$", (DOCKER / ".env.example").read_text(), re.M)


def test_the_images_install_the_package_the_way_make_setup_does():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"PIP=\$\(BIN\)/pip EXTRAS=dev sh docker/install\.sh", makefile)
    for name in ("worker-cpu", "worker-gpu"):
        df = (DOCKER / f"{name}.Dockerfile").read_text()
        runs = [x for x in df.splitlines() if "install.sh" in x]
        assert runs and all(re.search(r"EXTRAS=worker sh docker/install\.sh$", x) for x in runs)
    pins = re.findall(r'"mlflow==([\d.]+)"', (REPO / "pyproject.toml").read_text())
    assert pins and f'"mlflow=={pins[0]}"' in (DOCKER / "mlflow.Dockerfile").read_text()
    assert "3.8.8" in COMPOSE["services"]["prefect-server"]["image"]
    assert '"prefect==3.8.8"' in (REPO / "pyproject.toml").read_text()
