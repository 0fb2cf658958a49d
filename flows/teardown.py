"""Teardown: retire an environment — plan, typed confirmation, delete (Prefect tasks in
reverse dependency order), verify.

    python -m flows.teardown --env dev --plan                 # show what would go; exit 0 / 2 / 1
    python -m flows.teardown --env dev                        # plan, type the name, delete, verify
    python -m flows.teardown --env dev --delete-data --yes    # also buckets, images, logs, the secret

Deletes exactly what carries this environment's ownership tag, and the Prefect objects
bootstrap registered (pools, blocks, management deployments, the alert automation, the
deployments the flow deployer put on its pools, the lock). Data is kept unless
`--delete-data`; resources adopted as they were (a shared OIDC provider, a pre-existing
secret) are never deleted. A protected environment (`protected = true` in infra.toml,
the default for one named production) refuses `--yes`: its name must be typed at a
terminal. Killed at any point, the same command finishes the job. Exit codes: 0 done
(or nothing to delete), 2 `--plan` with something to delete, 1 error, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any, Iterator

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.states import Cancelled, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from infra_tasks import engine, lock, teardown
from infra_tasks.aws import InfraError
from infra_tasks.config import InfraConfig
from infra_tasks.effective import effective_config
from infra_tasks.facts import gather_facts
from infra_tasks.interrupt import Interrupted
from infra_tasks.model import Action, Change, Plan, Resource
from infra_tasks.names import lock_name
from infra_tasks.render import render_text, write_json

from .apply import PlanChanged, finish, in_order, run_with_progress, submit
from .cli import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, add_common_args, parse_and_load, parse_overrides, run_command

NOTHING = "Nothing to delete."


def delete_plan(plan: Plan, parallelism: int = 8) -> list[str]:
    """Every deletion as a task once what must go before it is gone (see `in_order`); the
    lock is not among them (it is held meanwhile). Returns the keys deleted."""
    changes = {c.key: c for c in plan.changes if c.action is Action.DELETE and c.resource.kind != teardown.LOCK_KIND}
    after = teardown.order([c.resource for c in changes.values()])
    futures: dict[str, PrefectFuture[Any]] = {}
    # The one apply task: a DELETE change is deleted (engine.apply_change).
    in_order(sorted(changes), {k: list(after[k]) for k in sorted(changes)}, parallelism,
             lambda k: submit(changes[k], {}, {d: futures[d] for d in after[k]}), futures)
    finish(futures, {}, what="teardown", unsubmitted=[k for k in changes if k not in futures])
    return list(futures)


def delete_lock(cfg: InfraConfig, env: str) -> bool:
    """The environment's lock and its holder record, after the hold ended; whether the
    lock was there."""
    name = lock_name(cfg.prefix, env)
    found = False
    for res in (Resource("prefect.variable", lock.holder_variable(name), {}),
                Resource(teardown.LOCK_KIND, name, {})):
        observed = engine.read_one(res)
        if observed is not None:
            engine.delete_change(Change(res, Action.DELETE, "deleted", observed=observed))
            found = found or res.kind == teardown.LOCK_KIND
    return found


@flow(name="infra-teardown", task_runner=ThreadPoolTaskRunner(max_workers=8), validate_parameters=True)
def teardown_infra(env: str, config_path: str | None = None, overrides: dict[str, Any] | None = None,
                   delete_data: bool = False, parallelism: int = 8, expected_digest: str | None = None,
                   include_prefect: bool = True, unmanaged_only: bool = False) -> dict[str, Any] | State:
    """Under the environment's lock: a fresh teardown plan, checked against the one
    confirmed, deletions as tasks, then the lock itself, then a verify that nothing this
    teardown deletes is left. `unmanaged_only`: the drift check's prune (what carries our
    tag but is no longer configured; the lock stays). An expected failure ends Failed with
    its message, a stop Cancelled with what was done."""
    try:
        return _teardown(env, config_path, overrides, delete_data, parallelism, expected_digest, include_prefect,
                         unmanaged_only)
    except Interrupted as exc:
        return Cancelled(message=exc.report())
    except InfraError as exc:
        return Failed(message=str(exc))


def _teardown(env: str, config_path: str | None, overrides: dict[str, Any] | None, delete_data: bool,
              parallelism: int, expected_digest: str | None, include_prefect: bool,
              unmanaged_only: bool) -> dict[str, Any]:
    log = get_run_logger()
    cfg, _ = effective_config(config_path, env, overrides, use_prefect=include_prefect)
    facts = gather_facts(cfg, env)

    def fresh() -> Plan:
        return teardown.plan(cfg, env, facts, delete_data=delete_data, include_prefect=include_prefect,
                             parallelism=parallelism, unmanaged_only=unmanaged_only)

    with _held(cfg, env, include_prefect, "prune" if unmanaged_only else "teardown"):
        plan = fresh()
        if expected_digest and plan.digest() != expected_digest:
            raise PlanChanged("what this teardown would delete changed between the plan you confirmed and now; "
                              "nothing was deleted. Run again to see the new plan.")
        problems = [why for c in plan.changes if (why := engine.blocking(c))]
        if problems:
            raise InfraError("nothing was deleted, because:\n  " + "\n  ".join(problems))
        log.info("deleting %d resources of %s (account %s)", len(plan.pending), env, facts.account_id)
        deleted = delete_plan(plan, parallelism)
    if include_prefect and not unmanaged_only and delete_lock(cfg, env):
        deleted.append(f"{teardown.LOCK_KIND}/{lock_name(cfg.prefix, env)}")
    left = [c.key for c in fresh().pending]
    if left:
        raise InfraError("verify: after the teardown these are still there: " + ", ".join(left)
                         + "\n  Run the same command again; if they stay, see the errors above.")
    return {"environment": env, "deleted": deleted, "kept": teardown.summary(plan)["kept"]}


@contextlib.contextmanager
def _held(cfg: InfraConfig, env: str, include_prefect: bool, what: str) -> Iterator[None]:
    if not include_prefect:
        yield
        return
    with lock.held(cfg, env, command=f"{what} of {env}"):
        yield


def run_teardown(cfg_args: dict[str, Any], plan: Plan, parallelism: int) -> dict[str, Any]:
    return run_with_progress(teardown_infra, len(plan.pending), parallelism, "deleting",
                             expected_digest=plan.digest(), **cfg_args)


def confirm(cfg: InfraConfig, plan: Plan, assume_yes: bool) -> bool:
    """Unprotected: --yes, or the environment's name typed. Protected: only typed."""
    env = plan.environment
    if cfg.is_protected(env):
        why = (f"environment {env!r} is protected (environments.{env}.protected in infra.toml; on by default for "
               f"production)")
        if assume_yes:
            raise InfraError(f"{why}: --yes is refused. Run the teardown at a terminal and type the environment's "
                             f"name. Nothing was deleted.")
        if not sys.stdin.isatty():
            raise InfraError(f"{why}: its name must be typed at a terminal, and stdin is not one. Nothing was deleted.")
    elif assume_yes:
        return True
    elif not sys.stdin.isatty():
        raise InfraError("refusing to delete without confirmation: stdin is not a terminal; pass --yes. "
                         "Nothing was deleted.")
    answer = input(f"Delete {len(plan.pending)} resources of {env} (account {plan.account_id})? "
                   f"Type the environment's name to confirm: ")
    return answer.strip() == env


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.teardown", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--plan", action="store_true",
                   help="only show what would be deleted and kept; exit 0 when nothing would be deleted, 2 when "
                        "something would, 1 on error")
    p.add_argument("--delete-data", action="store_true",
                   help="also delete the data: flow buckets (every object version), ECR repositories with their "
                        "images, log groups, the Prefect credentials secret (7-day recovery window) and the "
                        "UI-approved settings")
    p.add_argument("--yes", action="store_true",
                   help="delete without typing the environment's name (refused for a protected environment)")
    p.add_argument("--plan-out", metavar="FILE", help="also write the plan as JSON to FILE")
    p.add_argument("--no-prefect", action="store_true",
                   help="delete only AWS resources: leave work pools, blocks, deployments and the lock")
    return p


def main(argv: list[str] | None = None) -> int:
    started = parse_and_load(build_parser(), argv)
    if isinstance(started, int):
        return started
    args, cfg = started
    return run_command(args, cfg, lambda: plan_confirm_delete(args, include_prefect=not args.no_prefect,
                                                              unmanaged_only=False),
                       stopped="stopped: interrupted (Ctrl-C). What was deleted stays deleted; run the same command "
                               "again to finish.")


def plan_confirm_delete(args: argparse.Namespace, include_prefect: bool, unmanaged_only: bool) -> int:
    """Plan, show, confirm (with the environment's protection) and delete; shared by the
    teardown and the drift check's `--prune`. `args`: env, config, overrides, delete_data,
    yes, plan, plan_out, parallelism."""
    overrides = parse_overrides(args.overrides)
    cfg, _ = effective_config(args.config, args.env, overrides, include_prefect)
    facts = gather_facts(cfg, args.env)
    plan = teardown.plan(cfg, args.env, facts, delete_data=args.delete_data, include_prefect=include_prefect,
                         parallelism=args.parallelism, unmanaged_only=unmanaged_only)
    print(render(plan))
    if args.plan_out:
        write_json(plan, args.plan_out)
    if args.plan:
        return EXIT_OK if plan.empty else EXIT_CHANGES
    if plan.empty:
        return EXIT_OK
    problems = [why for c in plan.changes if (why := engine.blocking(c))]
    if problems:
        raise InfraError("nothing was deleted, because:\n  " + "\n  ".join(problems))
    if not confirm(cfg, plan, args.yes):
        print("Cancelled; nothing was deleted.", file=sys.stderr)
        return EXIT_ERROR
    result = run_teardown({"env": args.env, "config_path": args.config, "overrides": overrides,
                           "delete_data": args.delete_data, "include_prefect": include_prefect,
                           "unmanaged_only": unmanaged_only}, plan, args.parallelism)
    print(f"Deleted {len(result['deleted'])} resources; verified: nothing this "
          f"{'prune' if unmanaged_only else 'teardown'} deletes is left.")
    if result["kept"]:
        print(f"Kept {len(result['kept'])}: " + ", ".join(result["kept"]))
    return EXIT_OK


def render(plan: Plan) -> str:
    """What is deleted, in order, then what is kept with the reason."""
    c = plan.counts()
    head = (f"Teardown of {plan.environment} (account {plan.account_id}, {plan.region}): {c['delete']} to delete, "
            f"{c['keep']} kept")
    text = render_text(Plan(plan.environment, plan.account_id, plan.region, plan.pending, plan.warnings, plan.notes),
                       empty=NOTHING)
    lines = [head, *text.split("\n")[1:]]
    kept = [c for c in plan.changes if c.action is Action.KEEP]
    if kept:
        width = max(len(c.key) for c in kept)
        lines += ["", "kept:"] + [f"  {c.key:<{width}}  {c.reason}" for c in kept]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
