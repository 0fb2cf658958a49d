"""Bootstrap: plan, confirm, apply (Prefect tasks in dependency order), verify.

    python -m flows.bootstrap --env production --plan        # show the plan; exit 0 / 2 / 1
    python -m flows.bootstrap --env production               # plan, confirm, apply, verify
    python -m flows.bootstrap --sandbox --env production --yes

The apply runs as the Prefect flow `infra-apply`: every resource change is a Prefect
task, submitted as soon as its dependencies are done, so independent resources are
applied in parallel. Bootstrap never deletes a resource.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from infra_tasks import emulator, engine, lock, progress
from infra_tasks.aws import CALLS, InfraError
from infra_tasks.config import ConfigError, InfraConfig
from infra_tasks.effective import effective_config
from infra_tasks.prefect_objects import PREFECT_CALLS
from infra_tasks.model import Action, Change, Plan
from infra_tasks.render import render_text, write_json

from .cli import (EXIT_CHANGES, EXIT_ERROR, EXIT_OK, add_common_args, aws_target, fail, load, parse_overrides,
                  prefect_target)


class PlanChanged(InfraError):
    pass


def check_applicable(plan: Plan) -> None:
    """Refuse before any change if any change cannot be made (conflicts, blocked creates)."""
    problems = [msg for c in plan.changes if (msg := engine.blocking(c))]
    if problems:
        raise InfraError("nothing was changed, because:\n  " + "\n  ".join(problems))


@task(name="apply-resource", cache_policy=NO_CACHE, task_run_name="{change.action.value} {change.resource.key}")
def apply_resource(change: Change, known: dict[str, Any], upstream: dict[str, Any]) -> dict[str, Any]:
    reporter = progress.current()
    if reporter:
        reporter.started(change.key, change.action.value)
    try:
        out = engine.apply_change(change, {**known, **upstream})
    except Exception as exc:
        if reporter:
            reporter.finished(change.key, change.action.value, error=str(exc))
        raise
    if reporter:
        reporter.finished(change.key, change.action.value)
    get_run_logger().info("%s %s: %s", change.action.value, change.key, change.reason)
    return out


def apply_plan(plan: Plan) -> dict[str, dict[str, Any]]:
    """Submit every pending change as a task once its dependencies are done."""
    pending = {c.key for c in plan.applicable}
    known = {c.key: c.observed.outputs for c in plan.changes
             if c.action is Action.NOOP and c.observed is not None}
    by_key = {c.key: c for c in plan.changes}
    futures: dict[str, PrefectFuture[Any]] = {}
    for res in engine.topo_order([c.resource for c in plan.changes]):
        if res.key not in pending:
            continue
        deps = engine.all_deps(res)
        futures[res.key] = apply_resource.submit(
            by_key[res.key],
            {k: known[k] for k in deps if k in known},
            {k: futures[k] for k in deps if k in futures},
        )
    outputs, failed, skipped = dict(known), [], []
    for key, fut in futures.items():
        fut.wait()
        state = fut.state
        if state.is_completed():
            outputs[key] = fut.result()
        elif state.is_failed():
            try:
                fut.result()
            except Exception as exc:  # noqa: BLE001 - collected and reported below
                failed.append(str(exc) if key in str(exc) else f"{key}: {exc}")
        else:
            skipped.append(key)
    if failed or skipped:
        lines = [f"failed: {f}" for f in failed] + [f"not attempted (a dependency failed): {s}" for s in skipped]
        raise InfraError("apply stopped:\n  " + "\n  ".join(lines)
                         + "\n  Re-run after fixing the cause: completed changes are not repeated.")
    return outputs


@flow(name="infra-apply", task_runner=ThreadPoolTaskRunner(max_workers=8), validate_parameters=True)
def apply_infra(env: str, config_path: str | None = None, overrides: dict[str, Any] | None = None,
                adopt: bool = False, parallelism: int = 8, expected_digest: str | None = None,
                wait_stable: bool = True, include_prefect: bool = True) -> dict[str, Any]:
    """Compute the plan, apply it, then verify that a fresh plan is empty — holding the
    environment's lock so no other mutating run applies at the same time."""
    cfg, notes = effective_config(config_path, env, overrides, use_prefect=include_prefect)
    facts = engine.gather_facts(cfg, env)
    if not include_prefect:
        return _apply_locked(cfg, env, facts, adopt, parallelism, expected_digest, wait_stable, False, notes)
    with lock.held(cfg, env):
        return _apply_locked(cfg, env, facts, adopt, parallelism, expected_digest, wait_stable, True, notes)


def _apply_locked(cfg: InfraConfig, env: str, facts: Any, adopt: bool, parallelism: int,
                  expected_digest: str | None, wait_stable: bool, include_prefect: bool,
                  notes: list[str]) -> dict[str, Any]:
    log = get_run_logger()
    plan = engine.plan(cfg, env, facts, adopt=adopt, parallelism=parallelism, include_prefect=include_prefect,
                       notes=notes)
    if expected_digest and plan.digest() != expected_digest:
        raise PlanChanged("the infrastructure changed between the plan you confirmed and the apply; nothing was "
                          "changed. Run bootstrap again to see the new plan.")
    check_applicable(plan)
    log.info("applying %d changes to %s (account %s)", len(plan.applicable), env, facts.account_id)
    if plan.applicable:
        apply_plan(plan)
    verify = engine.plan(cfg, env, facts, adopt=False, parallelism=parallelism, include_prefect=include_prefect)
    if verify.applicable:
        raise InfraError("verify: after applying, these still differ from the configuration:\n"
                         + render_text(verify))
    if wait_stable and not emulator.detected() and any(c.resource.kind == "ecs.service" for c in plan.applicable):
        from infra_tasks.ecs import wait_stable as wait
        from infra_tasks.names import Account

        acct = Account(cfg, env, facts.account_id, facts.region)
        for d in acct.deployments:
            reporter = progress.current()
            if reporter:
                reporter.waiting(f"agent service {d.service} to become stable (up to 10 min)")
            try:
                wait(d.cluster, [d.service])
            except Exception as exc:  # noqa: BLE001 - bounded wait: report, do not hang
                raise InfraError(f"ecs.service/{d.service}: did not become stable within 10 minutes ({exc}); "
                                 f"check the service's events and the agent log group {d.agent_log_group}") from None
    log.info("verified: %d resources match the configuration", len(verify.changes) - len(verify.deferred))
    return {"environment": env, "applied": len(plan.applicable), "counts": plan.counts(),
            "verified": len(verify.changes) - len(verify.deferred), "deferred": [c.key for c in verify.deferred],
            "warnings": verify.warnings}


def run_apply(cfg_args: dict[str, Any], plan: Plan, parallelism: int, live: bool | None = None) -> dict[str, Any]:
    """Run the `infra-apply` flow with a task runner of the given parallelism."""
    runner = ThreadPoolTaskRunner(max_workers=max(1, parallelism))
    reporter = progress.Reporter(len(plan.applicable), live=live)
    progress.use(reporter)
    try:
        with reporter:
            return apply_infra.with_options(task_runner=runner)(
                parallelism=parallelism, expected_digest=plan.digest(), **cfg_args)
    finally:
        progress.use(None)


def confirm(plan: Plan, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        raise InfraError("refusing to apply without confirmation: stdin is not a terminal; pass --yes")
    answer = input(f"Apply {len(plan.applicable)} changes to {plan.environment} (account {plan.account_id})? "
                   f"Only 'yes' is accepted: ")
    return answer.strip() == "yes"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.bootstrap", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--plan", action="store_true",
                   help="only show the plan; exit 0 when nothing would change, 2 when something would, 1 on error")
    p.add_argument("--yes", action="store_true", help="apply without asking for confirmation")
    p.add_argument("--adopt", action="store_true",
                   help="take over resources that have our names but not our ownership tag")
    p.add_argument("--plan-out", metavar="FILE", help="also write the plan as JSON to FILE")
    p.add_argument("--show-unchanged", action="store_true", help="list unchanged resources in the plan too")
    p.add_argument("--rotate-credentials", action="store_true",
                   help="set the Prefect credentials secret to PREFECT_API_URL/PREFECT_API_KEY from the environment "
                        "(a missing secret is always created from them)")
    p.add_argument("--no-prefect", action="store_true",
                   help="manage only AWS: skip work pools, blocks, deployments, the lock and UI-approved changes")
    p.add_argument("--no-wait", action="store_true",
                   help="do not wait for the agent services to become stable after applying (real AWS only)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.parallelism < 1:
        return fail("--parallelism must be at least 1")
    try:
        cfg = load(args)
    except ConfigError as exc:
        return fail(str(exc))
    if args.rotate_credentials:
        if not (os.environ.get("PREFECT_API_URL") and os.environ.get("PREFECT_API_KEY")):
            return fail("--rotate-credentials needs PREFECT_API_URL and PREFECT_API_KEY in the environment")
        os.environ["INFRA_ROTATE_CREDENTIALS"] = "1"
    started = time.monotonic()
    CALLS.reset()
    PREFECT_CALLS.reset()
    try:
        with aws_target(args, cfg), prefect_target():
            code = _run(args, cfg)
    except (InfraError, ConfigError) as exc:
        return fail(str(exc))
    finally:
        os.environ.pop("INFRA_ROTATE_CREDENTIALS", None)
        mutating = len(CALLS.mutating())
        print(f"AWS calls: {CALLS.total} ({mutating} mutating); Prefect writes: {PREFECT_CALLS.total}; "
              f"{time.monotonic() - started:.1f}s", file=sys.stderr)
    return code


def _run(args: argparse.Namespace, cfg: InfraConfig) -> int:
    include_prefect = not args.no_prefect
    cfg, notes = effective_config(args.config, args.env, parse_overrides(args.overrides), include_prefect)
    plan = engine.plan(cfg, args.env, adopt=args.adopt, parallelism=args.parallelism,
                       include_prefect=include_prefect, notes=notes)
    print(render_text(plan, show_noop=args.show_unchanged))
    if args.plan_out:
        write_json(plan, args.plan_out)
    if args.plan:
        if plan.conflicts and not args.adopt:
            print(f"\n{len(plan.conflicts)} conflict(s): apply would stop; see above.", file=sys.stderr)
            return EXIT_ERROR
        return EXIT_OK if plan.empty else EXIT_CHANGES
    if not plan.applicable:
        return EXIT_OK  # nothing to do, or only changes waiting for an image push (see the warning)
    check_applicable(plan)
    if not confirm(plan, args.yes):
        print("Cancelled; nothing was changed.", file=sys.stderr)
        return EXIT_ERROR
    result = run_apply({"env": args.env, "config_path": args.config, "overrides": parse_overrides(args.overrides),
                        "adopt": args.adopt, "wait_stable": not args.no_wait, "include_prefect": include_prefect},
                       plan, args.parallelism)
    print(f"Applied {result['applied']} changes; verified {result['verified']} resources: no differences remain.")
    if result["deferred"]:
        print(f"Waiting, not applied: {', '.join(result['deferred'])}")
        for w in result["warnings"]:
            print(f"warning: {w}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
