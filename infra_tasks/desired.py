"""The desired state: every resource of one environment as pure data.

Inputs are the validated config and the facts read beforehand (`facts.py`: account,
region, the resolved network, credentials given); nothing here reads the environment.
Values AWS assigns (security-group ids, the secret's ARN) are `Ref`s to the resource
that will know them.
"""

from __future__ import annotations

from . import autoscaling, ecr, ecs, ecs_taskdef, events, iam, iam_policies, logs, s3, secrets, sqs
from .config import ConfigError, InfraConfig
from .ec2 import sg_props
from .facts import Facts
from .model import OWNER_TAG, TYPE_TAG, Ref, Resource, Sensitive
from .names import Account, Deployment

OWNER_VALUE = "prefect-aws-stack"


def owner_value(cfg: InfraConfig) -> str:
    return f"{OWNER_VALUE}/{cfg.prefix}"


def secret_value(facts: Facts) -> Sensitive | None:
    """The value to keep the Prefect secret equal to: only when rotation is asked for
    (`bootstrap --rotate-credentials`). Otherwise the stored value is never read: flow runs
    have PREFECT_API_* in their environment and must not rewrite it."""
    return facts.prefect_credentials if facts.rotate_credentials else None


def secret_initial_value(facts: Facts) -> Sensitive | None:
    """The value to create a missing secret with."""
    if facts.prefect_credentials is None and facts.sandbox:
        # Sandbox only: a placeholder so the whole stack can be built without Prefect Cloud;
        # only ever used to create, never compared with an existing secret.
        url = facts.prefect_api_url or "http://127.0.0.1:4200/api"
        return Sensitive({"PREFECT_API_URL": url, "PREFECT_API_KEY": "sandbox"})
    return facts.prefect_credentials


def tags(cfg: InfraConfig, env_name: str, deployment_type: str | None) -> dict[str, str]:
    out = {**cfg.default_tags, "environment": env_name, OWNER_TAG: owner_value(cfg)}
    out[TYPE_TAG] = deployment_type or "account"
    return out


def key(kind: str, name: str) -> str:
    return f"{kind}/{name}"


def account_resources(cfg: InfraConfig, a: Account, facts: Facts) -> list[Resource]:
    t = tags(cfg, a.env_name, None)
    env = cfg.env(a.env_name)
    ecs_trust = iam_policies.ecs_tasks_trust(a)
    oidc_key = key("iam.oidc_provider", a.oidc_host)
    read = {"infra-read": iam_policies.infra_read(a)}
    write = {"infra-write": iam_policies.infra_write(a, owner_value(cfg))}
    return [
        Resource("ecr.repository", a.ecr_repository,
                 ecr.desired_props(cfg.ecr.images_kept, cfg.ecr.tag_mutability, t)),
        Resource("secretsmanager.secret", a.secret_name, secrets.desired_props(t, secret_value(facts)),
                 ident={"initial": secret_initial_value(facts)}),
        Resource("iam.oidc_provider", a.oidc_host, {"audience_registered": True, "tags": t},
                 ident={"audience": cfg.circleci.org_id}),
        Resource("iam.role", a.ci_deploy_role, iam.role_props(
            iam_policies.circleci_trust(a, [env.apply_branch]),
            f"CircleCI on {env.apply_branch}: apply infrastructure and the Prefect side",
            {**write, "ci-deploy": iam_policies.ci_deploy_extra(a)}, [], t), deps=(oidc_key,)),
        Resource("iam.role", a.ci_push_role, iam.role_props(
            iam_policies.circleci_trust(a, env.ci_branches),
            f"CircleCI on {', '.join(env.ci_branches)}: push images to the repository",
            {"ci-push": iam_policies.ci_push(a)}, [], t), deps=(oidc_key,)),
        Resource("iam.role", a.ci_plan_role, iam.role_props(
            iam_policies.circleci_trust(a, None), "CircleCI on any branch or pull request: read-only plan",
            read, [], t), deps=(oidc_key,)),
        Resource("iam.role", a.infra_read_role, iam.role_props(
            ecs_trust, "Prefect drift-check flow runs: read-only view of this project's resources", read, [], t)),
        Resource("iam.role", a.infra_write_role, iam.role_props(
            ecs_trust, "Prefect infra-update flow runs: create and update this environment's resources",
            write, [], t)),
        Resource("iam.role", a.infra_prune_role, iam.role_props(
            ecs_trust, "Prefect infra-prune flow runs, after approval: delete this environment's resources that are "
                       "no longer configured (never data)",
            {"infra-prune": iam_policies.infra_prune(a, owner_value(cfg))}, [], t)),
    ]


def deployment_resources(cfg: InfraConfig, d: Deployment, facts: Facts) -> list[Resource]:
    a = d.account
    t = tags(cfg, a.env_name, d.t)
    dt = d.t
    ecs_trust = iam_policies.ecs_tasks_trust(a)
    secret_key = key("secretsmanager.secret", a.secret_name)
    k = {
        "bucket": key("s3.bucket", d.bucket),
        "agent_logs": key("logs.group", d.agent_log_group),
        "flow_logs": key("logs.group", d.flow_log_group),
        "agent_exec": key("iam.role", d.agent_exec_role),
        "agent_task": key("iam.role", d.agent_task_role),
        "flow_exec": key("iam.role", d.flow_exec_role),
        "flow_task": key("iam.role", d.flow_task_role),
        "agent_sg": key("ec2.security_group", d.agent_sg),
        "flow_sg": key("ec2.security_group", d.flow_sg),
        "dlq": key("sqs.queue", d.dlq),
        "queue": key("sqs.queue", d.queue),
        "rule": key("events.rule", d.rule),
        "cluster": key("ecs.cluster", d.cluster),
        "taskdef": key("ecs.task_definition", d.task_family),
        "service": key("ecs.service", d.service),
        "target": key("autoscaling.target", d.scalable_resource_id),
    }
    vpc = facts.network.vpc_id
    agent = cfg.agent
    management = dt == cfg.management_type(a.env_name)
    runtime = iam_policies.runtime_policies(d, cfg.flows.task_role_extra_statements, management)
    boundary_key = key("iam.policy", d.boundary)

    def runtime_role(name: str, policy_name: str, what: str) -> Resource:
        return Resource("iam.role", name, iam.role_props(ecs_trust, what, {policy_name: runtime[name]}, [], t,
                                                         boundary=d.boundary_arn),
                        deps=(boundary_key,), deployment_type=dt)

    return [
        Resource("iam.policy", d.boundary, iam.managed_policy_props(
            iam_policies.runtime_boundary(d, cfg.flows.task_role_extra_statements, management),
            f"Permissions boundary of the {dt} runtime roles ({cfg.prefix}): the most they may ever do", t),
            deployment_type=dt, ident={"arn": d.boundary_arn}),
        Resource("s3.bucket", d.bucket, s3.desired_props(a.region, d.bucket_arn, cfg.s3.noncurrent_version_days, t),
                 deployment_type=dt),
        Resource("logs.group", d.agent_log_group, logs.desired_props(cfg.logs.retention_days, t), deployment_type=dt),
        Resource("logs.group", d.flow_log_group, logs.desired_props(cfg.logs.retention_days, t), deployment_type=dt),
        runtime_role(d.agent_exec_role, "agent-execution",
                     f"Prefect agent ({dt}) task execution: pull its image, write its log, read the Prefect secret"),
        runtime_role(d.agent_task_role, "prefect-worker",
                     f"Prefect agent ({dt}): launch flow runs on its own cluster"
                     + (" and the management deployments' runs" if management else "")),
        runtime_role(d.flow_exec_role, "flow-execution",
                     f"Flow runs ({dt}) task execution: pull flow images, write logs, read the Prefect secret"),
        runtime_role(d.flow_task_role, "flow-task",
                     f"Flow runs ({dt}): their own bucket and configured extra grants"),
        Resource("ec2.security_group", d.agent_sg, sg_props(f"Prefect agent {dt}: egress only", vpc, t),
                 deployment_type=dt, ident={"vpc_id": vpc}),
        Resource("ec2.security_group", d.flow_sg, sg_props(f"Prefect flow runs {dt}: egress only", vpc, t),
                 deployment_type=dt, ident={"vpc_id": vpc}),
        Resource("sqs.queue", d.dlq, sqs.queue_props(1209600, 30, t), deployment_type=dt),
        Resource("sqs.queue", d.queue, sqs.queue_props(
            345600, 30, t, redrive_to=d.dlq_arn, queue_policy=sqs.observer_queue_policy(d.queue_arn, d.rule_arn)),
            deps=(k["dlq"],), deployment_type=dt),
        Resource("ecs.cluster", d.cluster, ecs.cluster_props(t), deployment_type=dt),
        Resource("events.rule", d.rule, events.rule_props(d.cluster_arn, d.queue_arn, t),
                 deps=(k["queue"],), deployment_type=dt),
        Resource("ecs.task_definition", d.task_family, {**ecs_taskdef.agent_taskdef(
            family=d.task_family, cpu=agent.cpu, memory=agent.memory, image=a.agent_image, pool=d.pool,
            exec_role_arn=a.role_arn(d.agent_exec_role), task_role_arn=a.role_arn(d.agent_task_role),
            secret_arn=Ref(secret_key, "arn"), log_group=d.agent_log_group, region=a.region,
            queue_name=d.queue), "tags": t},
            deps=(k["agent_exec"], k["agent_task"], k["agent_logs"], secret_key), deployment_type=dt),
        Resource("ecs.service", d.service, ecs.service_props(
            task_definition=Ref(k["taskdef"], "arn"), desired=agent.desired_count, low=agent.min_count,
            high=agent.max_count, subnets=list(facts.network.subnet_ids), security_group=Ref(k["agent_sg"], "id"),
            public_ip=cfg.env(a.env_name).network.assign_public_ip, tags=t),
            deps=(k["cluster"], k["taskdef"], k["agent_sg"], k["queue"], k["rule"]), deployment_type=dt,
            ident={"cluster": d.cluster}),
        Resource("autoscaling.target", d.scalable_resource_id, autoscaling.target_props(agent.min_count,
                                                                                          agent.max_count),
                 deps=(k["service"],), deployment_type=dt),
        Resource("autoscaling.policy", d.scaling_policy, autoscaling.policy_props(
            agent.cpu_target_percent, agent.scale_in_cooldown, agent.scale_out_cooldown),
            deps=(k["target"],), deployment_type=dt, ident={"resource_id": d.scalable_resource_id}),
    ]


def desired_state(cfg: InfraConfig, env_name: str, facts: Facts) -> list[Resource]:
    a = Account(cfg, env_name, facts.account_id, facts.region, facts.partition)
    out = account_resources(cfg, a, facts)
    for d in a.deployments:
        out.extend(deployment_resources(cfg, d, facts))
    keys = [r.key for r in out]
    dupes = {k for k in keys if keys.count(k) > 1}
    assert not dupes, f"duplicate resource keys {dupes}"
    too_big = [e for r in out for e in iam_policies.size_errors(r.kind, r.name, r.props)]
    if too_big:
        raise ConfigError("IAM documents too large:\n  " + "\n  ".join(too_big))
    return out

