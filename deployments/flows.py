"""Deploy this repository's flows to the work pools the agents poll.

    python -m deployments.flows --branch main-v2 --image-tag prefect-agent-1a2b3c4
    python -m deployments.flows --branch staging-v2 --dry-run

The branch decides the deployment type (dev-v2 -> dev, staging-v2 -> staging,
main-v2 -> main). Every flow of the manifest (deployments/flows.toml) becomes one
Prefect deployment "<name>-<type>" in work pool "{prefix}-{type}", running the image
"{registry}/{prefix}:{tag}" that CI pushed for the commit. Schedules are attached only
for main, as in the stack this project replaces.

Everything is read and checked before anything is created: manifest keys and values
(cron, Fargate cpu/memory), entrypoints (file, function, @flow), parameters against the
flow's signature, then the work pools. A problem anywhere means nothing is deployed.
Exit codes: 0 ok (or nothing to do), 1 error.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from infra_tasks.config import IMAGE_TAG_RE, ConfigError, InfraConfig, fargate_pair_error, load_config
from infra_tasks.names import Account

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.client.orchestration import SyncPrefectClient

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = ROOT / "deployments" / "flows.toml"

# Where the agent image holds this repository (docker/agent/Dockerfile WORKDIR): each
# flow run changes into it, then imports the entrypoint relative to it.
IMAGE_WORKDIR = "/opt/prefect/app"
# Top-level directories with flow code that the image contains (Dockerfile COPY).
FLOW_CODE_DIRS = ("flows",)

BRANCH_TYPES: dict[str, str] = {"dev-v2": "dev", "staging-v2": "staging", "main-v2": "main"}
# Only main runs on a schedule; staging and dev runs are started by hand or by API.
SCHEDULED_TYPES = frozenset({"main"})
DEPLOYMENT_TYPES = ("dev", "staging", "main")

EXIT_OK, EXIT_ERROR = 0, 1
# Marks the deployments this tool owns, so that deployments others create in the same
# pools (e.g. bootstrap's management flows) are never reported as retired.
MANIFEST_TAG = "flows-manifest"

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DeployError(Exception):
    """Nothing (more) was deployed; the message says why and what to do."""


class ManifestError(DeployError):
    """The manifest or the flows it names are invalid; lists every problem found."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s); nothing was deployed:\n  "
                         + "\n  ".join(problems))


# --- mapping (pure) ---------------------------------------------------------------------

def deployment_type_for_branch(branch: str) -> str:
    """The deployment type a branch deploys to; unknown branches deploy nothing."""
    try:
        return BRANCH_TYPES[branch]
    except KeyError:
        known = ", ".join(f"{b} -> {t}" for b, t in BRANCH_TYPES.items())
        raise DeployError(f"branch {branch!r} does not deploy flows (known branches: {known}); "
                          f"nothing was deployed") from None


def environment_for_type(cfg: InfraConfig, t: str, branch: str | None = None) -> str:
    """The infra.toml environment (account) holding deployment type `t`.

    With `branch`, also require that infra.toml lets that branch deploy there
    (environments.<env>.ci_branches), so the pipeline and the config cannot disagree.
    """
    for name, env in cfg.environments.items():
        if t in env.deployment_types:
            if branch is not None and branch not in env.ci_branches:
                raise DeployError(
                    f"branch {branch!r} deploys type {t!r} in environment {name!r}, but infra.toml "
                    f"environments.{name}.ci_branches = {env.ci_branches} does not list it")
            return name
    raise DeployError(f"deployment type {t!r} is in no environment of infra.toml "
                      f"(environments.*.deployment_types)")


def pool_name_error(pool: str) -> str | None:
    # The Prefect server (3.9) answers 403 to creating or updating a work pool whose name
    # starts with "prefect", in any letter case: those names are reserved for Prefect.
    if pool.lower().startswith("prefect"):
        return (f"work pool name {pool!r} is unusable: Prefect reserves work pool names starting with "
                f"'prefect' (its API refuses to create them); choose an infra.toml prefix that does not "
                f"start with 'prefect'")
    return None


def image_reference(cfg: InfraConfig, acct: Account, tag: str) -> str:
    """The agent image of this account: flows run in the image the agent runs."""
    repo = cfg.agent.image_repository or f"{acct.registry}/{acct.ecr_repository}"
    return f"{repo}:{tag}"


# --- the manifest (pure validation) ---------------------------------------------------

class FlowSpec(BaseModel):
    """One `[[flows]]` table of the manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    entrypoint: str
    description: str | None = None
    parameters: dict[str, Any] = {}
    cpu: int | None = None
    memory: int | None = None
    tags: list[str] = []
    cron: str | None = None
    timezone: str = "UTC"
    deployment_types: list[Literal["dev", "staging", "main"]] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must be 1-63 of letters, digits, '-', '_', '.' and start with a letter or digit")
        return v

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint(cls, v: str) -> str:
        err = entrypoint_error(v)
        if err:
            raise ValueError(err)
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        if any(not t.strip() for t in v):
            raise ValueError("tags must be non-empty strings")
        if len(set(v)) != len(v):
            raise ValueError("tags must be unique")
        return v

    @field_validator("deployment_types")
    @classmethod
    def _types(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError("must list each of dev, staging, main at most once, and at least one")
        return v

    @property
    def path(self) -> str:
        return self.entrypoint.rsplit(":", 1)[0]

    @property
    def function(self) -> str:
        return self.entrypoint.rsplit(":", 1)[1]

    def applies_to(self, t: str) -> bool:
        return self.deployment_types is None or t in self.deployment_types


def entrypoint_error(entrypoint: str) -> str | None:
    if entrypoint.count(":") != 1:
        return "must be 'path/to/file.py:function', e.g. 'flows/example.py:hello'"
    path, func = entrypoint.split(":")
    p = PurePosixPath(path)
    if p.is_absolute() or "\\" in path or ".." in p.parts or p.suffix != ".py" or not p.parts:
        return f"path {path!r} must be a relative path to a .py file, inside the repository"
    if p.parts[0] not in FLOW_CODE_DIRS or len(p.parts) < 2:
        return (f"path {path!r} must be under {' or '.join(d + '/' for d in FLOW_CODE_DIRS)}: only those "
                f"directories are copied into the agent image the flows run in")
    if not IDENT_RE.match(func):
        return f"function {func!r} is not a Python identifier"
    return None


def cron_error(cron: str, timezone: str) -> str | None:
    """Validated by Prefect's own schedule model, so the server cannot reject it later."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as exc:
        return "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
    return None


def _spec_problems(spec: FlowSpec, label: str) -> list[str]:
    """Rules across keys, once each key is well-formed."""
    problems = []
    if (spec.cpu is None) != (spec.memory is None):
        problems.append(f"{label}: cpu = {spec.cpu!r}, memory = {spec.memory!r}: give both or neither "
                        f"(neither = the work pool's default from infra.toml [flows])")
    elif spec.cpu is not None and spec.memory is not None:
        err = fargate_pair_error(spec.cpu, spec.memory)
        if err:
            problems.append(f"{label}: cpu = {spec.cpu}, memory = {spec.memory}: {err}")
    if spec.cron is not None:
        err = cron_error(spec.cron, spec.timezone)
        if err:
            problems.append(f"{label}: cron = {spec.cron!r} (timezone {spec.timezone!r}): {err}")
    elif "timezone" in spec.model_fields_set:
        problems.append(f"{label}: timezone is set but cron is not; remove timezone or add cron")
    return problems


def parse_manifest(raw: dict[str, Any], source: str = "flows.toml") -> list[FlowSpec]:
    """Validate the whole manifest; raise ManifestError listing every problem."""
    problems: list[str] = []
    unknown = sorted(set(raw) - {"flows"})
    if unknown:
        problems.append(f"unknown top-level key(s) {unknown}; flows are declared as [[flows]] tables")
    entries = raw.get("flows", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ManifestError(source, problems + ["'flows' must be an array of tables ([[flows]])"])
    specs: list[FlowSpec] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        label = f"flows[{i}]" + (f" ({entry['name']})" if isinstance(entry.get("name"), str) else "")
        try:
            spec = FlowSpec.model_validate(entry)
        except ValidationError as exc:
            problems.extend(_format_error(e, entry, label) for e in exc.errors())
            continue
        problems.extend(_spec_problems(spec, label))
        if spec.name in seen:
            problems.append(f"{label}: name {spec.name!r} is already used by flows[{seen[spec.name]}]")
        seen.setdefault(spec.name, i)
        specs.append(spec)
    if problems:
        raise ManifestError(source, problems)
    return specs


def _format_error(err: dict[str, Any], entry: dict[str, Any], label: str) -> str:
    loc = err.get("loc", ())
    key = ".".join(str(p) for p in loc) or "(table)"
    if err.get("type") == "extra_forbidden":
        return (f"{label}: {key}: unknown key; allowed: "
                f"{', '.join(FlowSpec.model_fields)}")
    if err.get("type") == "missing":
        return f"{label}: {key}: required key is missing"
    value = entry.get(loc[0]) if loc and isinstance(loc[0], str) else None
    shown = "" if value is None else f" = {value!r}"
    return f"{label}: {key}{shown}: {err.get('msg', 'invalid').removeprefix('Value error, ')}"


def load_manifest(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise DeployError(f"{path}: manifest not found (pass --manifest PATH)") from None
    except tomllib.TOMLDecodeError as exc:
        raise DeployError(f"{path}: not valid TOML: {exc}") from None


# --- flows (reads the code) -------------------------------------------------------------

@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    # Flow.validate_parameters logs each failure at ERROR before raising; we report it once.
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_flows(specs: list[FlowSpec], root: Path = ROOT) -> dict[str, "Flow[..., Any]"]:
    """Import every entrypoint and check its parameters; raise listing every problem."""
    from prefect import Flow
    from prefect.exceptions import ParameterTypeError, ScriptError, SignatureMismatchError
    from prefect.utilities.importtools import import_object

    flows: dict[str, Flow[..., Any]] = {}
    problems: list[str] = []
    for i, spec in enumerate(specs):
        label = f"flows[{i}] ({spec.name}): entrypoint = {spec.entrypoint!r}"
        file = root / spec.path
        if not file.is_file():
            problems.append(f"{label}: file {spec.path} does not exist (paths are relative to the repository root)")
            continue
        try:
            obj = import_object(f"{file}:{spec.function}")
        except ScriptError as exc:
            problems.append(f"{label}: importing {spec.path} failed: "
                            f"{type(exc.user_exc).__name__}: {exc.user_exc}")
            continue
        except AttributeError:
            problems.append(f"{label}: {spec.path} has no function {spec.function!r}")
            continue
        if not isinstance(obj, Flow):
            problems.append(f"{label}: {spec.function!r} is not a Prefect flow (decorate it with @flow)")
            continue
        try:
            with _quiet("prefect.flows"):
                obj.validate_parameters(dict(spec.parameters))
        except (ParameterTypeError, SignatureMismatchError) as exc:
            detail = " ".join(str(exc).split())
            problems.append(f"flows[{i}] ({spec.name}): parameters = {spec.parameters!r}: {detail}")
            continue
        flows[spec.name] = obj
    if problems:
        raise ManifestError("flows", problems)
    return flows


# --- what to deploy (pure) ----------------------------------------------------------------

@dataclass(frozen=True)
class PlannedDeployment:
    """One deployment to create or update, as data."""

    spec_name: str
    name: str
    flow_name: str
    entrypoint: str
    work_pool: str
    image: str
    job_variables: dict[str, Any]
    parameters: dict[str, Any]
    tags: tuple[str, ...]
    description: str | None
    version: str
    cron: str | None = None
    timezone: str | None = None
    path: str = IMAGE_WORKDIR
    pull_steps: tuple[dict[str, Any], ...] = field(default_factory=lambda: (
        {"prefect.deployments.steps.set_working_directory": {"directory": IMAGE_WORKDIR}},))

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


def plan_deployments(specs: list[FlowSpec], flow_names: dict[str, str], cfg: InfraConfig, t: str,
                     image_tag: str, flow_descriptions: dict[str, str | None] | None = None
                     ) -> list[PlannedDeployment]:
    """The deployments of type `t`: pool, image, job variables and schedule per flow."""
    if t not in DEPLOYMENT_TYPES:
        raise DeployError(f"deployment type {t!r} is not one of {', '.join(DEPLOYMENT_TYPES)}")
    if not IMAGE_TAG_RE.match(image_tag):
        raise DeployError(f"image tag {image_tag!r} is not a valid tag (1-128 of [A-Za-z0-9_.-], "
                          f"not starting with '.' or '-')")
    env_name = environment_for_type(cfg, t)
    acct = Account(cfg, env_name, cfg.env(env_name).account_id, cfg.region)
    pool = acct.deployment(t).pool
    err = pool_name_error(pool)
    if err:
        raise DeployError(err)
    image = image_reference(cfg, acct, image_tag)
    descriptions = flow_descriptions or {}
    out = []
    for spec in specs:
        if not spec.applies_to(t):
            continue
        job_variables: dict[str, Any] = {"image": image}
        if spec.cpu is not None and spec.memory is not None:
            job_variables.update(cpu=spec.cpu, memory=spec.memory)
        scheduled = t in SCHEDULED_TYPES and spec.cron is not None
        out.append(PlannedDeployment(
            spec_name=spec.name,
            name=f"{spec.name}-{t}",
            flow_name=flow_names[spec.name],
            entrypoint=spec.entrypoint,
            work_pool=pool,
            image=image,
            job_variables=job_variables,
            parameters=dict(spec.parameters),
            tags=tuple(dict.fromkeys([*spec.tags, f"deployment-type:{t}", MANIFEST_TAG])),
            description=spec.description or descriptions.get(spec.name),
            version=image_tag,
            cron=spec.cron if scheduled else None,
            timezone=spec.timezone if scheduled else None,
        ))
    return out


def render(plans: list[PlannedDeployment], t: str, dry_run: bool) -> str:
    head = "Would deploy" if dry_run else "Deploying"
    if not plans:
        return f"No flows of the manifest apply to deployment type {t!r}; nothing to deploy."
    lines = [f"{head} {len(plans)} flow deployment(s) of type {t!r}:"]
    for p in plans:
        size = (f"cpu {p.job_variables['cpu']} / memory {p.job_variables['memory']}"
                if "cpu" in p.job_variables else "cpu/memory: work pool default")
        schedule = (f"cron {p.cron!r} ({p.timezone})" if p.cron else
                    "no schedule" + ("" if t in SCHEDULED_TYPES else " (schedules apply only to main)"))
        lines += [
            f"  {p.full_name}",
            f"      entrypoint  {p.entrypoint}",
            f"      work pool   {p.work_pool}",
            f"      image       {p.image}",
            f"      resources   {size}",
            f"      schedule    {schedule}",
            f"      parameters  {p.parameters}",
            f"      tags        {', '.join(p.tags)}",
        ]
    return "\n".join(lines)


# --- the Prefect API (reads, then writes) -----------------------------------------------

def api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def preflight(client: "SyncPrefectClient", plans: list[PlannedDeployment]) -> None:
    """Every target work pool exists and is an ECS pool; otherwise deploy nothing."""
    from prefect.exceptions import ObjectNotFound

    problems = []
    for pool in sorted({p.work_pool for p in plans}):
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


def apply(client: "SyncPrefectClient", plans: list[PlannedDeployment],
          flows: dict[str, "Flow[..., Any]"]) -> list[str]:
    """Create or update each deployment (the API upserts by flow and name, replacing
    its schedules with ours). Returns the full names deployed."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.utilities.callables import parameter_schema

    done: list[str] = []
    for p in plans:
        flow = flows[p.spec_name]
        schedules = ([DeploymentScheduleCreate(schedule=CronSchedule(cron=p.cron, timezone=p.timezone),
                                               active=True)] if p.cron else [])
        try:
            flow_id = client.create_flow_from_name(p.flow_name)
            client.create_deployment(
                flow_id=flow_id,
                name=p.name,
                version=p.version,
                schedules=schedules,
                parameters=p.parameters,
                description=p.description,
                work_pool_name=p.work_pool,
                tags=list(p.tags),
                path=p.path,
                entrypoint=p.entrypoint,
                pull_steps=[dict(s) for s in p.pull_steps],
                parameter_openapi_schema=parameter_schema(flow).model_dump(exclude_unset=True),
                enforce_parameter_schema=True,
                job_variables=dict(p.job_variables),
            )
        except Exception as exc:  # noqa: BLE001 - reported with what did and did not happen
            applied = ", ".join(done) or "none"
            raise DeployError(f"deployment {p.full_name} failed: {exc}\n  already deployed: {applied}\n  "
                              f"Re-run after fixing the cause: deploying is idempotent.") from None
        done.append(p.full_name)
    return done


def unmanaged(client: "SyncPrefectClient", plans: list[PlannedDeployment]) -> list[str]:
    """Deployments this tool made earlier in the target pools that the manifest no
    longer declares (left alone: retiring a deployment is a human decision)."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterTags,
        FlowFilter,
        FlowFilterId,
        WorkPoolFilter,
        WorkPoolFilterName,
    )

    pools = sorted({p.work_pool for p in plans})
    if not pools:
        return []
    wanted = {p.full_name for p in plans}
    found = client.read_deployments(
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=pools)),
        deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[MANIFEST_TAG])))
    ids = list({d.flow_id for d in found})
    flow_names = ({f.id: f.name for f in client.read_flows(flow_filter=FlowFilter(id=FlowFilterId(any_=ids)))}
                  if ids else {})
    return sorted(name for d in found
                  if (name := f"{flow_names.get(d.flow_id, d.flow_id)}/{d.name}") not in wanted)


# --- command line -------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deployments.flows", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--branch", required=True,
                   help=f"git branch being deployed: {', '.join(f'{b} -> {t}' for b, t in BRANCH_TYPES.items())}")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and print what would be deployed; create nothing (no Prefect API needed)")
    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="flow manifest (default: %(default)s)")
    p.add_argument("--image-tag", default=None,
                   help="tag of the image in the account's ECR repository (default: infra.toml agent.image_tag); "
                        "CI passes prefect-agent-<sha7>")
    p.add_argument("--config", default=None, help="path of infra.toml (default: the repository's)")
    return p


def run(args: argparse.Namespace) -> int:
    t = deployment_type_for_branch(args.branch)
    cfg = load_config(args.config)
    environment_for_type(cfg, t, branch=args.branch)
    image_tag = args.image_tag or cfg.agent.image_tag
    specs = parse_manifest(load_manifest(args.manifest), source=str(args.manifest))
    # Every flow is checked, also those this type does not deploy: a broken flow fails
    # every branch's pipeline, not only the one that would schedule it.
    flows = load_flows(specs)
    plans = plan_deployments(specs, {k: f.name for k, f in flows.items()}, cfg, t, image_tag,
                             {k: f.description for k, f in flows.items()})
    if not args.dry_run and plans and not api_url():
        raise DeployError("no Prefect API is configured: set PREFECT_API_URL (and PREFECT_API_KEY for Prefect "
                          "Cloud); refusing to deploy into a throw-away ephemeral server. Nothing was deployed.")
    print(render(plans, t, args.dry_run))
    if args.dry_run:
        print("Dry run: nothing was created.")
        return EXIT_OK
    if not plans:
        return EXIT_OK

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        preflight(client, plans)
        done = apply(client, plans, flows)
        stale = unmanaged(client, plans)
    print(f"Deployed {len(done)} flow deployment(s) to {api_url()}: {', '.join(done)}")
    if stale:
        print("Not in the manifest (left alone; remove with `prefect deployment delete NAME` if retired): "
              + ", ".join(stale), file=sys.stderr)
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
