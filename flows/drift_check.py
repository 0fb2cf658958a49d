"""Drift check: compare AWS and Prefect with the configuration, through the same plan
the bootstrap uses ("drift" = "the plan is not empty").

    python -m flows.drift_check --env production [--sandbox | --endpoint-url URL] [--remediate]

Every desired resource is classified IN_SYNC, MODIFIED (each property's path, expected
and actual), DELETED, or NOT_CHECKED (with why — never reported in sync unread); every
resource carrying our ownership tag that is no longer desired is UNMANAGED. The flow
publishes a table artifact (`drift-{env}`) and a markdown summary
(`drift-{env}-summary`) and ends Failed when anything drifted, so automations can
notify. With `remediate`, MODIFIED and DELETED resources are repaired through the
normal apply path, under the environment's lock. Exit codes: 0 in sync, 2 drift, 1 error, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import enum
import sys
from dataclasses import dataclass, field
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, Failed, State

from infra_tasks import discovery, engine, interrupt
from infra_tasks.aws import InfraError
from infra_tasks.config import ConfigError
from infra_tasks.desired import owner_value
from infra_tasks.effective import effective_config
from infra_tasks.facts import gather_facts
from infra_tasks.interrupt import Interrupted
from infra_tasks.management import INFRA_PRUNE, INFRA_UPDATE, deployment_name
from infra_tasks.model import Action, Plan

from .cli import (EXIT_CHANGES, EXIT_INTERRUPTED, EXIT_OK, add_common_args, aws_target, fail, parse_and_load,
                  parse_overrides, prefect_target)


class Status(str, enum.Enum):
    IN_SYNC = "IN_SYNC"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    UNMANAGED = "UNMANAGED"
    NOT_CHECKED = "NOT_CHECKED"


@dataclass
class Finding:
    resource: str
    status: Status
    detail: str = ""
    properties: list[tuple[str, str, str]] = field(default_factory=list)  # path, expected, actual


@dataclass
class Report:
    environment: str
    findings: list[Finding]
    notes: list[str] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for f in self.findings if f.status is status)

    @property
    def drifted(self) -> list[Finding]:
        return [f for f in self.findings if f.status is not Status.IN_SYNC]

    @property
    def unmanaged(self) -> list[Finding]:
        return [f for f in self.findings if f.status is Status.UNMANAGED]

    def rows(self) -> list[dict[str, str]]:
        rows = []
        for f in self.findings:
            if f.properties:
                for path, expected, actual in f.properties:
                    rows.append({"resource": f.resource, "status": f.status.value, "property": path,
                                 "expected": expected, "actual": actual, "detail": f.detail})
            else:
                rows.append({"resource": f.resource, "status": f.status.value, "property": "", "expected": "",
                             "actual": "", "detail": f.detail})
        return rows

    def summary(self) -> str:
        counts = ", ".join(f"{self.count(s)} {s.value}" for s in Status)
        return f"Drift check of {self.environment}: {counts}"

    def markdown(self) -> str:
        lines = [f"# {self.summary()}", ""]
        lines += [f"> {n}" for n in self.notes]
        if not self.drifted:
            lines.append("Everything matches the configuration.")
        else:
            lines += ["| resource | status | property | expected | actual | detail |", "|---|---|---|---|---|---|"]
            for r in self.rows():
                if r["status"] != Status.IN_SYNC.value:
                    lines.append("| " + " | ".join(_cell(r[k]) for k in
                                                   ("resource", "status", "property", "expected", "actual",
                                                    "detail")) + " |")
        return "\n".join(lines)

    def text(self) -> str:
        lines = [self.summary()] + [f"note: {n}" for n in self.notes]
        for f in self.drifted:
            lines.append(f"{f.status.value:<12} {f.resource}  {f.detail}")
            for path, expected, actual in f.properties:
                lines.append(f"{'':<12}   {path}: expected {expected}, actual {actual}")
        if not self.drifted:
            lines.append("In sync: everything matches the configuration.")
        return "\n".join(lines)


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")[:300]


def classify(plan: Plan, owned: list[str], unlisted: dict[str, str], prefix: str) -> Report:
    findings = []
    for c in plan.changes:
        if c.action is Action.NOOP:
            findings.append(Finding(c.key, Status.IN_SYNC))
        elif c.action is Action.CREATE:
            findings.append(Finding(c.key, Status.DELETED, "does not exist"))
        elif c.action is Action.NOT_CHECKED:
            findings.append(Finding(c.key, Status.NOT_CHECKED, c.reason))
        else:
            # Diff renders (path, current, desired): report expected = desired, actual = current.
            props = [(p, des, cur) for p, cur, des in (d.render() for d in c.diffs)]
            findings.append(Finding(c.key, Status.MODIFIED, c.reason, props))
    desired = {c.key for c in plan.changes}
    env = plan.environment
    prune = (f"carries our ownership tag but is not in the configuration; bootstrap never deletes: delete it from "
             f"the UI with the deployment {deployment_name(INFRA_PRUNE, prefix, env)} (after approval; never data) "
             f"or with python -m flows.drift_check --env {env} --prune")
    for key in sorted(set(owned) - desired):
        findings.append(Finding(key, Status.UNMANAGED, prune))
    for kind, why in sorted(unlisted.items()):
        findings.append(Finding(f"{kind}/*", Status.NOT_CHECKED, f"could not list for unmanaged resources: {why}"))
    return Report(plan.environment, findings, plan.notes)


def check(cfg: Any, env: str, facts: Any, notes: list[str], parallelism: int = 8) -> Report:
    plan = engine.plan(cfg, env, facts, include_prefect=True, notes=notes, tolerant=True,
                       parallelism=parallelism)
    owned, unlisted = discovery.owned(cfg, env, owner_value(cfg))
    return classify(plan, owned, unlisted, cfg.prefix)


def publish(report: Report, suffix: str = "") -> None:
    key = f"drift-{report.environment}{suffix}"
    create_table_artifact(key=key, table=report.rows(), description=report.summary())
    create_markdown_artifact(key=f"{key}-summary", markdown=report.markdown(), description=report.summary())


def in_deployment() -> bool:
    from prefect.runtime import deployment

    return bool(deployment.id)


def request_repair(cfg: Any, env: str) -> str:
    """From the scheduled deployment (read-only role): start an `infra-update` run with no
    changed values. It plans the repair, waits for a person's approval, then applies it
    under the lock with the write role and verifies."""
    from prefect.deployments import run_deployment

    name = deployment_name(INFRA_UPDATE, cfg.prefix, env)
    run = run_deployment(name, parameters={"request": {"environment": env}}, timeout=0,
                         tags=["drift-repair"])
    return f"repair requested: {name} run {run.name!r} shows the plan and waits for approval"


def remediate_drift(cfg: Any, env: str, facts: Any, notes: list[str], parallelism: int) -> dict[str, Any]:
    from flows.apply import apply_locked

    return apply_locked(cfg, env, facts, parallelism=parallelism, notes=notes, command=f"drift remediation of {env}")


@flow(name="drift-check", validate_parameters=True)
def drift_check(env: str, remediate: bool = False, config_path: str | None = None,
                parallelism: int = 8, overrides: dict[str, Any] | None = None) -> State:
    """Compare AWS and Prefect with infra.toml (plus UI-approved changes).

    env: the environment of infra.toml to check.
    remediate: repair MODIFIED and DELETED resources (never deletes anything). In a
        deployment run this starts an infra-update run that waits for approval (the drift
        check itself runs with the read-only role); from the command line it applies with
        the caller's credentials.
    """
    log = get_run_logger()
    cfg, notes = effective_config(config_path, env, overrides)
    facts = gather_facts(cfg, env)
    report = check(cfg, env, facts, notes, parallelism)
    publish(report)
    log.info("%s", report.summary())
    fixable = [f for f in report.findings if f.status in (Status.MODIFIED, Status.DELETED)]
    if remediate and fixable and in_deployment():
        message = request_repair(cfg, env)
        log.info("%s", message)
        return Failed(message=f"drift detected: {report.summary()}; {message}", data=report)
    if remediate and fixable:
        log.info("remediating %d resources", len(fixable))
        remediate_drift(cfg, env, facts, notes, parallelism)
        report = check(cfg, env, facts, notes, parallelism)
        publish(report)
        log.info("after remediation: %s", report.summary())
    if report.drifted:
        return Failed(message=f"drift detected: {report.summary()}", data=report)
    return Completed(message=report.summary(), data=report)


def report_of(state: State) -> Report | None:
    """The report a finished drift-check run carries (None if it failed before one)."""
    try:
        value = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001
        return None
    return value if isinstance(value, Report) else None


def prune(args: argparse.Namespace) -> int:
    """Delete what the check found UNMANAGED, as a teardown of only those; then the exit
    code of a check run afterwards (0: nothing else drifted)."""
    from flows.teardown import plan_confirm_delete

    args.plan = False
    args.plan_out = None
    code = plan_confirm_delete(args, include_prefect=True, unmanaged_only=True)
    if code != EXIT_OK:
        return code
    state = drift_check(env=args.env, config_path=args.config, parallelism=args.parallelism,
                        overrides=parse_overrides(args.overrides), return_state=True)
    report = report_of(state)
    if report is None:
        return fail("the drift check after pruning produced no report")
    print(report.text())
    return EXIT_CHANGES if report.drifted else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.drift_check", description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--remediate", action="store_true", help="repair MODIFIED and DELETED resources")
    p.add_argument("--prune", action="store_true",
                   help="after the check, delete the UNMANAGED resources (ours, no longer configured): plan, "
                        "confirmation and protection as python -m flows.teardown; data kept unless --delete-data")
    p.add_argument("--delete-data", action="store_true",
                   help="with --prune: also delete UNMANAGED buckets (every version), log groups and the like")
    p.add_argument("--yes", action="store_true",
                   help="with --prune: delete without typing the environment's name (refused when protected)")
    return p


def main(argv: list[str] | None = None) -> int:
    started = parse_and_load(build_parser(), argv)
    if isinstance(started, int):
        return started
    args, cfg = started
    if (args.delete_data or args.yes) and not args.prune:
        return fail("--delete-data and --yes go with --prune")
    try:
        with aws_target(args, cfg), prefect_target():
            state = drift_check(env=args.env, remediate=args.remediate, config_path=args.config,
                                parallelism=args.parallelism, overrides=parse_overrides(args.overrides),
                                return_state=True)
            report = report_of(state)
            if args.prune and report is not None and report.unmanaged:
                print(report.text())
                print("\nPruning the UNMANAGED resources:")
                return prune(args)
    except Interrupted as exc:
        print(exc.report(), file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("stopped: interrupted (Ctrl-C). Re-run the same command to check again.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (InfraError, ConfigError) as exc:
        return fail(str(exc))
    finally:
        interrupt.clear()
    if report is None:
        try:
            state.result()
        except Exception as exc:  # noqa: BLE001 - the flow's error, shown plainly
            return fail(str(exc))
        return fail("the drift check produced no report")
    print(report.text())
    return EXIT_CHANGES if report.drifted else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
