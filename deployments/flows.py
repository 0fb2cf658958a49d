"""Deploy this repository's flows to the work pools the agents poll.

    python -m deployments.flows --branch main-v2 --image-tag prefect-agent-1a2b3c4
    python -m deployments.flows --branch main-v2 --plan
    python -m deployments.flows --branch staging-v2 --dry-run

The branch decides the deployment type (dev-v2 -> dev, staging-v2 -> staging,
main-v2 -> main). Every deployment of the manifest (the `deployments:` of prefect.yaml
at the repository root, in Prefect's format) becomes one Prefect deployment
"<name>-<type>" in work pool "{prefix}-{type}", running the image
"{registry}/{prefix}:{tag}" that CI pushed for the commit. Schedules are attached only
for main, as in the stack this project replaces.

Everything is read and checked before anything is written: manifest keys and values
(cron, Fargate cpu/memory), entrypoints (file, function, @flow), parameters against the
flow's signature, then the work pool. Then each deployment is planned like bootstrap
plans its resources (read, diff, decide: create, update or no-op with the reason), and
only what differs is written; a re-run writes nothing.

Exit codes: 0 ok (deployed, or nothing to do); 1 error (nothing more was deployed);
with --plan, 0 nothing would change and 2 something would (as bootstrap's --plan).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infra_tasks.config import ConfigError, load_config

from . import workspace
from .loader import describe_all, load_flows
from .manifest import (
    DEFAULT_MANIFEST,
    DEPLOYMENT_TYPES,
    FLOW_CODE_DIRS,
    DeployError,
    DeploymentSpec,
    ManifestError,
    load_manifest,
    parse_manifest,
)
from .plan import (
    BRANCH_TYPES,
    IMAGE_WORKDIR,
    MANIFEST_TAG,
    SCHEDULED_TYPES,
    deployment_type_for_branch,
    desired_deployments,
    environment_for_type,
    pool_name_error,
    render_desired,
    resolve_target,
)

__all__ = [
    "BRANCH_TYPES", "DEFAULT_MANIFEST", "DEPLOYMENT_TYPES", "FLOW_CODE_DIRS", "IMAGE_WORKDIR", "MANIFEST_TAG",
    "SCHEDULED_TYPES", "DeployError", "DeploymentSpec", "ManifestError", "deployment_type_for_branch",
    "environment_for_type", "load_flows", "load_manifest", "main", "parse_manifest", "pool_name_error",
]

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deployments.flows", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--branch", required=True,
                   help=f"git branch being deployed: {', '.join(f'{b} -> {t}' for b, t in BRANCH_TYPES.items())}")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="validate and print what would be deployed; no Prefect API needed or contacted")
    mode.add_argument("--plan", action="store_true",
                      help="compare with the Prefect workspace and show the plan; change nothing. "
                           "Exit 0 nothing would change, 2 something would, 1 error")
    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST,
                   help="prefect.yaml with the deployments (default: %(default)s)")
    p.add_argument("--image-tag", default=None,
                   help="tag of the image in the account's ECR repository (default: infra.toml agent.image_tag); "
                        "CI passes prefect-agent-<sha7>")
    p.add_argument("--config", default=None, help="path of infra.toml (default: the repository's)")
    return p


def run(args: argparse.Namespace) -> int:
    t = deployment_type_for_branch(args.branch)
    cfg = load_config(args.config)
    target = resolve_target(cfg, t, args.image_tag or cfg.agent.image_tag, branch=args.branch)
    specs = parse_manifest(load_manifest(args.manifest), source=str(args.manifest))
    # Every flow is checked, also those this type does not deploy: a broken flow fails
    # every branch's pipeline, not only the one that would schedule it.
    flows = describe_all(load_flows(specs))
    resources = desired_deployments(specs, flows, target)
    if args.dry_run:
        print(render_desired(resources, target))
        print("Dry run: nothing was created.")
        return EXIT_OK
    if not workspace.api_url():
        if not resources:
            print(render_desired(resources, target))
            return EXIT_OK
        raise DeployError("no Prefect API is configured: set PREFECT_API_URL (and PREFECT_API_KEY for Prefect "
                          "Cloud); refusing to deploy into a throw-away ephemeral server. Nothing was deployed.")

    from prefect.client.orchestration import get_client

    from infra_tasks.prefect_objects import PREFECT_CALLS

    writes = PREFECT_CALLS.total
    with workspace.answering(f"the deployments of work pool {target.pool}"), get_client(sync_client=True) as client:
        if resources:
            workspace.preflight(client, [target.pool])
            plan = workspace.plan(resources, target)
            print(workspace.render(plan, target))
        else:
            plan = workspace.plan([], target)
            print(render_desired(resources, target))
        stale = workspace.retired(client, target, [r.name for r in resources])
    if stale:
        print("Not in the manifest (left alone; remove with `prefect deployment delete NAME` if retired): "
              + ", ".join(stale), file=sys.stderr)
    if args.plan:
        return EXIT_CHANGES if plan.pending else EXIT_OK
    if plan.pending:
        done = workspace.apply(plan)
        workspace.verify(resources, target)
        print(f"Deployed to {workspace.api_url()}: {workspace.counts_line(done)}; "
              f"{len(plan.changes) - len(done)} unchanged.")
    else:
        print("No changes: every deployment matches the manifest; nothing was written.")
    print(f"Prefect writes: {PREFECT_CALLS.total - writes}", file=sys.stderr)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (DeployError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
