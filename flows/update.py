"""`infra-update`: change agent and flow settings from the Prefect UI, safely.

The parameters are a pydantic model, so the UI renders a validated form: Fargate sizes
as choices, counts with their limits, a description on every field. The flow computes
the plan with the requested values and publishes it as an artifact. A request that
changes no resource completes at once ("nothing to change"), records nothing and asks
nobody. Otherwise — unless it is a dry run — it pauses for approval (Resume, then
approve or reject, with a comment; the plan is shown above the form), and the paused
state's message, which the run's page shows, says so. After approval it
applies under the environment's lock, verifies, and records the approved values as a
new version of the Prefect variable `{prefix}-{env}-overrides`, which every later
bootstrap, drift check and update merges over infra.toml (so the next drift check does
not revert them). `clear_approved_changes` goes back to plain infra.toml.

Expected outcomes end in a state with one message, never a traceback: a rejection or no
answer in time ends Cancelled, bad input or a refused plan Failed, naming the form field.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.input import RunInput
from prefect.states import Completed, Failed, State
from pydantic import BaseModel, ConfigDict, Field

from flows.apply import PlanChanged, apply_locked
from flows.approval import ask, changes_markdown, outcome, paused_message, refused
from infra_tasks import engine
from infra_tasks import overrides as persisted
from infra_tasks.aws import InfraError
from infra_tasks.config import FARGATE_MEMORY, ConfigError, deep_merge, load_config
from infra_tasks.facts import gather_facts
from infra_tasks.management import INFRA_UPDATE
from infra_tasks.model import Action, Plan
from infra_tasks.render import render_text

ROLE = INFRA_UPDATE.role  # infra-write: the role infra-update runs as (its deployment's task role)

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

FARGATE_CPU = sorted(FARGATE_MEMORY)
FARGATE_MEMORY_ANY = sorted({m for ms in FARGATE_MEMORY.values() for m in ms})
PAIRS = "; ".join(f"cpu {c}: " + (", ".join(map(str, ms)) if len(ms) <= 3 else
                                   f"{ms[0]}-{ms[-1]} in steps of {ms[1] - ms[0]}")
                  for c, ms in FARGATE_MEMORY.items())


def _form(**extra: Any) -> Any:
    """Field schema as the UI renders it best: an optional value shown as the plain field
    (no `anyOf` with null, which the UI shows as a type picker hiding limits and choices),
    no `null` default, and `extra` (e.g. the allowed values)."""

    def fix(schema: dict[str, Any]) -> None:
        for alt in schema.pop("anyOf", []):
            if alt.get("type") != "null":
                schema.update({k: v for k, v in alt.items() if k not in schema})
        if schema.get("default", 0) is None:
            del schema["default"]
        schema.update(extra)
    return fix


class UpdateRequest(BaseModel):
    """What to change. Empty fields keep their current value."""

    model_config = ConfigDict(extra="forbid")

    environment: str = Field(description="Environment of infra.toml, e.g. production or dev")
    agent_image_tag: str | None = Field(
        None, min_length=1, max_length=128, json_schema_extra=_form(),
        description="Agent image tag in this account's ECR repository, e.g. prefect-agent-abc1234")
    agent_cpu: int | None = Field(
        None, json_schema_extra=_form(enum=FARGATE_CPU),
        description="Agent Fargate cpu units (1024 = 1 vCPU); memory must fit it, see agent_memory")
    agent_memory: int | None = Field(
        None, json_schema_extra=_form(enum=FARGATE_MEMORY_ANY),
        description=f"Agent memory in MiB; Fargate allows per cpu: {PAIRS}")
    agent_desired_count: int | None = Field(
        None, ge=0, le=10, json_schema_extra=_form(),
        description="Preferred agent task count, within min..max. Autoscaling moves the running count "
                    "inside min..max; this value only applies when the service is created or a new "
                    "min/max puts the running count outside the range. Alone it changes nothing.")
    agent_min_count: int | None = Field(None, ge=0, le=10, json_schema_extra=_form(),
                                        description="Autoscaling minimum of agent tasks (0-10)")
    agent_max_count: int | None = Field(None, ge=1, le=10, json_schema_extra=_form(),
                                        description="Autoscaling maximum of agent tasks (1-10, at least the minimum)")
    flow_cpu: int | None = Field(None, json_schema_extra=_form(enum=FARGATE_CPU),
                                 description="Default cpu units of flow runs (work pool default)")
    flow_memory: int | None = Field(
        None, json_schema_extra=_form(enum=FARGATE_MEMORY_ANY),
        description=f"Default memory in MiB of flow runs (work pool default); per cpu: {PAIRS}")
    clear_approved_changes: bool = Field(False, description="Forget all earlier UI changes: back to infra.toml")
    dry_run: bool = Field(False, description="Only compute and publish the plan; never asks, never applies")

    def as_overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, (section, key) in FIELDS.items():
            value = getattr(self, name)
            if value is not None:
                out.setdefault(section, {})[key] = value
        return out


class Approval(RunInput):
    decision: Literal["approve", "reject"] = Field(
        description="approve: apply the plan shown above now; reject: change nothing")
    comment: str = Field("", description="Why (kept with the recorded change)")


# --- messages naming the form fields -------------------------------------------------------

def _form_error(exc: ConfigError, request: UpdateRequest) -> str:
    """infra.toml's validation message, re-addressed to the form: each problem names the
    form field(s) typed in (`agent_memory = 100: ...`), on one line each."""
    out = []
    for line in str(exc).splitlines():
        line = line.strip()
        if not line or line == "invalid configuration:":
            continue
        line = re.sub(r"^[\w.-]+\.toml: ", "", line)
        # "key: message" or "key = value: message", where a table's value is a dict whose
        # repr has ": " of its own (flows = {'cpu': 256, ...}: Fargate does not accept ...).
        m = re.match(r"^(?P<path>[\w.-]+)(?: = (?:\{.*\}|'[^']*'|\S+))?: (?P<text>.*)$", line)
        path, text = (m["path"], m["text"]) if m else (line, "")
        section = path.split(".")[0]
        named = [n for n, (s, k) in FIELDS.items()
                 if getattr(request, n) is not None and s == section and re.search(rf"\b{k}\b", line)]
        if named:
            out.append(", ".join(f"{n} = {getattr(request, n)}" for n in named) + f": {text or line}")
        else:
            out.append(f"{line} (with the values approved earlier; clear_approved_changes goes back to infra.toml)")
    return "; ".join(out)


def _agent_counts(plan: Plan) -> list[str]:
    """`name runs N` for each agent service whose running count the plan leaves alone."""
    out = []
    for c in plan.changes:
        if c.resource.kind == "ecs.service" and c.observed is not None and c.action is not Action.CREATE \
                and not any(d.path == "desiredCount" for d in c.diffs):
            out.append(f"{c.resource.name} runs {c.observed.props.get('desiredCount')}")
    return out


def _desired_count_note(request: UpdateRequest, plan: Plan) -> str:
    if request.agent_desired_count is None:
        return ""
    untouched = _agent_counts(plan)
    if not untouched:
        return ""
    return (f" agent_desired_count = {request.agent_desired_count} does not change the running agent services "
            f"({', '.join(untouched)}, inside the autoscaling range, where autoscaling decides); it only applies "
            f"when a service is created or min/max excludes its running count.")


@flow(name="infra-update", validate_parameters=True)
def infra_update(request: UpdateRequest, config_path: str = "", approval_timeout: int = 3600,
                 parallelism: int = 8) -> State:
    """Plan the requested change, ask for approval, apply it.

    Args:
        request: What to change; empty fields keep their current value.
        config_path: infra.toml to read; empty: the one in the deployment's code.
        approval_timeout: Seconds to wait for approve/reject before the run is cancelled.
        parallelism: How many resources are read and applied at once.
    """
    log = get_run_logger()
    config_path = config_path or None
    env = request.environment
    try:
        base = load_config(config_path)
        base.env(env)
    except ConfigError as exc:
        return outcome(Failed(message=f"environment = {env}: {str(exc).splitlines()[-1].strip()}. "
                                      f"Nothing was changed."))
    version, approved = persisted.read(base.prefix, env)
    wanted = {} if request.clear_approved_changes else deep_merge(approved, request.as_overrides())
    try:
        cfg = load_config(config_path, wanted)
    except ConfigError as exc:
        return outcome(Failed(message=f"invalid request, nothing was changed: {_form_error(exc, request)}"))
    facts = gather_facts(cfg, env)
    plan = engine.plan(cfg, env, facts, include_prefect=True, parallelism=parallelism,
                       notes=[f"requested values: {persisted.flatten(wanted)} (recorded version now {version})"])
    text = render_text(plan)
    artifact = f"infra-update-{env}-plan"
    create_markdown_artifact(key=artifact, markdown=f"{changes_markdown(plan)}\n\n```\n{text}\n```",
                             description=f"infra-update plan for {env}")
    note = _desired_count_note(request, plan)
    if plan.empty:
        # Nothing would change on any resource: nothing to approve, and nothing recorded
        # (a value recorded without effect would be reported as in effect when it is not).
        if request.clear_approved_changes and approved:
            new_version = persisted.write(base.prefix, env, {}, "cleared in the UI (no resource changes)")
            return Completed(message=f"no resource changes; the values approved earlier were cleared (version "
                                     f"{new_version} of {persisted.variable_name(base.prefix, env)})")
        return Completed(message=f"nothing to change: the infrastructure already matches these values; "
                                 f"nothing recorded.{note}")
    if request.dry_run:
        return Completed(message=f"dry run: {len(plan.pending)} changes, nothing applied (plan: artifact "
                                 f"{artifact}).{note}")
    # infra-update runs with the infra-write role: what it may not change is refused here,
    # before anyone is asked to approve (on AWS the plan marks it too, from the caller).
    problems = refused(plan, cfg, facts, ROLE)
    if problems:
        return outcome(Failed(message="nothing was changed; infra-update cannot apply this plan: "
                                      + "; ".join(problems) + f" (plan: artifact {artifact})"))
    minutes = max(1, round(approval_timeout / 60))
    description = (f"## Approve this change to `{env}`?\n\n"
                   f"Choose **approve** or **reject** under *decision*, add a comment and submit. "
                   f"Nothing changes before that; without an answer within {minutes} min the run is "
                   f"cancelled.\n\n{len(plan.pending)} resources change (full plan: artifact `{artifact}`):\n\n"
                   f"{changes_markdown(plan)}\n" + (f"\n{note.strip()}\n" if note else ""))
    instruction = paused_message(len(plan.pending), artifact, minutes)
    log.info(instruction)
    answer = ask(Approval.with_initial_data(description=description), instruction, approval_timeout, "infra-update")
    if isinstance(answer, State):
        return answer
    try:
        result = apply_locked(cfg, env, facts, parallelism=parallelism, expected_digest=plan.digest(), role=ROLE,
                              command=f"infra-update of {env}")
        new_version = persisted.write(base.prefix, env, wanted, answer.comment or "approved in the UI")
    except PlanChanged:
        return outcome(Failed(message="the infrastructure changed while waiting for approval; nothing was "
                                      "changed. Run infra-update again to see the new plan."))
    except InfraError as exc:
        return outcome(Failed(message=str(exc)))
    waiting = f"; waiting for the agent image: {', '.join(result['deferred'])}" if result["deferred"] else ""
    return Completed(message=f"applied {result['applied']} changes{waiting}; approved values recorded as version "
                             f"{new_version} of {persisted.variable_name(base.prefix, env)}.{note}")
