"""The Prefect workspace side of the deployer: checks of the target work pools, the plan
(each desired deployment read with bootstrap's DeploymentHandler, diffed and decided by
infra_tasks.engine), applying only what differs, and the deployments the manifest no
longer declares. Reads and writes go to the Prefect API the process is connected to.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

from infra_tasks.aws import InfraError
from infra_tasks.model import Action, Change, Plan, Resource

from .manifest import DeployError
from .plan import MANIFEST_TAG, Target

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient


@contextlib.contextmanager
def answering(what: str) -> Iterator[None]:
    """The Prefect API not answering (or answering 5xx) as a DeployError naming the API
    and the next step, not a traceback; any other exception shows as it is (a bug)."""
    from infra_tasks.prefect_objects import translate

    try:
        yield
    except DeployError:
        raise
    except Exception as exc:  # noqa: BLE001 - translated when it is the API's, else re-raised
        err = translate(exc, "reading", what)
        if isinstance(err, InfraError):
            raise DeployError(f"{err}\n  Nothing was deployed.") from None
        raise


def api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def preflight(client: "SyncPrefectClient", pools: list[str]) -> None:
    """Every target work pool exists and is an ECS pool; otherwise deploy nothing."""
    from prefect.exceptions import ObjectNotFound

    problems = []
    for pool in sorted(set(pools)):
        try:
            wp = client.read_work_pool(pool)
        except ObjectNotFound:
            problems.append(f"work pool {pool!r} does not exist in the Prefect workspace at {api_url()}; "
                            f"run the bootstrap for its environment first (python -m flows.bootstrap --env ...)")
            continue
        if wp.type != "ecs":
            problems.append(f"work pool {pool!r} is of type {wp.type!r}, not 'ecs': the ECS agents cannot run it")
    if problems:
        raise DeployError("nothing was deployed:\n  " + "\n  ".join(problems))


def plan(resources: list[Resource], target: Target) -> Plan:
    """Read every deployment and decide create / update / no-op, with the diffs."""
    from infra_tasks import engine

    try:
        changes = engine.plan_resources(resources)
    except InfraError as exc:
        raise DeployError(f"{exc}\n  Nothing was deployed.") from None
    return Plan(target.env_name, target.account_id, target.region, changes)


def render(p: Plan, target: Target) -> str:
    """The plan as bootstrap shows it (infra_tasks.render), unchanged deployments
    included with their reason, under a heading of its own."""
    from infra_tasks.render import render_text

    c = p.counts()
    head = (f"Flow deployments of type {target.t!r} in work pool {target.pool} ({api_url()}): "
            f"{c['create']} to create, {c['update']} to update, {c['no-op']} unchanged")
    # render_text's first line is bootstrap's summary (account, region): replaced by ours.
    return "\n".join([head, *render_text(p, show_noop=True).split("\n")[1:]])


def apply(p: Plan) -> list[Change]:
    """Make the pending changes (one after the other); returns them. On an error, says
    what was already applied."""
    from infra_tasks import engine

    done: list[Change] = []
    try:
        engine.apply_changes(p.changes, done)
    except Exception as exc:  # noqa: BLE001 - reported with what did and did not happen
        applied = ", ".join(f"{c.action.value} {c.resource.name}" for c in done) or "none"
        raise DeployError(f"{exc}\n  already applied: {applied}\n  "
                          f"Re-run after fixing the cause: only what still differs is changed.") from None
    return done


def verify(resources: list[Resource], target: Target) -> None:
    """A fresh plan after applying must be empty (what was written reads back equal)."""
    again = plan(resources, target)
    if not again.empty:
        left = "; ".join(f"{c.resource.name}: {c.reason} ({', '.join(d.path for d in c.diffs)})"
                         for c in again.pending)
        raise DeployError(f"verify failed: after applying, the workspace still differs from the manifest: {left}")


def retired(client: "SyncPrefectClient", target: Target, wanted: list[str]) -> list[str]:
    """Deployments this tool made earlier in the target pool that the manifest no longer
    declares (left alone: retiring a deployment is a human decision)."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterTags,
        FlowFilter,
        FlowFilterId,
        WorkPoolFilter,
        WorkPoolFilterName,
    )

    found = client.read_deployments(
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[target.pool])),
        deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[MANIFEST_TAG])))
    ids = list({d.flow_id for d in found})
    flow_names = ({f.id: f.name for f in client.read_flows(flow_filter=FlowFilter(id=FlowFilterId(any_=ids)))}
                  if ids else {})
    return sorted(name for d in found
                  if (name := f"{flow_names.get(d.flow_id, d.flow_id)}/{d.name}") not in set(wanted))


def counts_line(done: list[Change]) -> str:
    made = {a: [c.resource.name for c in done if c.action is a] for a in (Action.CREATE, Action.UPDATE)}
    return "; ".join(f"{'created' if a is Action.CREATE else 'updated'} {', '.join(names)}"
                     for a, names in made.items() if names)
