"""`infra-prune`: delete, from the Prefect UI and after a person's approval, what carries
this environment's ownership tags but is no longer in the configuration — the drift
check's UNMANAGED — with the protections of the command line's `--prune`.

The parameters are a pydantic model (environment, dry run), so the UI renders a form.
The run computes the prune's plan (the teardown's, of the UNMANAGED resources only) with
the configuration the drift check uses (infra.toml and the changes approved in the UI)
and publishes it as an artifact: what is deleted, then what is kept and why. Data —
buckets, log groups — is always kept: only an administrator deletes it, with
`python -m flows.drift_check --env ENV --prune --delete-data`. Nothing to delete, or a
dry run: the run completes at once and changes nothing. A deletion the `infra-prune`
role may not make (see iam_policies.infra_prune) fails the run before anyone is asked,
naming the resource. Otherwise it pauses for approval as `infra-update` does; for a
protected environment the approval form also asks for the environment's name to be
typed, as the command line asks at a terminal. After approval the `infra-teardown` flow
deletes, under the environment's lock, exactly the plan that was approved: a plan that
changed while waiting deletes nothing.

Expected outcomes end in a state with one message, never a traceback: nothing to do, a
dry run or a deletion Completed; a rejection, a wrong or missing name or no answer in
time Cancelled; a refused plan or a failed deletion Failed.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.input import RunInput
from prefect.states import Cancelled, Completed, Failed, State
from pydantic import BaseModel, ConfigDict, Field

from flows.approval import ask, changes_markdown, outcome, paused_message, refused
from flows.teardown import teardown_infra
from infra_tasks import teardown
from infra_tasks.aws import InfraError
from infra_tasks.config import ConfigError, load_config
from infra_tasks.effective import effective_config
from infra_tasks.facts import gather_facts
from infra_tasks.management import INFRA_PRUNE
from infra_tasks.model import Action, Plan

ROLE = INFRA_PRUNE.role  # infra-prune: the role its runs have (its deployment's task role)


def admin_route(env: str, data: bool = False) -> str:
    """The command an administrator runs for what this flow does not delete."""
    return f"python -m flows.drift_check --env {env} --prune" + (" --delete-data" if data else "")


class PruneRequest(BaseModel):
    """Which environment to prune."""

    model_config = ConfigDict(extra="forbid")

    environment: str = Field(description="Environment of infra.toml, e.g. production or dev")
    dry_run: bool = Field(False, description="Only compute and publish the plan; never asks, never deletes")


class PruneApproval(RunInput):
    decision: Literal["approve", "reject"] = Field(
        description="approve: delete what is listed above now; reject: delete nothing")
    comment: str = Field("", description="Why (kept in the run's log)")


class ProtectedPruneApproval(PruneApproval):
    confirm_environment: str = Field(
        "", description="This environment is protected: type its name to approve; anything else deletes nothing")


def plan_markdown(plan: Plan) -> str:
    """The artifact: what is deleted, then what is kept and why, then the plan's notes."""
    env = plan.environment
    kept = [c for c in plan.changes if c.action is Action.KEEP]
    return "\n".join([
        f"## Deleted after approval: {len(plan.pending)}", "", changes_markdown(plan) or "nothing", "",
        f"## Kept: {len(kept)}", "", *([f"- `{c.key}`: {c.reason}" for c in kept] or ["nothing"]), "",
        f"Data (buckets, log groups) is never deleted from the UI; an administrator deletes it with "
        f"`{admin_route(env, data=True)}`.", "",
        *[f"> {n}" for n in plan.notes]])


@flow(name="infra-prune", validate_parameters=True)
def infra_prune(request: PruneRequest, config_path: str = "", approval_timeout: int = 3600,
                parallelism: int = 8) -> State:
    """Plan the deletion of what is no longer configured, ask for approval, delete it.

    Args:
        request: The environment to prune, and whether only to plan.
        config_path: infra.toml to read; empty: the one in the deployment's code.
        approval_timeout: Seconds to wait for approve/reject before the run is cancelled.
        parallelism: How many resources are read and deleted at once.
    """
    log = get_run_logger()
    env, path = request.environment, config_path or None
    try:
        cfg, notes = effective_config(path, env)
        # The file's protection holds whatever was approved in the UI since.
        protected = cfg.is_protected(env) or load_config(path).is_protected(env)
        facts = gather_facts(cfg, env)
        plan = teardown.plan(cfg, env, facts, delete_data=False, parallelism=parallelism, unmanaged_only=True)
    except ConfigError as exc:
        return outcome(Failed(message=f"environment = {env}: {' '.join(str(exc).split())} Nothing was deleted."))
    except InfraError as exc:
        return outcome(Failed(message=str(exc)))
    plan.notes.extend(notes)
    artifact = f"infra-prune-{env}-plan"
    create_markdown_artifact(key=artifact, markdown=plan_markdown(plan), description=f"infra-prune plan for {env}")
    kept = sum(1 for c in plan.changes if c.action is Action.KEEP)
    if plan.empty:
        return Completed(message=f"nothing to prune in {env}: no resource that is no longer configured is left to "
                                 f"delete; {kept} kept (plan: artifact {artifact})")
    if request.dry_run:
        return Completed(message=f"dry run: {len(plan.pending)} to delete, {kept} kept; nothing was deleted (plan: "
                                 f"artifact {artifact})")
    problems = refused(plan, cfg, facts, ROLE)  # what infra-prune may not delete, what blocks a deletion
    if problems:
        return outcome(Failed(message=f"nothing was deleted; infra-prune cannot delete this plan: "
                                      f"{'; '.join(problems)}. An administrator can: {admin_route(env)} (plan: "
                                      f"artifact {artifact})"))
    minutes = max(1, round(approval_timeout / 60))
    description = (f"## Delete {len(plan.pending)} resources of `{env}` that are no longer configured?\n\n"
                   f"Choose **approve** or **reject** under *decision*, add a comment and submit. Nothing is "
                   f"deleted before that; without an answer within {minutes} min the run is cancelled.\n\n"
                   + (f"**`{env}` is protected**: to approve, also type `{env}` under *confirm environment*.\n\n"
                      if protected else "")
                   + f"{changes_markdown(plan)}\n\n{kept} kept (data, and what is not this environment's; full "
                     f"plan: artifact `{artifact}`). Data is deleted only by an administrator: "
                     f"`{admin_route(env, data=True)}`.\n")
    instruction = paused_message(len(plan.pending), artifact, minutes, noun="deletion")
    log.info(instruction)
    form = ProtectedPruneApproval if protected else PruneApproval
    answer = ask(form.with_initial_data(description=description), instruction, approval_timeout, "infra-prune",
                 nothing="nothing was deleted")
    if isinstance(answer, State):
        return answer
    if protected and answer.confirm_environment.strip() != env:
        return outcome(Cancelled(message=f"{env} is protected and its name was not typed under confirm environment "
                                         f"(got {answer.confirm_environment.strip()!r}); nothing was deleted"))
    log.info("approved: %s", answer.comment)
    done = teardown_infra(env=env, config_path=path, parallelism=parallelism, expected_digest=plan.digest(),
                          unmanaged_only=True, return_state=True)
    if done.is_cancelled():
        return outcome(Cancelled(message=done.message or "stopped"))
    if not done.is_completed():
        return outcome(Failed(message=done.message or "the deletion failed; see the infra-teardown run"))
    result = done.result()
    n = len(result["deleted"])
    return Completed(message=f"deleted {n} resource{'s' if n != 1 else ''} no longer configured in {env}; kept "
                             f"{len(result['kept'])} (data: only an administrator deletes it, with "
                             f"{admin_route(env, data=True)})")
