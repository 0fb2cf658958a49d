"""`infra-update`: change agent and flow settings from the Prefect UI, safely.

The parameters are a pydantic model, so the UI renders a validated form. The flow
computes the plan with the requested values, publishes it as an artifact and — when
something would change and this is not a dry run — pauses for approval (approve or
reject, with a comment; the plan is shown above the form). After approval it applies
under the environment's lock, verifies, and records the approved values as a new
version of the Prefect variable `{prefix}-{env}-overrides`, which every later
bootstrap, drift check and update merges over infra.toml (so the next drift check
does not revert them). `clear_approved_changes` goes back to plain infra.toml.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Cancelled, Completed, Failed, State
from pydantic import BaseModel, ConfigDict, Field

from flows.apply import PlanChanged, apply_locked, refusals
from infra_tasks import engine
from infra_tasks import overrides as persisted
from infra_tasks.aws import InfraError
from infra_tasks.config import ConfigError, deep_merge, load_config
from infra_tasks.facts import gather_facts
from infra_tasks.names import Account
from infra_tasks.render import render_text

ROLE = "infra-write"  # the role infra-update runs as (the management pool's task role)

FIELDS: dict[str, tuple[str, str]] = {
    "agent_image_tag": ("agent", "image_tag"),
    "agent_cpu": ("agent", "cpu"),
    "agent_memory": ("agent", "memory"),
    "agent_desired_count": ("agent", "desired_count"),
    "agent_min_count": ("agent", "min_count"),
    "agent_max_count": ("agent", "max_count"),
    "flow_cpu": ("flows", "cpu"),
    "flow_memory": ("flows", "memory"),
}


class UpdateRequest(BaseModel):
    """What to change. Empty fields keep their current value."""

    model_config = ConfigDict(extra="forbid")

    environment: str = Field(description="Environment of infra.toml, e.g. production or dev")
    agent_image_tag: str | None = Field(None, description="Agent image tag in this account's ECR repository")
    agent_cpu: int | None = Field(None, description="Agent Fargate cpu units (256, 512, 1024, 2048, ...)")
    agent_memory: int | None = Field(None, description="Agent memory in MiB (must fit the cpu)")
    agent_desired_count: int | None = Field(None, ge=0, le=10, description="Agent tasks to run")
    agent_min_count: int | None = Field(None, ge=0, le=10, description="Autoscaling minimum")
    agent_max_count: int | None = Field(None, ge=1, le=10, description="Autoscaling maximum")
    flow_cpu: int | None = Field(None, description="Default cpu of flow runs (work pool default)")
    flow_memory: int | None = Field(None, description="Default memory of flow runs (work pool default)")
    clear_approved_changes: bool = Field(False, description="Forget all earlier UI changes: back to infra.toml")
    dry_run: bool = Field(False, description="Only compute and publish the plan")

    def as_overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, (section, key) in FIELDS.items():
            value = getattr(self, name)
            if value is not None:
                out.setdefault(section, {})[key] = value
        return out


class Approval(RunInput):
    decision: Literal["approve", "reject"] = Field(description="Apply this plan, or reject it")
    comment: str = Field("", description="Why (kept with the recorded change)")


@flow(name="infra-update", validate_parameters=True)
def infra_update(request: UpdateRequest, config_path: str | None = None, approval_timeout: int = 3600,
                 parallelism: int = 8) -> State:
    log = get_run_logger()
    env = request.environment
    try:
        base = load_config(config_path)
        base.env(env)
        version, approved = persisted.read(base.prefix, env)
        wanted = {} if request.clear_approved_changes else deep_merge(approved, request.as_overrides())
        cfg = load_config(config_path, wanted)
    except ConfigError as exc:
        fields = ", ".join(f"{n} -> {s}.{k}" for n, (s, k) in FIELDS.items())
        return Failed(message=f"invalid request: {exc}\n(UI fields map to config keys: {fields}). "
                              f"Nothing was changed.")
    facts = gather_facts(cfg, env)
    plan = engine.plan(cfg, env, facts, include_prefect=True, parallelism=parallelism,
                       notes=[f"requested values: {persisted.flatten(wanted)} (recorded version now {version})"])
    text = render_text(plan)
    create_markdown_artifact(key=f"infra-update-{env}-plan", markdown=f"```\n{text}\n```",
                             description=f"infra-update plan for {env}")
    values_change = wanted != approved
    if plan.empty and not values_change:
        return Completed(message="nothing to change")
    if request.dry_run:
        return Completed(message=f"dry run: {len(plan.pending)} changes, nothing applied")
    # infra-update runs with the infra-write role: what it may not change is refused here,
    # before anyone is asked to approve (on AWS the plan marks it too, from the caller).
    acct = Account(cfg, env, facts.account_id, facts.region, facts.partition)
    problems = refusals(plan, acct, ROLE)
    if problems:
        return Failed(message="nothing was changed; infra-update cannot apply this plan:\n  "
                              + "\n  ".join(problems) + "\n\n" + text)
    description = (f"## Approve infra-update of `{env}`?\n\n{len(plan.pending)} resources change.\n\n"
                   f"```\n{text}\n```")
    from prefect.exceptions import FlowPauseTimeout

    try:
        answer = pause_flow_run(wait_for_input=Approval.with_initial_data(description=description,
                                                                          decision="reject"),
                                timeout=approval_timeout)
    except FlowPauseTimeout:
        return Cancelled(message=f"nobody approved within {approval_timeout}s; nothing was changed. "
                                 f"Run infra-update again when someone can approve.")
    if answer.decision != "approve":
        log.info("rejected: %s", answer.comment)
        return Cancelled(message=f"rejected, nothing was changed: {answer.comment}")
    try:
        result = apply_locked(cfg, env, facts, parallelism=parallelism, expected_digest=plan.digest(), role=ROLE,
                              command=f"infra-update of {env}")
        new_version = persisted.write(base.prefix, env, wanted, answer.comment or "approved in the UI")
    except PlanChanged:
        return Failed(message="the infrastructure changed while waiting for approval; nothing was changed. "
                              "Run infra-update again to see the new plan.")
    except InfraError as exc:
        return Failed(message=str(exc))
    waiting = f"; waiting for the agent image: {', '.join(result['deferred'])}" if result["deferred"] else ""
    return Completed(message=f"applied {result['applied']} changes{waiting}; approved values recorded as version "
                             f"{new_version} of {persisted.variable_name(base.prefix, env)}")
