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

import logging
import re
import time
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext
from prefect.exceptions import CancelledRun, FailedRun
from prefect.input import RunInput, keyset_from_paused_state
from prefect.states import Cancelled, Completed, Failed, Paused, Running, State
from pydantic import BaseModel, ConfigDict, Field

from flows.apply import PlanChanged, apply_locked, refusals
from infra_tasks import engine
from infra_tasks import overrides as persisted
from infra_tasks.aws import InfraError
from infra_tasks.config import FARGATE_MEMORY, ConfigError, deep_merge, load_config
from infra_tasks.facts import gather_facts
from infra_tasks.model import Action, Plan
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


# --- expected outcomes: a state with one message, no traceback ---------------------------

# Prefect's engine turns a returned Failed/Cancelled state back into FailedRun/CancelledRun
# in a deployment's process and logs it to the run as "Engine execution exited with
# unexpected exception" with a traceback. For the outcomes below the state's message is
# the whole story, so that one log record is dropped (anything else still logs).
_EXPECTED: set[str] = set()


class _ExpectedOutcome(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, (CancelledRun, FailedRun)) and str(exc) in _EXPECTED)


_FILTER = _ExpectedOutcome()


def _outcome(state: State) -> State:
    if state.message:
        _EXPECTED.add(state.message)
    logging.getLogger("prefect.flow_runs").addFilter(_FILTER)
    return state


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


def _changes(plan: Plan, limit: int = 80) -> str:
    """The pending changes as a markdown list, one resource per item and one property per
    line under it: it wraps in the narrow Resume dialog (a table there cut off its last
    column) and in the artifact alike."""
    def cut(s: str) -> str:
        return s if len(s) <= limit else s[:limit - 3] + "..."
    items = []
    for c in plan.pending:
        lines = [cut(f"{p}: {cur} -> {des}") for p, cur, des in (d.render() for d in c.diffs)] or [cut(c.reason)]
        items.append(f"- **{c.action.value}** `{c.key}`\n" + "\n".join(f"    - `{line}`" for line in lines))
    return "\n".join(items)


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
        return _outcome(Failed(message=f"environment = {env}: {str(exc).splitlines()[-1].strip()}. "
                                       f"Nothing was changed."))
    version, approved = persisted.read(base.prefix, env)
    wanted = {} if request.clear_approved_changes else deep_merge(approved, request.as_overrides())
    try:
        cfg = load_config(config_path, wanted)
    except ConfigError as exc:
        return _outcome(Failed(message=f"invalid request, nothing was changed: {_form_error(exc, request)}"))
    facts = gather_facts(cfg, env)
    plan = engine.plan(cfg, env, facts, include_prefect=True, parallelism=parallelism,
                       notes=[f"requested values: {persisted.flatten(wanted)} (recorded version now {version})"])
    text = render_text(plan)
    artifact = f"infra-update-{env}-plan"
    create_markdown_artifact(key=artifact, markdown=f"{_changes(plan)}\n\n```\n{text}\n```",
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
    acct = Account(cfg, env, facts.account_id, facts.region, facts.partition)
    problems = refusals(plan, acct, ROLE)
    if problems:
        return _outcome(Failed(message="nothing was changed; infra-update cannot apply this plan: "
                                       + "; ".join(problems) + f" (plan: artifact {artifact})"))
    minutes = max(1, round(approval_timeout / 60))
    description = (f"## Approve this change to `{env}`?\n\n"
                   f"Choose **approve** or **reject** under *decision*, add a comment and submit. "
                   f"Nothing changes before that; without an answer within {minutes} min the run is "
                   f"cancelled.\n\n{len(plan.pending)} resources change (full plan: artifact `{artifact}`):\n\n"
                   f"{_changes(plan)}\n" + (f"\n{note.strip()}\n" if note else ""))
    instruction = paused_message(len(plan.pending), artifact, minutes)
    log.info(instruction)
    answer = _wait_for_approval(Approval.with_initial_data(description=description), instruction, approval_timeout)
    if answer is None:
        return _outcome(_unanswered(approval_timeout))
    if answer is CANCELLED_WHILE_PAUSED:
        return _outcome(Cancelled(message="cancelled while waiting for approval; nothing was changed"))
    if answer.decision != "approve":
        log.info("rejected: %s", answer.comment)
        return _outcome(Cancelled(message="rejected, nothing was changed"
                                          + (f": {answer.comment}" if answer.comment else "")))
    try:
        result = apply_locked(cfg, env, facts, parallelism=parallelism, expected_digest=plan.digest(), role=ROLE,
                              command=f"infra-update of {env}")
        new_version = persisted.write(base.prefix, env, wanted, answer.comment or "approved in the UI")
    except PlanChanged:
        return _outcome(Failed(message="the infrastructure changed while waiting for approval; nothing was "
                                       "changed. Run infra-update again to see the new plan."))
    except InfraError as exc:
        return _outcome(Failed(message=str(exc)))
    waiting = f"; waiting for the agent image: {', '.join(result['deferred'])}" if result["deferred"] else ""
    return Completed(message=f"applied {result['applied']} changes{waiting}; approved values recorded as version "
                             f"{new_version} of {persisted.variable_name(base.prefix, env)}.{note}")


def paused_message(changes: int, artifact: str, minutes: int) -> str:
    """What the paused run's page says (its state message, under Details): what to do."""
    return (f"Waiting for approval: click Resume, then approve or reject; {changes} "
            f"change{'s' if changes != 1 else ''}, plan in artifact {artifact} and in the Resume form. "
            f"Without an answer within {minutes} min the run is cancelled and nothing changes.")


# The run was cancelled (the UI's Cancel) while it waited: stop waiting at once.
CANCELLED_WHILE_PAUSED: Any = object()


def _wait_for_approval(form: type[Approval], message: str, timeout: int, poll: float = 3) -> Any:
    """`pause_flow_run(wait_for_input=form, timeout=timeout)`, with `message` on the Paused
    state, which the run's page shows (pause_flow_run sets no message). The same steps as
    Prefect's: propose Paused with the input's keyset, save the form (the UI's Resume
    dialog), poll until someone resumes the run with an answer. None: no answer in time;
    CANCELLED_WHILE_PAUSED: someone cancelled the run meanwhile."""
    from prefect.client.orchestration import get_client
    from prefect.utilities.engine import propose_state_sync

    ctx = FlowRunContext.get()
    if not (ctx and ctx.flow_run):
        raise RuntimeError("infra-update waits for approval only inside its flow run")
    run_id = ctx.flow_run.id
    proposed = Paused(timeout_seconds=timeout, reschedule=False, pause_key="approval", message=message)
    keyset = keyset_from_paused_state(proposed)
    proposed.state_details.run_input_keyset = keyset
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as c:
        state = propose_state_sync(c, proposed, flow_run_id=run_id)
        if not state.is_paused():
            raise RuntimeError(f"the run could not pause for approval: the Prefect API answered {state.type.value} "
                               f"({state.message or 'no message'})")
        form.save(keyset)
        while True:
            time.sleep(max(0.0, min(poll, deadline - time.monotonic())))
            current = c.read_flow_run(run_id).state
            if current is not None and current.is_running():
                return form.load(keyset)
            if current is not None and (current.is_final() or current.is_cancelling()):
                return CANCELLED_WHILE_PAUSED
            if time.monotonic() >= deadline:
                return None


def _unanswered(timeout: int) -> State:
    """Cancelled, not the server's Failed "never resumed": the expired pause is ended here
    first (back to Running, so that the Cancelled below is a normal transition)."""
    from prefect.client.orchestration import get_client

    message = f"nobody approved within {timeout} s; nothing was changed. Run infra-update again when someone can."
    ctx = FlowRunContext.get()
    if ctx and ctx.flow_run:
        with get_client(sync_client=True) as c:
            c.set_flow_run_state(ctx.flow_run.id, Running(message="approval timed out"), force=True)
    return Cancelled(message=message)
