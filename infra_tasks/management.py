"""The management deployments the bootstrap registers per environment:

- `drift-check/{prefix}-{env}-drift-check`: scheduled (prefect.drift_check_cron), read-only role;
- `infra-update/{prefix}-{env}-infra-update`: no schedule, triggered from the UI, write role;
- `infra-prune/{prefix}-{env}-infra-prune`: no schedule, triggered from the UI, prune role
  (deletes what is no longer configured, never data, after approval).

All run on the environment's agent pool with the agent image (the project's code is
in it). In the sandbox they target a process work pool served by a local worker,
because the emulator cannot run the ECS agent.

Plain data: the flows are named by entrypoint, never imported, so this layer does not
depend on the flows that use it (their parameter schemas are read from source). One
read: which deployments under the names used before (`{prefix}-{env}` for the first two) remain,
for a plan note saying how to remove them (bootstrap deletes nothing).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .names import management_deployment_name, retired_management_deployment_name

ROOT = Path(__file__).resolve().parent.parent
# Where the agent image holds this repository (WORKDIR of docker/agent/Dockerfile): every
# deployment's flow runs change into it, then import their entrypoint relative to it.
IMAGE_WORKDIR = "/opt/prefect/app"


@dataclass(frozen=True)
class ManagementDeployment:
    flow_name: str
    entrypoint: str
    description: str
    role: str  # the control-plane role its runs have (`{prefix}-{role}`): infra-read, infra-write, infra-prune
    scheduled: bool


DRIFT_CHECK = ManagementDeployment(
    "drift-check", "flows/drift_check.py:drift_check",
    "Compares AWS and Prefect with infra.toml; fails when anything drifted (remediate: request a repair "
    "through infra-update, which waits for approval).",
    role="infra-read", scheduled=True)
INFRA_UPDATE = ManagementDeployment(
    "infra-update", "flows/update.py:infra_update",
    "Changes agent/flow settings from the UI: plan, approval, apply, verify; remembers approved changes.",
    role="infra-write", scheduled=False)
INFRA_PRUNE = ManagementDeployment(
    "infra-prune", "flows/prune.py:infra_prune",
    "Deletes what carries this environment's tags but is no longer configured (the drift check's UNMANAGED): "
    "plan, approval (a protected environment's name typed), delete, verify. Never data.",
    role="infra-prune", scheduled=False)
MANAGEMENT = (DRIFT_CHECK, INFRA_UPDATE, INFRA_PRUNE)
NAMED_ALIKE_BEFORE = (DRIFT_CHECK, INFRA_UPDATE)  # both were `{prefix}-{env}` once; infra-prune came later


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
    return {"request": {"environment": env}}  # dry_run stays off: approval guards the change


def working_directory(sandbox: bool) -> str:
    return str(ROOT) if sandbox else IMAGE_WORKDIR


def deployment_name(dep: ManagementDeployment, prefix: str, env: str) -> str:
    """`{flow name}/{deployment name}`, as `prefect deployment run` and the API name it."""
    return f"{dep.flow_name}/{management_deployment_name(prefix, env, dep.flow_name)}"


def retired_note(dep: ManagementDeployment, prefix: str, env: str) -> str:
    old = f"{dep.flow_name}/{retired_management_deployment_name(prefix, env)}"
    runs = "its schedule keeps a second drift check running" if dep.scheduled else "it can still be run"
    return (f"deployment {old!r} is the {dep.flow_name} deployment of {env} under its old name (now "
            f"{deployment_name(dep, prefix, env)!r}); bootstrap deletes nothing, so it stays and {runs}. "
            f"Remove it: prefect deployment delete '{old}'")


def retired_notes(prefix: str, env: str) -> list[str]:
    """A plan note for each management deployment of `env` still present under its old name."""
    from prefect.exceptions import ObjectNotFound

    from .prefect_client import sync_client

    old = retired_management_deployment_name(prefix, env)
    out = []
    with sync_client() as c:
        for dep in NAMED_ALIKE_BEFORE:
            try:
                c.read_deployment_by_name(f"{dep.flow_name}/{old}")
            except ObjectNotFound:
                continue
            out.append(retired_note(dep, prefix, env))
    return out
