"""The management deployments the bootstrap registers per environment:

- `drift-check/{prefix}-{env}`: scheduled (prefect.drift_check_cron), read-only role;
- `infra-update/{prefix}-{env}`: no schedule, triggered from the UI, write role.

Both run on the environment's agent pool with the agent image (the project's code is
in it). In the sandbox they target a process work pool served by a local worker,
because the emulator cannot run the ECS agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IMAGE_WORKDIR = "/opt/prefect/app"  # WORKDIR of docker/agent/Dockerfile


@dataclass(frozen=True)
class ManagementDeployment:
    flow_name: str
    entrypoint: str
    function: str
    description: str
    read_only: bool
    scheduled: bool


DRIFT_CHECK = ManagementDeployment(
    "drift-check", "flows/drift_check.py:drift_check", "drift_check",
    "Compares AWS and Prefect with infra.toml; fails when anything drifted (remediate: request a repair "
    "through infra-update, which waits for approval).",
    read_only=True, scheduled=True)
INFRA_UPDATE = ManagementDeployment(
    "infra-update", "flows/update.py:infra_update", "infra_update",
    "Changes agent/flow settings from the UI: plan, approval, apply, verify; remembers approved changes.",
    read_only=False, scheduled=False)
MANAGEMENT = (DRIFT_CHECK, INFRA_UPDATE)


def parameter_schema(dep: ManagementDeployment) -> dict[str, Any]:
    """The OpenAPI schema the UI renders as a form, from the flow's type hints."""
    from prefect.utilities.callables import parameter_schema as schema

    if dep is DRIFT_CHECK:
        from flows.drift_check import drift_check as fn
    else:
        from flows.update import infra_update as fn
    return schema(fn.fn).model_dump_for_openapi()


def default_parameters(dep: ManagementDeployment, env: str) -> dict[str, Any]:
    if dep is DRIFT_CHECK:
        return {"env": env, "remediate": False}
    return {"request": {"environment": env}}  # dry_run stays off: approval guards the apply


def deployment_name(prefix: str, env: str) -> str:
    return f"{prefix}-{env}"


def working_directory(sandbox: bool) -> str:
    return str(ROOT) if sandbox else IMAGE_WORKDIR
