"""The management deployments the bootstrap registers per environment:

- `drift-check/{prefix}-{env}`: scheduled (prefect.drift_check_cron), read-only role;
- `infra-update/{prefix}-{env}`: no schedule, triggered from the UI, write role.

Both run on the environment's agent pool with the agent image (the project's code is
in it). In the sandbox they target a process work pool served by a local worker,
because the emulator cannot run the ECS agent.

Plain data: the flows are named by entrypoint, never imported, so this layer does not
depend on the flows that use it (their parameter schemas are read from source).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Where the agent image holds this repository (WORKDIR of docker/agent/Dockerfile): every
# deployment's flow runs change into it, then import their entrypoint relative to it.
IMAGE_WORKDIR = "/opt/prefect/app"


@dataclass(frozen=True)
class ManagementDeployment:
    flow_name: str
    entrypoint: str
    description: str
    read_only: bool
    scheduled: bool


DRIFT_CHECK = ManagementDeployment(
    "drift-check", "flows/drift_check.py:drift_check",
    "Compares AWS and Prefect with infra.toml; fails when anything drifted (remediate: request a repair "
    "through infra-update, which waits for approval).",
    read_only=True, scheduled=True)
INFRA_UPDATE = ManagementDeployment(
    "infra-update", "flows/update.py:infra_update",
    "Changes agent/flow settings from the UI: plan, approval, apply, verify; remembers approved changes.",
    read_only=False, scheduled=False)
MANAGEMENT = (DRIFT_CHECK, INFRA_UPDATE)


@functools.lru_cache(maxsize=None)
def _schema(entrypoint: str) -> dict[str, Any]:
    from prefect.utilities.callables import parameter_schema_from_entrypoint

    path, fn = entrypoint.split(":")
    return parameter_schema_from_entrypoint(f"{ROOT / path}:{fn}").model_dump_for_openapi()


def parameter_schema(dep: ManagementDeployment) -> dict[str, Any]:
    """The OpenAPI schema the UI renders as a form, from the flow's type hints (read from
    its source, as `prefect deploy` does, without importing the flow)."""
    import copy

    return copy.deepcopy(_schema(dep.entrypoint))


def default_parameters(dep: ManagementDeployment, env: str) -> dict[str, Any]:
    if dep is DRIFT_CHECK:
        return {"env": env, "remediate": False}
    return {"request": {"environment": env}}  # dry_run stays off: approval guards the apply


def working_directory(sandbox: bool) -> str:
    return str(ROOT) if sandbox else IMAGE_WORKDIR
