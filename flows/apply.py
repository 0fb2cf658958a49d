"""The one apply path, shared by bootstrap, `infra-update` and drift remediation:

    lock -> fresh plan -> digest check -> refusals -> apply -> verify -> bounded wait

Every resource change is a Prefect task, submitted as soon as its dependencies are done,
so independent resources are applied in parallel. Nothing is ever deleted. A stop
request (Ctrl-C, a lost lock) starts no further change, lets the ones under way finish
and raises `Interrupted` naming both.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.states import Cancelled, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from infra_tasks import engine, iam_policies, interrupt, lock, progress
from infra_tasks.aws import InfraError
from infra_tasks.config import InfraConfig
from infra_tasks.facts import Facts
from infra_tasks.interrupt import Interrupted
from infra_tasks.model import Action, Change, Plan
from infra_tasks.names import Account
from infra_tasks.render import render_text


class PlanChanged(InfraError):
    pass


# A plan read this long ago is read again before applying, even under an untouched lock:
# changes made outside this project (a console, another tool) take no lock.
REUSE_SECONDS = 60.0


@dataclass
class Prepared:
    """A plan the CLI showed, with what it was made from, for the apply to reuse instead
    of reading everything again (see `apply_locked`)."""

    plan: Plan
    cfg: InfraConfig
    facts: Facts
    notes: list[str]
    lock_state: str | None  # lock.state() before the plan was read (None: no Prefect side)
    read_at: float = field(default_factory=time.monotonic)

    def reusable(self, hold: lock.Hold | None) -> bool:
        fresh = time.monotonic() - self.read_at <= REUSE_SECONDS
        return fresh and (hold is None or hold.untouched)


_PREPARED: dict[str, Prepared] = {}


def prepare(prepared: Prepared) -> str:
    """Offer a plan to this process's next apply with the same digest; returns the digest."""
    digest = prepared.plan.digest()
    _PREPARED[digest] = prepared
    return digest


def take_prepared(digest: str | None) -> Prepared | None:
    return _PREPARED.pop(digest, None) if digest else None


def refusals(plan: Plan, acct: Account | None = None, role: str | None = None) -> list[str]:
    """Every reason the plan cannot be applied (by `role`, when given), before any change."""
    beyond = [why for c in plan.applicable if role and acct and (why := iam_policies.beyond_role(c, acct, role))]
    return list(dict.fromkeys(beyond + [m for c in plan.changes if (m := engine.blocking(c))]))


def check_applicable(plan: Plan) -> None:
    """Refuse before any change if any change cannot be made (conflicts, blocked creates)."""
    problems = refusals(plan)
    if problems:
        raise InfraError("nothing was changed, because:\n  " + "\n  ".join(problems))


@task(name="apply-resource", cache_policy=NO_CACHE, task_run_name="{change.action.value} {change.resource.key}")
def apply_resource(change: Change, known: dict[str, Any], upstream: dict[str, Any]) -> dict[str, Any] | State:
    """One change. An expected failure (InfraError: AWS refused, with the resource and the
    fix named) ends the task Failed with that message and no traceback; a change not
    started because a stop was requested ends Cancelled."""
    why = interrupt.requested()
    if why:
        return Cancelled(message=f"not started ({why})")
    reporter = progress.current()
    if reporter:
        reporter.started(change.key, change.action.value)
    try:
        out = engine.apply_change(change, {**known, **upstream})
    except InfraError as exc:
        if reporter:
            reporter.finished(change.key, change.action.value, error=str(exc))
        return Failed(message=str(exc))
    except Exception as exc:
        if reporter:
            reporter.finished(change.key, change.action.value, error=str(exc))
        raise
    if reporter:
        reporter.finished(change.key, change.action.value)
    get_run_logger().info("%s %s: %s", change.action.value, change.key, change.reason)
    return out


def submit(change: Change, known: dict[str, Any], upstream: dict[str, PrefectFuture[Any]]) -> PrefectFuture[Any]:
    """`apply_resource` as a task, waiting for `upstream`. The change and the outputs
    already known are quoted: Prefect would otherwise walk every nested value of them
    (policy documents, task definitions) looking for futures, twice per task."""
    return apply_resource.submit(quote(change), quote(known), upstream)


def apply_plan(plan: Plan, parallelism: int = 8) -> dict[str, dict[str, Any]]:
    """Every pending change as a task once its dependencies are done (see `in_order`)."""
    pending = {c.key for c in plan.applicable}
    known = {c.key: c.observed.outputs for c in plan.changes
             if c.action is Action.NOOP and c.observed is not None}
    by_key = {c.key: c for c in plan.changes}
    order = [r.key for r in engine.topo_order([c.resource for c in plan.changes]) if r.key in pending]
    deps = {k: engine.all_deps(by_key[k].resource) for k in order}
    futures: dict[str, PrefectFuture[Any]] = {}

    def start(key: str) -> PrefectFuture[Any]:
        return submit(by_key[key], {k: known[k] for k in deps[key] if k in known},
                      {k: futures[k] for k in deps[key] if k in futures})

    in_order(order, {k: [d for d in deps[k] if d in pending] for k in order}, parallelism, start, futures)
    return finish(futures, known, unsubmitted=[k for k in order if k not in futures])


def in_order(keys: list[str], deps: dict[str, list[str]], parallelism: int,
             start: Callable[[str], PrefectFuture[Any]], futures: dict[str, PrefectFuture[Any]]) -> None:
    """Start each of `keys` (into `futures`) once all of its `deps` (among `keys`) are done,
    at most `parallelism` at a time. Among the ready ones, those with the longest chain
    of keys waiting on them go first: that chain bounds the wall time, so it must not
    queue behind changes nothing waits for. A change is never started before its
    dependencies are done: Prefect's thread pool runs a submitted task at once, and one
    waiting for its dependencies would hold a worker thread meanwhile. Stops starting
    changes on a stop request (Ctrl-C, a lost lock); the caller waits for those started."""
    import concurrent.futures as cf

    after: dict[str, list[str]] = {k: [] for k in keys}
    for k in keys:
        for d in deps[k]:
            after[d].append(k)
    # Dependencies first (Kahn), then each key's chain: itself and the longest chain after it.
    count = {k: len(deps[k]) for k in keys}
    ordered = [k for k in keys if not count[k]]
    for k in ordered:
        for a in after[k]:
            count[a] -= 1
            if not count[a]:
                ordered.append(a)
    if len(ordered) < len(keys):
        raise InfraError(f"dependency cycle among: {', '.join(sorted(set(keys) - set(ordered)))}")
    chain: dict[str, int] = {}
    for k in reversed(ordered):
        chain[k] = 1 + max((chain[a] for a in after[k]), default=0)
    rank = {k: (-chain[k], i) for i, k in enumerate(keys)}
    waiting = {k: set(deps[k]) for k in keys}
    ready = [k for k in keys if not waiting[k]]
    running: dict[Any, str] = {}
    with handing_out():
        while (ready or running) and not interrupt.requested():
            ready.sort(key=rank.__getitem__)
            while ready and len(running) < max(1, parallelism) and not interrupt.requested():
                key = ready.pop(0)
                futures[key] = start(key)
                running[futures[key].wrapped_future] = key
            if not running:
                break
            done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
            for fut in done:
                finished = running.pop(fut)
                for waiter in after[finished]:
                    waiting[waiter].discard(finished)
                    if not waiting[waiter]:
                        ready.append(waiter)


@contextlib.contextmanager
def handing_out() -> Iterator[None]:
    """Around submitting the changes as tasks: Ctrl-C meanwhile stops the submitting (the
    tasks already submitted still run, or refuse to start: see `finish`). Without this a
    Ctrl-C while the first changes already ran ended the run without saying what was done."""
    try:
        yield
    except KeyboardInterrupt:
        interrupt.request("interrupted (Ctrl-C)")


def finish(futures: dict[str, PrefectFuture[Any]], known: dict[str, Any], what: str = "apply",
           unsubmitted: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Wait for every change; on Ctrl-C the ones under way finish and the rest refuse to
    start. Then each one's outcome (see `collect`); `unsubmitted`: changes a Ctrl-C kept
    from being submitted at all (not started)."""
    try:
        for fut in futures.values():
            fut.wait()
    except KeyboardInterrupt:
        interrupt.request("interrupted (Ctrl-C)")
        for fut in futures.values():
            fut.wait()
    return collect(futures, known, what, unsubmitted or [])


def collect(futures: dict[str, PrefectFuture[Any]], known: dict[str, Any],
            what: str = "apply", unsubmitted: list[str] | None = None) -> dict[str, dict[str, Any]]:
    outputs, failed, skipped, stopped = dict(known), [], [], []
    for key, fut in futures.items():
        state = fut.state
        if state.is_completed():
            outputs[key] = fut.result()
        elif state.is_cancelled():
            stopped.append(key)
        elif state.is_failed():
            msg = state.message or ""
            if msg.startswith("Task run encountered an exception"):
                try:
                    fut.result()
                except Exception as exc:  # noqa: BLE001 - an unexpected error: its own text
                    msg = str(exc)
            failed.append(msg if key in msg else f"{key}: {msg}")
        else:
            skipped.append(key)
    why = interrupt.requested()
    if why and not failed:
        raise Interrupted(why, [k for k in futures if k in outputs],
                          [k for k in futures if k not in outputs] + list(unsubmitted or []))
    if failed or skipped or stopped:
        lines = ([f"failed: {f}" for f in failed] + [f"not attempted (a dependency failed): {s}" for s in skipped]
                 + [f"not started ({why}): {s}" for s in stopped])
        raise InfraError(f"{what} stopped:\n  " + "\n  ".join(lines)
                         + "\n  Re-run after fixing the cause: completed changes are not repeated.")
    return outputs


Loaded = tuple[InfraConfig, Facts, list[str]]


def apply_locked(cfg: InfraConfig, env: str, facts: Facts, *, parallelism: int = 8, adopt: bool = False,
                 expected_digest: str | None = None, include_prefect: bool = True, wait_stable: bool = True,
                 role: str | None = None, notes: list[str] | None = None, command: str = "",
                 prepared: Prepared | None = None, reload: Callable[[], Loaded] | None = None) -> dict[str, Any]:
    """Lock -> fresh plan -> digest check -> refusals -> apply -> verify -> bounded wait.

    `expected_digest`: the plan someone confirmed or approved; if the fresh plan differs,
    nothing is changed. `role`: the project role this run acts as (infra-update's
    infra-write), whose limits are checked before any change. Without the Prefect side
    there is no lock (it lives in Prefect).

    Plan once: `prepared`, the plan the CLI just showed, is applied as it is (no second
    read of every resource) when it is younger than REUSE_SECONDS and no other run took
    the lock since it was read. Otherwise everything is read again under the lock, from
    the configuration and facts `reload` gives (the approved UI changes may have moved)."""
    if not include_prefect:
        reuse = prepared is not None and prepared.reusable(None)
        return _apply(*(_loaded(prepared) if reuse else _reload(cfg, facts, notes, reload)), env, parallelism, adopt,
                      expected_digest, False, wait_stable, role, prepared.plan if reuse else None)
    with lock.held(cfg, env, command=command or f"apply of {env}",
                   unchanged_since=prepared.lock_state if prepared else None) as hold:
        reuse = prepared is not None and prepared.reusable(hold)
        return _apply(*(_loaded(prepared) if reuse else _reload(cfg, facts, notes, reload)), env, parallelism, adopt,
                      expected_digest, True, wait_stable, role, prepared.plan if reuse else None)


def _loaded(prepared: Prepared | None) -> Loaded:
    assert prepared is not None
    return prepared.cfg, prepared.facts, prepared.notes


def _reload(cfg: InfraConfig, facts: Facts, notes: list[str] | None, reload: Callable[[], Loaded] | None) -> Loaded:
    return reload() if reload else (cfg, facts, list(notes or []))


def _apply(cfg: InfraConfig, facts: Facts, notes: list[str], env: str, parallelism: int, adopt: bool,
           expected_digest: str | None, include_prefect: bool, wait_stable: bool, role: str | None,
           plan: Plan | None) -> dict[str, Any]:
    log = get_run_logger()
    if plan is None:
        plan = engine.plan(cfg, env, facts, adopt=adopt, parallelism=parallelism, include_prefect=include_prefect,
                           notes=notes)
        if expected_digest and plan.digest() != expected_digest:
            raise PlanChanged("the infrastructure changed between the plan you confirmed and the apply; nothing was "
                              "changed. Run again to see the new plan.")
    else:
        log.info("applying the plan shown: read moments ago, and no other run took the lock since")
    acct = Account(cfg, env, facts.account_id, facts.region, facts.partition)
    problems = refusals(plan, acct, role)
    if problems:
        raise InfraError("nothing was changed, because:\n  " + "\n  ".join(problems))
    log.info("applying %d changes to %s (account %s)", len(plan.applicable), env, facts.account_id)
    if plan.applicable:
        apply_plan(plan, parallelism)
    verify = engine.plan(cfg, env, facts, adopt=False, parallelism=parallelism, include_prefect=include_prefect)
    if verify.applicable:
        raise InfraError("verify: after applying, these still differ from the configuration:\n"
                         + render_text(verify))
    if wait_stable and not facts.emulated and any(c.resource.kind == "ecs.service" for c in plan.applicable):
        wait_for_agents(acct)
    log.info("verified: %d resources match the configuration", len(verify.changes) - len(verify.deferred))
    return {"environment": env, "applied": len(plan.applicable), "counts": plan.counts(),
            "applied_keys": [c.key for c in plan.applicable],
            "verified": len(verify.changes) - len(verify.deferred), "deferred": [c.key for c in verify.deferred],
            "warnings": verify.warnings}


def run_with_progress(flow_fn: Any, changes: int, parallelism: int, verb: str, live: bool | None = None,
                      **params: Any) -> Any:
    """Run a changing flow (`infra-apply`, `infra-teardown`) in this process with a task
    runner of the given parallelism and a progress display of `changes` steps. Its
    Cancelled end is `Interrupted`, its Failed end (an expected failure) one InfraError
    with its message; a crash shows as it is."""
    runner = ThreadPoolTaskRunner(max_workers=max(1, parallelism))
    reporter = progress.Reporter(changes, live=live, verb=verb)
    progress.use(reporter)
    try:
        with reporter:
            state = flow_fn.with_options(task_runner=runner)(parallelism=parallelism, return_state=True, **params)
    finally:
        progress.use(None)
    if state.is_cancelled():
        raise Interrupted.from_report(state.message or "stopped")
    if state.is_failed() and state.message and not state.message.startswith("Flow run encountered an exception"):
        raise InfraError(state.message)
    return state.result()


def wait_for_agents(acct: Account) -> None:
    """Bounded: each agent service gets ten minutes to become stable."""
    from infra_tasks.ecs import wait_stable

    for d in acct.deployments:
        reporter = progress.current()
        if reporter:
            reporter.waiting(f"agent service {d.service} to become stable (up to 10 min)")
        try:
            wait_stable(d.cluster, [d.service])
        except Exception as exc:  # noqa: BLE001 - bounded wait: report, do not hang
            raise InfraError(f"ecs.service/{d.service}: did not become stable within 10 minutes ({exc}); "
                             f"check the service's events and the agent log group {d.agent_log_group}") from None
