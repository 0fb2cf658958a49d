"""Teardown: what retiring an environment deletes, and in what order.

    read (everything bootstrap would manage, plus what discovery finds with our tag)
      -> decide per resource (pure): DELETE, or KEEP with the reason
      -> the order: a resource is deleted after everything that depends on it

What is deleted: a resource that exists and carries this environment's ownership tag
(`managed-by` and `environment`); a resource without tags of its own (a scaling policy,
a Prefect object) when the resource it belongs to is not kept. What is kept: someone
else's resource, a shared one adopted as it was (the CircleCI OIDC provider, a
pre-existing secret: they never got our tag), and data — flow buckets, registries, log
groups, the Prefect credentials secret, the UI-approved settings — unless `delete_data`.

Reading and deciding only: the teardown flow (flows/teardown.py) applies the plan.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from . import discovery, engine, prefect_objects
from .config import InfraConfig
from .desired import owner_value
from .facts import Facts
from .model import OWNER_TAG, Action, Change, Observed, Plan, Resource
from .names import lock_name
from .overrides import variable_name

# Deleted in this order, one layer after another (within a layer, a resource still goes
# after what depends on it). The agents stop before their pools go (a running worker
# re-creates its pool), the pools and deployments before the roles their runs use, and
# the data last, so that a teardown stopped half-way never leaves a running agent
# without its secret or bucket.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("prefect.automation", "prefect.deployment"),
    ("autoscaling.policy", "autoscaling.target"),
    ("ecs.service",),
    ("events.rule", "sqs.queue", "prefect.work_pool", "prefect.block"),
    ("ecs.task_definition", "ecs.cluster", "ec2.security_group"),
    ("iam.role", "iam.policy", "iam.oidc_provider"),
    ("logs.group", "s3.bucket", "ecr.repository", "secretsmanager.secret", "prefect.variable"),
)
LAYER = {kind: i for i, layer in enumerate(LAYERS) for kind in layer}
# The environment's lock is held while deleting and deleted after it is released (with
# its holder variable, which the hold itself writes).
LOCK_KIND = "prefect.concurrency_limit"
DATA_HINT = "holds data; kept (--delete-data deletes it)"


@dataclass(frozen=True)
class Teardown:
    """What `decide()` needs besides the resource and what was read."""

    owner: str
    env: str
    delete_data: bool = False


def resources(cfg: InfraConfig, env: str, facts: Facts, include_prefect: bool,
              unmanaged_only: bool = False) -> list[Resource]:
    """Everything bootstrap manages in `env` (with the deployments registered on its pools
    and the approved-settings variable), and what discovery finds carrying this
    environment's tag. `unmanaged_only` (the drift check's prune): only what discovery
    finds that the configuration no longer wants."""
    out = engine.all_resources(cfg, env, facts, include_prefect)
    if unmanaged_only:
        desired = {r.key for r in out}
        return [r for r in _found(cfg, env) if r.key not in desired]
    if include_prefect:
        out = [_readable(r) for r in out]
        for pool in [r.name for r in out if r.kind == "prefect.work_pool"]:
            out += [Resource("prefect.deployment", name, {}, deps=(f"prefect.work_pool/{pool}",))
                    for name, tags in prefect_objects.deployments_on_pool(pool) if prefect_objects.ours(tags)]
        out.append(Resource("prefect.variable", variable_name(cfg.prefix, env), {}, ident={"data": True}))
    return list({r.key: r for r in [*out, *_found(cfg, env)]}.values())


def _found(cfg: InfraConfig, env: str) -> list[Resource]:
    found, failed = discovery.owned_resources(cfg, env, owner_value(cfg))
    if failed:
        from .aws import InfraError

        raise InfraError("teardown: could not list every resource carrying this environment's tag, so it would "
                         "leave some behind:\n  " + "\n  ".join(f"{k}: {why}" for k, why in failed.items())
                         + "\n  Nothing was deleted; fix the access and run again.")
    return found


def _readable(res: Resource) -> Resource:
    """The automation without its notification block: reading it for a teardown must not
    depend on the block still existing."""
    if res.kind == "prefect.automation":
        return dataclasses.replace(res, props={**res.props, "actions": []})
    return res


def read(resources: list[Resource], parallelism: int) -> tuple[dict[str, Observed | None], dict[str, str | None]]:
    """What exists, and for each existing resource why it must not be deleted (if so)."""
    observed = engine.read_all(resources, parallelism)
    present = [r for r in resources if observed.get(r.key) is not None]

    def blocker(res: Resource) -> str | None:
        return engine.HANDLERS[res.kind].delete_blocker(res, observed[res.key])

    import concurrent.futures as cf
    import contextvars

    with cf.ThreadPoolExecutor(max_workers=max(1, parallelism)) as pool:
        futures = {r.key: pool.submit(contextvars.copy_context().run, blocker, r) for r in present}
        return observed, {k: f.result() for k, f in futures.items()}


def owned(observed: Observed, how: Teardown) -> str | None:
    """None when the tags make it this environment's; otherwise whose it is."""
    have = observed.tags.get(OWNER_TAG)
    if have != how.owner:
        return f"owned by another stack ({OWNER_TAG}={have})" if have else (
            f"has no {OWNER_TAG} tag (adopted as it was, or someone else's)")
    if observed.tags.get("environment", how.env) != how.env:
        return f"belongs to environment {observed.tags['environment']!r}"
    return None


def decide(res: Resource, observed: Observed | None, blocker: str | None, how: Teardown,
           foreign: frozenset[str] = frozenset()) -> Change | None:
    """The teardown's change for one resource (pure); None when there is nothing there."""
    if observed is None:
        return None
    if observed.outputs.get("scheduled_for_deletion"):
        # An earlier teardown scheduled it (a secret's recovery window): AWS finishes it.
        return Change(res, Action.KEEP, f"scheduled for deletion by an earlier teardown "
                      f"({observed.outputs['scheduled_for_deletion']}); recoverable until then", observed=observed)
    handler = engine.HANDLERS[res.kind]
    if handler.taggable and handler.ownership_checked:
        whose = owned(observed, how)
        if whose:
            return Change(res, Action.KEEP, f"not this environment's: {whose}", observed=observed)
    elif res.kind.startswith("autoscaling.") and foreign & set(engine.all_deps(res)):
        return Change(res, Action.KEEP, "belongs to a resource that is not this environment's", observed=observed)
    if (handler.holds_data or res.ident.get("data")) and not how.delete_data:
        return Change(res, Action.KEEP, DATA_HINT, observed=observed)
    return Change(res, Action.DELETE, blocker or _what(res), observed=observed, blocker=blocker)


def _what(res: Resource) -> str:
    return {
        "s3.bucket": "deleted with every object version and delete marker",
        "ecr.repository": "deleted with its images",
        "ecs.service": "scaled to 0 and drained, then deleted",
        "iam.role": "policies detached, then deleted",
        "secretsmanager.secret": "scheduled for deletion (recoverable for 7 days)",
    }.get(res.kind, "deleted")


def order(resources: list[Resource]) -> dict[str, tuple[str, ...]]:
    """For each resource, what must be deleted before it: whatever depends on it, and
    every resource of an earlier layer."""
    keys = {r.key for r in resources}
    after: dict[str, set[str]] = {r.key: set() for r in resources}
    for r in resources:
        for d in engine.all_deps(r):
            if d in keys:
                after[d].add(r.key)
    for r in resources:
        layer = LAYER.get(r.kind, len(LAYERS))
        after[r.key] |= {o.key for o in resources if LAYER.get(o.kind, len(LAYERS)) < layer}
    return {k: tuple(sorted(v)) for k, v in after.items()}


def plan(cfg: InfraConfig, env: str, facts: Facts, *, delete_data: bool = False, include_prefect: bool = True,
         parallelism: int = 8, unmanaged_only: bool = False) -> Plan:
    """The teardown plan: a DELETE or KEEP change per existing resource, in deletion order.
    The lock is not in it (it is held while deleting; flows/teardown.py deletes it last)."""
    how = Teardown(owner_value(cfg), env, delete_data)
    res = resources(cfg, env, facts, include_prefect, unmanaged_only)
    observed, blockers = read(res, parallelism)
    changes: list[Change] = []
    foreign: set[str] = set()
    for r in engine.topo_order(res):
        change = decide(r, observed.get(r.key), blockers.get(r.key), how, frozenset(foreign))
        if change is None:
            continue
        if change.action is Action.KEEP and change.reason.startswith("not this environment's"):
            foreign.add(r.key)
        changes.append(change)
    after = order([c.resource for c in changes if c.action is Action.DELETE])
    changes.sort(key=lambda c: (c.action is Action.KEEP, len(after.get(c.key, ())), c.key))
    notes = [(f"prune: deletes what carries {OWNER_TAG}={how.owner} and environment={env} but is no longer in the "
              f"configuration (UNMANAGED)" if unmanaged_only else
              f"teardown: deletes what carries {OWNER_TAG}={how.owner} and environment={env}")
             + ("" if delete_data else "; data is kept (--delete-data to delete it)")]
    p = Plan(env, facts.account_id, facts.region, changes, notes=notes)
    if include_prefect and not unmanaged_only and any(c.action is Action.DELETE for c in changes):
        p.notes.append(f"the lock {LOCK_KIND}/{lock_name(cfg.prefix, env)} is held while deleting and deleted last")
    return p


def dependants(plan: Plan) -> dict[str, tuple[str, ...]]:
    """The deletion order of a plan's DELETE changes (see `order`)."""
    return order([c.resource for c in plan.changes if c.action is Action.DELETE])


def summary(plan: Plan) -> dict[str, Any]:
    return {"deleted": [c.key for c in plan.changes if c.action is Action.DELETE],
            "kept": {c.key: c.reason for c in plan.changes if c.action is Action.KEEP}}
