"""Read -> normalise -> diff -> decide, and applying one decided change.

`plan()` reads every resource (in parallel, read-only) and decides a `Change` per
resource; `decide()` is pure. `apply_change()` performs one change given its
dependencies' outputs. The Prefect flows schedule `apply_change` as tasks; drift
check, plan and apply all go through `plan()`.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextvars
import os
from typing import Any, Iterable

from . import autoscaling, ecr, ecs, ecs_taskdef, events, iam, logs, prefect_objects, s3, secrets, sqs
from .aws import BotoCoreError, ClientError, InfraError, client, translate, use_region
from .config import InfraConfig
from .desired import Facts, desired_state, owner_value
from .diff import diff
from .ec2 import SecurityGroupHandler, resolve_network
from .emulator import unstored_properties
from .handler import Handler
from .model import OWNER_TAG, UNKNOWN, Action, Change, Observed, Plan, Ref, Resource

HANDLERS: dict[str, Handler] = {h.kind: h for h in (
    s3.BucketHandler(), ecr.RepositoryHandler(), logs.LogGroupHandler(), secrets.SecretHandler(),
    iam.RoleHandler(), iam.ManagedPolicyHandler(), iam.OidcProviderHandler(), SecurityGroupHandler(), sqs.QueueHandler(),
    events.RuleHandler(), ecs.ClusterHandler(), ecs_taskdef.TaskDefinitionHandler(), ecs.ServiceHandler(),
    autoscaling.ScalableTargetHandler(), autoscaling.ScalingPolicyHandler(), *prefect_objects.HANDLERS,
)}


class AccountMismatch(InfraError):
    pass


def caller_account() -> tuple[str, str]:
    ident = client("sts").get_caller_identity()
    return ident["Account"], ident["Arn"]


def account_guard(cfg: InfraConfig, env_name: str) -> tuple[str, str]:
    """The credentials must belong to the environment's configured account."""
    want = cfg.env(env_name).account_id
    try:
        got, arn = caller_account()
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, "sts:GetCallerIdentity", f"environment {env_name!r}") from None
    if got != want:
        raise AccountMismatch(
            f"account guard: environment {env_name!r} is configured for account {want} (infra.toml "
            f"environments.{env_name}.account_id) but the credentials in use belong to account {got} ({arn}); "
            f"switch AWS_PROFILE to the {env_name} account or fix the account id. Nothing was changed."
        )
    return got, arn


def gather_facts(cfg: InfraConfig, env_name: str) -> Facts:
    use_region(cfg.region)
    account, caller = account_guard(cfg, env_name)
    try:
        network = resolve_network(cfg.env(env_name).network, f"environments.{env_name}")
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, getattr(exc, "operation_name", "reading the network"),
                        f"the network of environment {env_name!r}") from None
    return Facts(account_id=account, region=cfg.region, network=network, caller_arn=caller)


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

def decide(res: Resource, observed: Observed | None, outputs: dict[str, dict[str, Any]], owner: str,
           adopt: bool = False) -> Change:
    handler = HANDLERS[res.kind]
    desired = resolve(res.props, outputs)
    if observed is None:
        blocker = handler.create_blocker(res, desired)
        return Change(res, Action.CREATE, blocker or "does not exist", blocker=blocker)
    reason_prefix = ""
    manage_tags = True
    have_owner = observed.tags.get(OWNER_TAG)
    if handler.taggable and handler.ownership_checked and have_owner != owner:
        if have_owner and not adopt:
            return Change(res, Action.CONFLICT,
                          f"owned by another stack ({OWNER_TAG}={have_owner}); re-run with --adopt to take it over",
                          observed=observed)
        if handler.adopt_existing and not have_owner:
            # Shared and pre-existing: adopted as it is; its tags stay its owner's business.
            desired = {**desired, "tags": None}
            manage_tags = False
            reason_prefix = "adopted existing; "
        elif not adopt:
            return Change(res, Action.CONFLICT,
                          f"exists without the ownership tag {OWNER_TAG}={owner}; re-run with --adopt to manage it "
                          f"(adds the tag and reconciles it to the config)", observed=observed)
        else:
            reason_prefix = "adopting (adds ownership tag); "
    diffs = property_diffs(desired, observed, res.kind)
    if not diffs:
        return Change(res, Action.NOOP, reason_prefix + "in sync", observed=observed, manage_tags=manage_tags)
    replace = [d for d in diffs if any(d.path == p or d.path.startswith(p + ".") for p in handler.replace_paths)]
    if replace:
        how = ("registers a new revision (the old one is kept)" if handler.replace_is_safe
               else "cannot change in place; bootstrap never deletes, so this needs a manual step")
        return Change(res, Action.REPLACE, f"{reason_prefix}{', '.join(sorted({d.path.split('.')[0] for d in replace}))}"
                      f" changed: {how}", diffs, observed, manage_tags=manage_tags)
    n = len(diffs)
    return Change(res, Action.UPDATE, f"{reason_prefix}{n} propert{'y differs' if n == 1 else 'ies differ'}",
                  diffs, observed, manage_tags=manage_tags)


def property_diffs(desired: dict[str, Any], observed: Observed, kind: str = "") -> list:
    gaps = unstored_properties(kind)
    if gaps:
        desired = {k: (None if k in gaps else v) for k, v in desired.items()}
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

def read_one(res: Resource) -> Observed | None:
    try:
        return HANDLERS[res.kind].read(res)
    except InfraError:
        raise
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, "read", res.key) from None
    except Exception as exc:  # noqa: BLE001 - the Prefect API's errors, named; anything else re-raised
        raise prefect_objects.translate(exc, "read", res.key) from None


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


def decide_all(resources: list[Resource], observed: dict[str, Any], owner: str,
               adopt: bool) -> list[Change]:
    outputs: dict[str, dict[str, Any]] = {}
    changes: list[Change] = []
    unchecked: dict[str, str] = {}
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
        change = decide(res, got, outputs, owner, adopt)
        if change.observed is not None and change.action in (Action.NOOP, Action.UPDATE, Action.CONFLICT):
            outputs[res.key] = change.observed.outputs
        changes.append(change)
    return changes


def sandboxed() -> bool:
    return bool(os.environ.get("INFRA_SANDBOX_ACCOUNT"))


def all_resources(cfg: InfraConfig, env_name: str, facts: Facts, include_prefect: bool) -> list[Resource]:
    resources = desired_state(cfg, env_name, facts)
    if include_prefect:
        from .desired_prefect import prefect_resources

        resources += prefect_resources(cfg, env_name, facts, sandbox=sandboxed(),
                                       endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
    return resources


def plan(cfg: InfraConfig, env_name: str, facts: Facts | None = None, adopt: bool = False,
         parallelism: int = 8, include_prefect: bool = False, notes: list[str] | None = None,
         tolerant: bool = False) -> Plan:
    facts = facts or gather_facts(cfg, env_name)
    resources = all_resources(cfg, env_name, facts, include_prefect)
    observed = read_all(resources, parallelism, tolerant)
    changes = decide_all(resources, observed, owner_value(cfg), adopt)
    p = Plan(env_name, facts.account_id, facts.region, changes, notes=list(notes or []))
    check_agent_image(cfg, env_name, facts, p)
    check_caller_role(cfg, env_name, facts, p)
    if facts.network.public_subnets and not cfg.env(env_name).network.assign_public_ip:
        p.warnings.append(
            f"subnets {', '.join(facts.network.public_subnets)} map public IPs on launch (public subnets); the agent "
            f"runs without a public IP, so it reaches the Prefect API only through a NAT gateway or VPC endpoints. "
            f"Select private subnets with environments.{env_name}.network.subnets"
        )
    return p


def check_caller_role(cfg: InfraConfig, env_name: str, facts: Facts, p: Plan) -> None:
    """Running as one of the project's own roles (CI's apply, an infra-update run), mark
    what that role may not change, so the apply stops before any change instead of
    half-way with AccessDenied."""
    from .iam_policies import beyond_role
    from .names import Account

    a = Account(cfg, env_name, facts.account_id, facts.region, facts.partition)
    role = a.project_role_of(facts.caller_arn)
    if role is None:
        return
    for c in p.changes:
        why = beyond_role(c, a, role)
        if why and c.deferred is None:
            c.blocker = why


def check_agent_image(cfg: InfraConfig, env_name: str, facts: Facts, p: Plan) -> None:
    """Before pointing the agent at an image, it must be in ECR. If it is not, the agent's
    task definition and everything that depends on it wait (deferred) and the plan says how
    to push it; the rest is applied (this is the order CI follows: registry and roles,
    push, then the agent)."""
    from .ecr import image_exists
    from .names import Account

    a = Account(cfg, env_name, facts.account_id, facts.region, facts.partition)
    if cfg.agent.image_repository:
        return  # an external registry: not ours to check
    taskdefs = [c for c in p.changes if c.resource.kind == "ecs.task_definition"
                and c.action in (Action.CREATE, Action.REPLACE)]
    if not taskdefs:
        return
    repo_planned = any(c.resource.kind == "ecr.repository" and c.action is Action.CREATE for c in p.changes)
    if not repo_planned and image_exists(a.ecr_repository, cfg.agent.image_tag):
        return
    push = (f"agent image {a.agent_image} is not in ECR. Push it, then run bootstrap again:\n"
            f"    aws ecr get-login-password --region {a.region} | docker login --username AWS "
            f"--password-stdin {a.registry}\n"
            f"    docker build -f docker/agent/Dockerfile -t {a.agent_image} . && docker push {a.agent_image}")
    if sandboxed():
        p.warnings.append(f"agent image {a.agent_image} is not in ECR (the sandbox cannot hold images; against "
                          f"AWS the agent's task definition and service would wait for the push)")
        return
    p.warnings.append(push)
    waiting = {c.key for c in taskdefs}
    for c in p.changes:  # changes come in dependency order
        if c.key in waiting or (c.action.mutates and any(d in waiting for d in all_deps(c.resource))):
            waiting.add(c.key)
            if c.action.mutates:
                c.deferred = f"waits for the agent image {cfg.agent.image_tag!r} to be pushed"
                c.reason = f"{c.reason}; deferred: {c.deferred}"


# --- applying one change ------------------------------------------------------------

def apply_change(change: Change, outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Perform one decided change; returns the resource's outputs for its dependants."""
    res = change.resource
    handler = HANDLERS[res.kind]
    if change.action is Action.NOOP:
        return change.observed.outputs if change.observed else {}
    props = resolve(res.props, outputs)
    if contains_unknown(props):
        raise InfraError(f"{res.key}: a dependency did not report its id/ARN; re-run bootstrap")
    try:
        if change.action is Action.CREATE:
            return handler.create(res, props)
        assert change.observed is not None
        if change.action is Action.REPLACE:
            return handler.replace(res, props, change.observed, change.diffs)
        if change.action is Action.UPDATE:
            # Recompute with references now known (an id created earlier in this run).
            if not change.manage_tags:
                props = {**props, "tags": None}
            diffs = property_diffs(props, change.observed, res.kind)
            if not diffs:
                return change.observed.outputs
            return handler.update(res, props, change.observed, diffs)
    except InfraError:
        raise
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, change.action.value, res.key) from None
    except Exception as exc:  # noqa: BLE001 - the Prefect API's errors, named; anything else re-raised
        raise prefect_objects.translate(exc, change.action.value, res.key) from None
    raise InfraError(f"{res.key}: cannot apply a {change.action.value} change")

