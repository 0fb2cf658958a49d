"""Asking a person in the Prefect UI before a change, shared by `infra-update` and
`infra-prune`: the run pauses with a message saying what to do (its page shows it), the
Resume dialog shows the changes above an approval form, and every expected end — no
answer in time, cancelled while waiting, rejected — is a state with one message and no
traceback.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prefect.context import FlowRunContext
from prefect.exceptions import CancelledRun, FailedRun
from prefect.input import RunInput, keyset_from_paused_state
from prefect.states import Cancelled, Paused, Running, State

from flows.apply import refusals
from infra_tasks.config import InfraConfig
from infra_tasks.facts import Facts
from infra_tasks.model import Plan
from infra_tasks.names import Account

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


def outcome(state: State) -> State:
    """`state` as the run's end, logged without a traceback."""
    if state.message:
        _EXPECTED.add(state.message)
    logging.getLogger("prefect.flow_runs").addFilter(_FILTER)
    return state


# --- what the person sees ------------------------------------------------------------------

def refused(plan: Plan, cfg: InfraConfig, facts: Facts, role: str) -> list[str]:
    """What the run's `role` may not do of `plan` (on AWS: AccessDenied half-way) and what
    blocks it: checked before anyone is asked to approve."""
    return refusals(plan, Account(cfg, plan.environment, facts.account_id, facts.region, facts.partition), role)


def changes_markdown(plan: Plan, limit: int = 80) -> str:
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


def paused_message(changes: int, artifact: str, minutes: int, noun: str = "change") -> str:
    """What the paused run's page says (its state message, under Details): what to do."""
    return (f"Waiting for approval: click Resume, then approve or reject; {changes} "
            f"{noun}{'s' if changes != 1 else ''}, plan in artifact {artifact} and in the Resume form. "
            f"Without an answer within {minutes} min the run is cancelled and nothing changes.")


# --- waiting ---------------------------------------------------------------------------------

# The run was cancelled (the UI's Cancel) while it waited: stop waiting at once.
CANCELLED_WHILE_PAUSED: Any = object()


def wait_for_approval(form: type[RunInput], message: str, timeout: int, poll: float = 3) -> Any:
    """`pause_flow_run(wait_for_input=form, timeout=timeout)`, with `message` on the Paused
    state, which the run's page shows (pause_flow_run sets no message). The same steps as
    Prefect's: propose Paused with the input's keyset, save the form (the UI's Resume
    dialog), poll until someone resumes the run with an answer. None: no answer in time;
    CANCELLED_WHILE_PAUSED: someone cancelled the run meanwhile."""
    from infra_tasks.prefect_client import sync_client
    from prefect.utilities.engine import propose_state_sync

    ctx = FlowRunContext.get()
    if not (ctx and ctx.flow_run):
        raise RuntimeError("a run waits for approval only inside its flow run")
    run_id = ctx.flow_run.id
    proposed = Paused(timeout_seconds=timeout, reschedule=False, pause_key="approval", message=message)
    keyset = keyset_from_paused_state(proposed)
    proposed.state_details.run_input_keyset = keyset
    deadline = time.monotonic() + timeout
    with sync_client() as c:
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


def ask(form: type[RunInput], message: str, timeout: int, flow_name: str, nothing: str = "nothing was changed") -> Any:
    """Pause with `message` until someone answers `form` (which has `decision` and
    `comment`). Returns the approving answer, or the state the run ends in: Cancelled when
    nobody answered in time, the run was cancelled meanwhile, or the answer was reject;
    `nothing` says what that left alone."""
    from prefect import get_run_logger

    answer = wait_for_approval(form, message, timeout)
    if answer is None:
        return outcome(unanswered(timeout, flow_name, nothing))
    if answer is CANCELLED_WHILE_PAUSED:
        return outcome(Cancelled(message=f"cancelled while waiting for approval; {nothing}"))
    if answer.decision != "approve":
        get_run_logger().info("rejected: %s", answer.comment)
        return outcome(Cancelled(message=f"rejected, {nothing}" + (f": {answer.comment}" if answer.comment else "")))
    return answer


def unanswered(timeout: int, flow_name: str, nothing: str = "nothing was changed") -> State:
    """Cancelled, not the server's Failed "never resumed": the expired pause is ended here
    first (back to Running, so that the Cancelled below is a normal transition)."""
    from infra_tasks.prefect_client import sync_client

    message = f"nobody approved within {timeout} s; {nothing}. Run {flow_name} again when someone can."
    ctx = FlowRunContext.get()
    if ctx and ctx.flow_run:
        with sync_client() as c:
            c.set_flow_run_state(ctx.flow_run.id, Running(message="approval timed out"), force=True)
    return Cancelled(message=message)
