"""Bootstrap: plan, confirm, apply (Prefect tasks in dependency order), verify.

    python -m flows.bootstrap --env production --plan        # show the plan; exit 0 / 2 / 1
    python -m flows.bootstrap --env production               # plan, confirm, apply, verify
    python -m flows.bootstrap --sandbox --env production --yes

The apply runs as the Prefect flow `infra-apply` through the one apply path
(`flows/apply.py`): every resource change is a Prefect task, submitted as soon as its
dependencies are done. Bootstrap never deletes a resource. Exit codes: 0 done (or nothing
to do), 2 `--plan` with changes, 1 error, 130 stopped by Ctrl-C (a re-run continues).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from prefect import flow
from prefect.states import Cancelled, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from infra_tasks import engine, lock
from infra_tasks.aws import InfraError
from infra_tasks.config import InfraConfig
from infra_tasks.effective import effective_config
from infra_tasks.facts import Facts, gather_facts
from infra_tasks.interrupt import Interrupted
from infra_tasks.model import Plan
from infra_tasks.render import render_text, write_json

from .apply import Prepared, apply_locked, check_applicable, prepare, run_with_progress, take_prepared

from .cli import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, add_common_args, fail, parse_and_load, parse_overrides, run_command


@flow(name="infra-apply", task_runner=ThreadPoolTaskRunner(max_workers=8), validate_parameters=True)
def apply_infra(env: str, config_path: str | None = None, overrides: dict[str, Any] | None = None,
                adopt: bool = False, parallelism: int = 8, expected_digest: str | None = None,
                wait_stable: bool = True, include_prefect: bool = True) -> dict[str, Any] | State:
    """Apply the confirmed plan through the one apply path (lock, plan, digest check,
    apply, verify, bounded wait). The plan the CLI showed in this process is reused when
    that is safe (see `apply_locked`); otherwise everything is read again. An expected
    failure ends the run Failed with its message, a requested stop Cancelled with what
    was done: neither is a crash."""
    def load() -> tuple[InfraConfig, Facts, list[str]]:
        cfg, notes = effective_config(config_path, env, overrides, use_prefect=include_prefect)
        return cfg, gather_facts(cfg, env), notes

    try:
        prepared = take_prepared(expected_digest)
        cfg, facts, notes = (prepared.cfg, prepared.facts, prepared.notes) if prepared else load()
        return apply_locked(cfg, env, facts, parallelism=parallelism, adopt=adopt, expected_digest=expected_digest,
                            include_prefect=include_prefect, wait_stable=wait_stable, notes=notes,
                            command=f"bootstrap of {env}", prepared=prepared, reload=load if prepared else None)
    except Interrupted as exc:
        return Cancelled(message=exc.report())
    except InfraError as exc:
        return Failed(message=str(exc))


def run_apply(cfg_args: dict[str, Any], plan: Plan, parallelism: int, live: bool | None = None) -> dict[str, Any]:
    """Run the `infra-apply` flow with a task runner of the given parallelism."""
    return run_with_progress(apply_infra, len(plan.applicable), parallelism, "applying", live,
                             expected_digest=plan.digest(), **cfg_args)


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
    started = parse_and_load(build_parser(), argv)
    if isinstance(started, int):
        return started
    args, cfg = started
    if args.rotate_credentials:
        if not (os.environ.get("PREFECT_API_URL") and os.environ.get("PREFECT_API_KEY")):
            return fail("--rotate-credentials needs PREFECT_API_URL and PREFECT_API_KEY in the environment")
        os.environ["INFRA_ROTATE_CREDENTIALS"] = "1"
    return run_command(args, cfg, lambda: _run(args, cfg),
                       stopped="stopped: interrupted (Ctrl-C). Changes already made stay made; re-run the same "
                               "command to continue (they are not repeated).",
                       cleanup=lambda: os.environ.pop("INFRA_ROTATE_CREDENTIALS", None))


def _run(args: argparse.Namespace, cfg: InfraConfig) -> int:
    include_prefect = not args.no_prefect
    cfg, notes = effective_config(args.config, args.env, parse_overrides(args.overrides), include_prefect)
    facts = gather_facts(cfg, args.env)
    # Read before the plan: the apply reuses this plan only if no other run took the lock since.
    lock_state = lock.state(cfg, args.env) if include_prefect and not args.plan else None
    plan = engine.plan(cfg, args.env, facts, adopt=args.adopt, parallelism=args.parallelism,
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
    digest = prepare(Prepared(plan, cfg, facts, notes, lock_state))
    try:
        if not confirm(plan, args.yes):
            print("Cancelled; nothing was changed.", file=sys.stderr)
            return EXIT_ERROR
        result = run_apply({"env": args.env, "config_path": args.config, "overrides": parse_overrides(args.overrides),
                            "adopt": args.adopt, "wait_stable": not args.no_wait, "include_prefect": include_prefect},
                           plan, args.parallelism)
    finally:
        take_prepared(digest)  # not left behind when the apply never took it
    print(f"Applied {result['applied']} changes; verified {result['verified']} resources: no differences remain.")
    if result["deferred"]:
        print(f"Waiting, not applied: {', '.join(result['deferred'])}")
        for w in result["warnings"]:
            print(f"warning: {w}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
