"""Read -> normalise -> diff -> decide, and applying one decided change.

`plan()` reads every resource (in parallel, read-only) and decides a `Change` per
resource; `decide()` is pure. `apply_change()` performs one change given its
dependencies' outputs. The Prefect flows schedule `apply_change` as tasks; drift
check, plan and apply all go through `plan()`.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextvars
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

from . import autoscaling, ecr, ecs, ecs_taskdef, events, iam, logs, prefect_objects, s3, secrets, sqs
from .aws import BotoCoreError, ClientError, InfraError, translate
from .config import InfraConfig
from .desired import desired_state, owner_value
from .desired_prefect import prefect_resources
from .diff import diff
from .ec2 import SecurityGroupHandler
from .emulator import UNSTORED_PROPERTIES
from .facts import Facts, gather_facts
from .handler import Handler
from .names import Account
from .model import OWNER_TAG, UNKNOWN, Action, Change, Observed, Plan, Ref, Resource

T = TypeVar("T")

HANDLERS: dict[str, Handler] = {h.kind: h for h in (
    s3.BucketHandler(), ecr.RepositoryHandler(), logs.LogGroupHandler(), secrets.SecretHandler(),
    iam.RoleHandler(), iam.ManagedPolicyHandler(), iam.OidcProviderHandler(), SecurityGroupHandler(), sqs.QueueHandler(),
    events.RuleHandler(), ecs.ClusterHandler(), ecs_taskdef.TaskDefinitionHandler(), ecs.ServiceHandler(),
    autoscaling.ScalableTargetHandler(), autoscaling.ScalingPolicyHandler(), *prefect_objects.HANDLERS,
)}


# --- references ---------------------------------------------------------------------

def refs_in(value: Any) -> Iterable[Ref]:
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from refs_in(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from refs_in(v)


def resolve(value: Any, outputs: dict[str, dict[str, Any]]) -> Any:
    """Replace `Ref`s with known outputs, or UNKNOWN when the target is yet to be made."""
    if isinstance(value, Ref):
        out = outputs.get(value.key)
        return value.resolve(out[value.attr]) if out and value.attr in out else UNKNOWN
    if isinstance(value, dict):
        return {k: resolve(v, outputs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, outputs) for v in value]
    return value


def contains_unknown(value: Any) -> bool:
    if value is UNKNOWN:
        return True
    if isinstance(value, dict):
        return any(contains_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_unknown(v) for v in value)
    return False


def all_deps(res: Resource) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*res.deps, *(r.key for r in refs_in(res.props))]))


def topo_order(resources: list[Resource]) -> list[Resource]:
    by_key = {r.key: r for r in resources}
    done: dict[str, bool] = {}
    out: list[Resource] = []

    def visit(r: Resource, stack: tuple[str, ...]) -> None:
        if done.get(r.key):
            return
        if r.key in stack:
            raise InfraError(f"dependency cycle: {' -> '.join((*stack, r.key))}")
        for d in all_deps(r):
            if d in by_key:
                visit(by_key[d], (*stack, r.key))
        done[r.key] = True
        out.append(r)

    for r in resources:
        visit(r, ())
    return out


# --- deciding (pure) ----------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    """What `decide()` knows besides the resource, what was read and its dependencies'
    outputs: taken from the config and the facts once per plan."""

    owner: str
    adopt: bool = False
    # The moto emulator: properties it does not store are sent but not compared.
    emulated: bool = False
    # The agent image tag when it is not in ECR (and the agent must wait for its push);
    # None when it is there, not ours to check, or in the sandbox (which cannot hold images).
    missing_image: str | None = None

    @classmethod
    def of(cls, cfg: InfraConfig, facts: Facts, adopt: bool = False) -> "Decision":
        missing = (cfg.agent.image_tag if facts.agent_image_present is False and not facts.sandbox else None)
        return cls(owner_value(cfg), adopt, facts.emulated, missing)


def decide(res: Resource, observed: Observed | None, outputs: dict[str, dict[str, Any]], how: Decision,
           waiting: frozenset[str] = frozenset()) -> Change:
    """The change one resource needs. `waiting`: resources whose changes wait for
    something outside this run (a change that depends on one of them waits too)."""
    change = _decide(res, observed, outputs, how)
    if not change.action.mutates:
        return change
    if res.kind == "ecs.task_definition" and change.action in (Action.CREATE, Action.REPLACE) and how.missing_image:
        change.deferred = f"waits for the agent image {how.missing_image!r} to be pushed"
    elif any(d in waiting for d in all_deps(res)):
        change.deferred = f"waits for the agent image {how.missing_image!r} to be pushed"
    if change.deferred:
        change.reason = f"{change.reason}; deferred: {change.deferred}"
    return change


def _decide(res: Resource, observed: Observed | None, outputs: dict[str, dict[str, Any]], how: Decision) -> Change:
    handler = HANDLERS[res.kind]
    desired = resolve(res.props, outputs)
    uncompared = UNSTORED_PROPERTIES.get(res.kind, ()) if how.emulated else ()
    if observed is None:
        blocker = handler.create_blocker(res, desired)
        return Change(res, Action.CREATE, blocker or "does not exist", blocker=blocker)
    reason_prefix = ""
    manage_tags = True
    have_owner = observed.tags.get(OWNER_TAG)
    if handler.taggable and handler.ownership_checked and have_owner != how.owner:
        if have_owner and not how.adopt:
            return Change(res, Action.CONFLICT,
                          f"owned by another stack ({OWNER_TAG}={have_owner}); re-run with --adopt to take it over",
                          observed=observed)
        if handler.adopt_existing and not have_owner:
            # Shared and pre-existing: adopted as it is; its tags stay its owner's business.
            desired = {**desired, "tags": None}
            manage_tags = False
            reason_prefix = "adopted existing; "
        elif not how.adopt:
            return Change(res, Action.CONFLICT,
                          f"exists without the ownership tag {OWNER_TAG}={how.owner}; re-run with --adopt to manage it "
                          f"(adds the tag and reconciles it to the config)", observed=observed)
        else:
            reason_prefix = "adopting (adds ownership tag); "
    diffs = property_diffs(desired, observed, uncompared)
    if not diffs:
        return Change(res, Action.NOOP, reason_prefix + "in sync", observed=observed, manage_tags=manage_tags,
                      uncompared=uncompared)
    replace = [d for d in diffs if any(d.path == p or d.path.startswith(p + ".") for p in handler.replace_paths)]
    if replace:
        what = ("registers a new revision (the old one is kept)" if handler.replace_is_safe
                else "cannot change in place; bootstrap never deletes, so this needs a manual step")
        return Change(res, Action.REPLACE, f"{reason_prefix}{', '.join(sorted({d.path.split('.')[0] for d in replace}))}"
                      f" changed: {what}", diffs, observed, manage_tags=manage_tags, uncompared=uncompared)
    n = len(diffs)
    return Change(res, Action.UPDATE, f"{reason_prefix}{n} propert{'y differs' if n == 1 else 'ies differ'}",
                  diffs, observed, manage_tags=manage_tags, uncompared=uncompared)


def property_diffs(desired: dict[str, Any], observed: Observed, uncompared: tuple[str, ...] = ()) -> list:
    if uncompared:
        desired = {k: (None if k in uncompared else v) for k, v in desired.items()}
    actual = dict(observed.props)
    if isinstance(desired.get("tags"), dict):
        # Only the tags we declare are compared; others' tags (and aws:*) are left alone.
        actual["tags"] = {k: v for k, v in observed.tags.items() if k in desired["tags"]}
    return diff(desired, actual)


def blocking(change: Change) -> str | None:
    """Why applying this change must not start (checked for all before any change)."""
    handler = HANDLERS[change.resource.kind]
    if change.deferred is not None:
        return None  # not applied in this run at all
    if change.action in (Action.CONFLICT, Action.NOT_CHECKED):
        return f"{change.key}: {change.reason}"
    if change.action is Action.REPLACE and not handler.replace_is_safe:
        return f"{change.key}: {change.reason}"
    if change.blocker:
        return change.blocker
    return None


# --- reading and planning -----------------------------------------------------------

def named(action: str, key: str, fn: Callable[..., T], /, *args: Any) -> T:
    """Run one handler call; an AWS or Prefect API error becomes one naming the action,
    the resource and the next step (our own InfraErrors pass; anything else is a bug and
    shows as it is)."""
    try:
        return fn(*args)
    except InfraError:
        raise
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, action, key) from None
    except Exception as exc:  # noqa: BLE001 - the Prefect API's errors, named; anything else re-raised
        raise prefect_objects.translate(exc, action, key) from None


def read_one(res: Resource) -> Observed | None:
    return named("read", res.key, HANDLERS[res.kind].read, res)


class ReadFailed:
    """A resource that could not be read (tolerant plans only: the drift check)."""

    def __init__(self, error: str) -> None:
        self.error = error


def _read_tolerant(res: Resource) -> Observed | None | ReadFailed:
    try:
        return read_one(res)
    except Exception as exc:  # noqa: BLE001 - reported as NOT_CHECKED, never as in sync
        return ReadFailed(str(exc).split("\n")[0])


def read_all(resources: list[Resource], parallelism: int, tolerant: bool = False) -> dict[str, Any]:
    reader = _read_tolerant if tolerant else read_one
    with cf.ThreadPoolExecutor(max_workers=max(1, parallelism)) as pool:
        # Each read runs in a copy of this context, so Prefect settings set with
        # temporary_settings (the API URL) reach the reader threads too.
        futures = {r.key: pool.submit(contextvars.copy_context().run, reader, r) for r in resources}
        return {k: f.result() for k, f in futures.items()}


def decide_all(resources: list[Resource], observed: dict[str, Any], how: Decision) -> list[Change]:
    outputs: dict[str, dict[str, Any]] = {}
    changes: list[Change] = []
    unchecked: dict[str, str] = {}
    waiting: set[str] = set()
    for res in topo_order(resources):
        got = observed.get(res.key)
        if isinstance(got, ReadFailed):
            unchecked[res.key] = got.error
            changes.append(Change(res, Action.NOT_CHECKED, f"could not be read: {got.error}"))
            continue
        blocked = [d for d in all_deps(res) if d in unchecked and any(r.key == d for r in refs_in(res.props))]
        if blocked:
            unchecked[res.key] = f"depends on {blocked[0]}, which could not be read"
            changes.append(Change(res, Action.NOT_CHECKED, unchecked[res.key]))
            continue
        change = decide(res, got, outputs, how, frozenset(waiting))
        if change.deferred:
            waiting.add(res.key)
        if change.observed is not None and change.action in (Action.NOOP, Action.UPDATE, Action.CONFLICT):
            outputs[res.key] = change.observed.outputs
        changes.append(change)
    return changes


def all_resources(cfg: InfraConfig, env_name: str, facts: Facts, include_prefect: bool) -> list[Resource]:
    resources = desired_state(cfg, env_name, facts)
    if include_prefect:
        resources += prefect_resources(cfg, env_name, facts)
    return resources


def plan(cfg: InfraConfig, env_name: str, facts: Facts | None = None, adopt: bool = False,
         parallelism: int = 8, include_prefect: bool = False, notes: list[str] | None = None,
         tolerant: bool = False) -> Plan:
    facts = facts or gather_facts(cfg, env_name)
    resources = all_resources(cfg, env_name, facts, include_prefect)
    observed = read_all(resources, parallelism, tolerant)
    how = Decision.of(cfg, facts, adopt)
    changes = decide_all(resources, observed, how)
    p = Plan(env_name, facts.account_id, facts.region, changes, notes=list(notes or []))
    a = Account(cfg, env_name, facts.account_id, facts.region, facts.partition)
    p.warnings.extend(image_warnings(a, facts, p))
    check_caller_role(a, facts, p)
    if facts.network.public_subnets and not cfg.env(env_name).network.assign_public_ip:
        p.warnings.append(
            f"subnets {', '.join(facts.network.public_subnets)} map public IPs on launch (public subnets); the agent "
            f"runs without a public IP, so it reaches the Prefect API only through a NAT gateway or VPC endpoints. "
            f"Select private subnets with environments.{env_name}.network.subnets"
        )
    return p


def check_caller_role(a: Account, facts: Facts, p: Plan) -> None:
    """Running as one of the project's own roles (CI's apply, an infra-update run), mark
    what that role may not change, so the apply stops before any change instead of
    half-way with AccessDenied."""
    from .iam_policies import beyond_role

    role = a.project_role_of(facts.caller_arn)
    if role is None:
        return
    for c in p.changes:
        why = beyond_role(c, a, role)
        if why and c.deferred is None:
            c.blocker = why


def image_warnings(a: Account, facts: Facts, p: Plan) -> list[str]:
    """Before pointing the agent at an image, it must be in ECR. When it is not, the agent's
    task definition and everything that depends on it wait (decided in `decide()`), and
    the plan says how to push it; the rest is applied (this is the order CI follows:
    registry and roles, push, then the agent)."""
    if facts.agent_image_present is not False:
        return []
    if not any(c.resource.kind == "ecs.task_definition" and c.action in (Action.CREATE, Action.REPLACE)
               for c in p.changes):
        return []
    if facts.sandbox:
        return [f"agent image {a.agent_image} is not in ECR (the sandbox cannot hold images; against "
                f"AWS the agent's task definition and service would wait for the push)"]
    return [f"agent image {a.agent_image} is not in ECR. Push it, then run bootstrap again:\n"
            f"    aws ecr get-login-password --region {a.region} | docker login --username AWS "
            f"--password-stdin {a.registry}\n"
            f"    docker build -f docker/agent/Dockerfile -t {a.agent_image} . && docker push {a.agent_image}"]


# --- applying one change ------------------------------------------------------------

def apply_change(change: Change, outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Perform one decided change; returns the resource's outputs for its dependants."""
    res = change.resource
    handler = HANDLERS[res.kind]
    if change.action is Action.NOOP:
        return change.observed.outputs if change.observed else {}
    if change.action is Action.DELETE:
        delete_change(change)
        return {}
    props = resolve(res.props, outputs)
    if contains_unknown(props):
        raise InfraError(f"{res.key}: a dependency did not report its id/ARN; re-run bootstrap")
    if change.action is Action.CREATE:
        return named("create", res.key, handler.create, res, props)
    assert change.observed is not None
    if change.action is Action.REPLACE:
        return named("replace", res.key, handler.replace, res, props, change.observed, change.diffs)
    if change.action is Action.UPDATE:
        # Recompute with references now known (an id created earlier in this run).
        if not change.manage_tags:
            props = {**props, "tags": None}
        diffs = property_diffs(props, change.observed, change.uncompared)
        if not diffs:
            return change.observed.outputs
        return named("update", res.key, handler.update, res, props, change.observed, diffs)
    raise InfraError(f"{res.key}: cannot apply a {change.action.value} change")


def delete_change(change: Change) -> None:
    """Perform one teardown deletion (the handler's `delete`), errors named like an apply's."""
    res = change.resource
    assert change.action is Action.DELETE and change.observed is not None
    named("delete", res.key, HANDLERS[res.kind].delete, res, change.observed)


# --- an explicit list of resources ------------------------------------------------------

def plan_resources(resources: list[Resource], owner: str = "", adopt: bool = False,
                   parallelism: int = 8) -> list[Change]:
    """Read and decide just these resources, with no account guard and no AWS facts: for
    callers that manage a few objects of their own (the flow deployer's deployments)."""
    observed = read_all(resources, parallelism)
    return decide_all(resources, observed, Decision(owner, adopt))


def apply_changes(changes: list[Change], done: list[Change] | None = None) -> dict[str, dict[str, Any]]:
    """Apply decided changes one after the other, in the (dependency) order given; no-ops
    only pass their outputs on. Nothing starts if any change is blocked. Each change
    applied is appended to `done`, so a caller can say what was made before an error."""
    blocked = [why for c in changes if (why := blocking(c))]
    if blocked:
        raise InfraError("nothing was changed:\n  " + "\n  ".join(blocked))
    outputs: dict[str, dict[str, Any]] = {}
    for change in changes:
        if change.deferred is not None:
            continue
        outputs[change.key] = apply_change(change, outputs)
        if change.action.mutates and done is not None:
            done.append(change)
    return outputs
