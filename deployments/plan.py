"""What the manifest means for one branch (pure): the branch's deployment type, its
environment, work pool and image, resolved once into a `Target`; then each manifest
deployment as a desired `prefect.deployment` resource, the shape bootstrap's
DeploymentHandler reads and writes, so the engine plans it like any other resource.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra_tasks.config import IMAGE_TAG_RE, InfraConfig
from infra_tasks.management import IMAGE_WORKDIR
from infra_tasks.model import Resource
from infra_tasks.names import Account
from infra_tasks.prefect_objects import FLOWS_MANIFEST_TAG

from .loader import FlowInfo
from .manifest import DEPLOYMENT_TYPES, DeployError, DeploymentSpec

PULL_STEPS = ({"prefect.deployments.steps.set_working_directory": {"directory": IMAGE_WORKDIR}},)

BRANCH_TYPES: dict[str, str] = {"dev-v2": "dev", "staging-v2": "staging", "main-v2": "main"}
# Only main runs on a schedule; staging and dev runs are started by hand or by API.
SCHEDULED_TYPES = frozenset({"main"})
# Marks the deployments this tool owns, so that deployments others create in the same
# pools (e.g. bootstrap's management flows) are never reported as retired.
MANIFEST_TAG = FLOWS_MANIFEST_TAG  # a teardown deletes the deployments carrying it with their pool
KIND = "prefect.deployment"


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


@dataclass(frozen=True)
class Target:
    """Where deployments of one type go, resolved once from the config."""

    t: str
    env_name: str
    account_id: str
    region: str
    pool: str
    image: str
    image_tag: str

    @property
    def scheduled(self) -> bool:
        return self.t in SCHEDULED_TYPES


def resolve_target(cfg: InfraConfig, t: str, image_tag: str, branch: str | None = None) -> Target:
    if t not in DEPLOYMENT_TYPES:
        raise DeployError(f"deployment type {t!r} is not one of {', '.join(DEPLOYMENT_TYPES)}")
    if not IMAGE_TAG_RE.match(image_tag):
        raise DeployError(f"image tag {image_tag!r} is not a valid tag (1-128 of [A-Za-z0-9_.-], "
                          f"not starting with '.' or '-')")
    env_name = environment_for_type(cfg, t, branch)
    acct = Account(cfg, env_name, cfg.env(env_name).account_id, cfg.region)
    pool = acct.deployment(t).pool
    err = pool_name_error(pool)
    if err:
        raise DeployError(err)
    return Target(t=t, env_name=env_name, account_id=acct.account_id, region=cfg.region, pool=pool,
                  image=image_reference(cfg, acct, image_tag), image_tag=image_tag)


def schedule_key(cron: str, timezone: str) -> str:
    # The form infra_tasks.prefect_objects.schedule_key reads back (not imported: that
    # module loads prefect_aws, which a dry run does not need).
    return f"{cron}|{timezone}"


def desired_deployments(specs: list[DeploymentSpec], flows: dict[str, FlowInfo], target: Target) -> list[Resource]:
    """One `prefect.deployment` resource per manifest deployment of the target's type,
    named "<flow name>/<deployment name>-<type>"."""
    out = []
    for spec in specs:
        if not spec.applies_to(target.t):
            continue
        flow = flows[spec.name]
        jv = spec.work_pool.job_variables
        job_variables: dict[str, Any] = {"image": target.image}
        if jv.cpu is not None and jv.memory is not None:
            job_variables.update(cpu=jv.cpu, memory=jv.memory)
        if jv.env:
            job_variables["env"] = dict(jv.env)
        schedules = sorted(schedule_key(s.cron, s.timezone) for s in spec.schedules) if target.scheduled else []
        out.append(Resource(KIND, f"{flow.name}/{spec.name}-{target.t}", {
            "work_pool_name": target.pool,
            "entrypoint": spec.entrypoint,
            "path": IMAGE_WORKDIR,
            "pull_steps": [dict(s) for s in PULL_STEPS],
            "job_variables": job_variables,
            "parameters": dict(spec.parameters),
            "tags": list(dict.fromkeys([*spec.tags, f"deployment-type:{target.t}", MANIFEST_TAG])),
            # "" rather than None: None would mean "not managed" to the diff.
            "description": spec.description or flow.description or "",
            "parameter_openapi_schema": flow.parameter_schema,
            "schedules": schedules,
            "version": target.image_tag,
        }, deployment_type=target.t))
    return out


def render_desired(resources: list[Resource], target: Target) -> str:
    """The deployments a dry run would make, without comparing them with a workspace."""
    if not resources:
        return f"No deployments of the manifest apply to deployment type {target.t!r}; nothing to deploy."
    lines = [f"Would deploy {len(resources)} flow deployment(s) of type {target.t!r} "
             f"(validated; not compared with a Prefect workspace):"]
    for r in resources:
        p = r.props
        jv = p["job_variables"]
        size = f"cpu {jv['cpu']} / memory {jv['memory']}" if "cpu" in jv else "cpu/memory: work pool default"
        schedules = [f"cron {k.split('|')[0]!r} ({k.split('|')[1]})" for k in p["schedules"]]
        schedule = ", ".join(schedules) or ("no schedule" + ("" if target.scheduled else
                                                             " (schedules apply only to main)"))
        lines += [
            f"  {r.name}",
            f"      entrypoint  {p['entrypoint']}",
            f"      work pool   {p['work_pool_name']}",
            f"      image       {jv['image']}",
            f"      resources   {size}",
            f"      schedule    {schedule}",
            f"      parameters  {p['parameters']}",
            f"      tags        {', '.join(p['tags'])}",
        ]
        if "env" in jv:
            lines.append(f"      env         {', '.join(f'{k}={v}' for k, v in sorted(jv['env'].items()))}")
    return "\n".join(lines)
