"""``iea deploy``: apply ``prefect.yaml`` to a Prefect server, idempotently.

What the file declares (module doc of ``prefect.yaml``): work pools (``cpu`` process, ``gpu``
docker with an NVIDIA device request), global concurrency limits (``gpu``), and deployments
(flow entrypoint, pool, cron schedules, default parameters). :func:`load_plan` reads and checks
it (every problem named with the file and the item); :func:`apply` creates what is missing and
updates what differs, so applying twice leaves the same state: pools and limits are upserted
by name, deployments by flow and name, schedules by a slug per deployment and position.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_FILE = Path(__file__).resolve().parents[1] / "prefect.yaml"
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class DeployError(ValueError):
    """``prefect.yaml`` cannot be applied; the message lists every problem."""


@dataclass
class Deployment:
    name: str
    entrypoint: str
    flow_name: str
    work_pool: str
    description: str = ""
    schedules: list[dict[str, str]] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    parameter_schema: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    pools: list[dict[str, Any]]
    limits: list[dict[str, Any]]
    deployments: list[Deployment]
    pull_steps: list[dict[str, Any]]
    app_dir: Path


def _fill(value: Any, names: dict[str, str]) -> Any:
    """``value`` with every ``{{ name }}`` of ``names`` replaced (in strings, lists, dicts)."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: names.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


def load_plan(
    path: str | Path = DEFAULT_FILE,
    app_dir: str | Path | None = None,
    config: list[str] | None = None,
) -> Plan:
    """Read ``path`` (``prefect.yaml``) into what :func:`apply` creates.

    Args:
        app_dir: where the workers find this repository (default: the file's folder).
        config: the config file(s) every deployment runs with (default: the file's
            ``defaults.config``), as workers see them: relative to ``app_dir``.

    Raises:
        DeployError: the file is unreadable, or an item is missing a field, names a pool the
            file does not declare, a template that does not exist, or an entrypoint that does
            not load (each named).
    """
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema
    from prefect.workers.process import ProcessWorker

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise DeployError(f"{path}: cannot read: {e}") from None
    root = path.resolve().parent
    app = Path(app_dir) if app_dir else root
    problems: list[str] = []
    names = {"app_dir": str(app)}

    pools = []
    for i, p in enumerate(doc.get("work_pools") or []):
        where = f"{path}: work_pools[{i}]"
        if not p.get("name") or p.get("type") not in ("process", "docker", "kubernetes"):
            problems.append(f"{where}: needs a name and a type (process, docker or kubernetes)")
            continue
        template = p.get("base_job_template")
        if template:
            tpath = root / template
            try:
                template = json.loads(tpath.read_text())
            except (OSError, ValueError) as e:
                problems.append(f"{where}: base_job_template {tpath}: {e}")
                continue
        elif p["type"] == "process":
            template = ProcessWorker.get_default_base_job_template()
        else:
            problems.append(f"{where}: a {p['type']} pool needs its base_job_template file")
            continue
        pools.append({**p, "base_job_template": template, "description": p.get("description")})
    pool_names = {p["name"] for p in pools}

    limits = []
    for i, lim in enumerate(doc.get("concurrency_limits") or []):
        if not lim.get("name") or not isinstance(lim.get("limit"), int) or lim["limit"] < 1:
            problems.append(f"{path}: concurrency_limits[{i}]: needs a name and a limit >= 1")
        else:
            limits.append(lim)

    default_config = config or (doc.get("defaults") or {}).get("config") or []
    deployments = []
    for i, d in enumerate(doc.get("deployments") or []):
        where = f"{path}: deployments[{i}] ({d.get('name', '?')})"
        if not d.get("name") or not d.get("entrypoint"):
            problems.append(f"{where}: needs a name and an entrypoint")
            continue
        if d.get("work_pool") not in pool_names:
            problems.append(f"{where}: work_pool {d.get('work_pool')!r} is not in work_pools")
            continue
        file, _, _ = d["entrypoint"].partition(":")
        try:
            fl = load_flow_from_entrypoint(str(root / d["entrypoint"]))
        except Exception as e:  # a missing file, function or import error: named
            problems.append(f"{where}: entrypoint {d['entrypoint']!r} does not load: {e}")
            continue
        schedules = []
        for s in d.get("schedules") or []:
            if not isinstance(s, dict) or "cron" not in s:
                problems.append(f"{where}: a schedule needs a cron")
                continue
            schedules.append({"cron": s["cron"], "timezone": s.get("timezone", "UTC")})
        schema = parameter_schema(fl.fn).model_dump_for_openapi()
        params = dict(d.get("parameters") or {})
        if "config" in schema.get("properties", {}):
            params.setdefault("config", list(default_config))
        deployments.append(
            Deployment(
                name=d["name"],
                entrypoint=d["entrypoint"],
                flow_name=fl.name,
                work_pool=d["work_pool"],
                description=d.get("description", ""),
                schedules=schedules,
                parameters=params,
                parameter_schema=schema,
            )
        )
    if problems:
        raise DeployError("cannot apply the deployment file:\n  " + "\n  ".join(problems))
    pull = _fill(doc.get("pull") or [], names)
    return Plan(pools, limits, deployments, pull, app)


async def _apply(plan: Plan) -> dict[str, Any]:
    from prefect import get_client
    from prefect.client.schemas.actions import (
        DeploymentScheduleCreate,
        WorkPoolCreate,
        WorkPoolUpdate,
    )
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.exceptions import ObjectNotFound

    from flows.results import RESULTS_BLOCK, RESULTS_ENV, save_block

    done: dict[str, Any] = {"pools": {}, "limits": {}, "deployments": {}}
    async with get_client() as client:
        for p in plan.pools:
            try:
                pool = await client.read_work_pool(p["name"])
            except ObjectNotFound:
                await client.create_work_pool(
                    WorkPoolCreate(
                        name=p["name"],
                        type=p["type"],
                        base_job_template=p["base_job_template"],
                        description=p["description"],
                    )
                )
                done["pools"][p["name"]] = "created"
                continue
            if pool.type != p["type"]:
                raise DeployError(
                    f"work pool {p['name']!r} exists with type {pool.type!r}, the file says "
                    f"{p['type']!r}: delete it first (`prefect work-pool delete {p['name']}`)"
                )
            if (pool.base_job_template, pool.description) != (
                p["base_job_template"],
                p["description"],
            ):
                await client.update_work_pool(
                    p["name"],
                    WorkPoolUpdate(
                        base_job_template=p["base_job_template"], description=p["description"]
                    ),
                )
                done["pools"][p["name"]] = "updated"
            else:
                done["pools"][p["name"]] = "unchanged"
        await asyncio.to_thread(save_block)  # where the deployments' runs persist results
        done["results"] = RESULTS_BLOCK
        for lim in plan.limits:
            await client.upsert_global_concurrency_limit_by_name(lim["name"], lim["limit"])
            done["limits"][lim["name"]] = lim["limit"]
        for d in plan.deployments:
            flow_id = await client.create_flow_from_name(d.flow_name)
            schedules = [
                DeploymentScheduleCreate(
                    schedule=CronSchedule(cron=s["cron"], timezone=s["timezone"]),
                    active=True,
                    slug=f"{d.name}-{i}",
                )
                for i, s in enumerate(d.schedules)
            ]
            dep_id = await client.create_deployment(
                flow_id=flow_id,
                name=d.name,
                description=d.description,
                work_pool_name=d.work_pool,
                entrypoint=d.entrypoint,
                path=str(plan.app_dir),
                pull_steps=plan.pull_steps,
                parameters=d.parameters,
                parameter_openapi_schema=d.parameter_schema,
                schedules=schedules,
                enforce_parameter_schema=True,
                job_variables={"env": RESULTS_ENV},
            )
            done["deployments"][f"{d.flow_name}/{d.name}"] = str(dep_id)
    return done


def apply(plan: Plan) -> dict[str, Any]:
    """Create or update the plan's pools, limits and deployments on the server that
    ``PREFECT_API_URL`` names.

    Returns:
        ``{"pools": {name: "created" | "updated" | "unchanged"}, "limits": {name: limit},
        "deployments": {"flow/name": id}}``.

    Raises:
        DeployError: a pool exists with another type.
    """
    return asyncio.run(_apply(plan))
