"""Desired Prefect objects of one environment (pure data, like `desired.py`)."""

from __future__ import annotations

from typing import Any

from . import management
from .config import InfraConfig
from .facts import Facts
from .model import Ref, Resource
from .names import Account, Deployment, lock_name, sandbox_pool
from .prefect_objects import schedule_key


def result_storage_env(d: Deployment) -> dict[str, str]:
    return {"PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
            "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": f"s3-bucket/{d.base}-flows"}


def pool_defaults(cfg: InfraConfig, d: Deployment, facts: Facts, cred_key: str) -> dict[str, Any]:
    a = d.account
    env = cfg.env(a.env_name)
    return {
        "cluster": d.cluster_arn,
        "launch_type": "FARGATE",
        "vpc_id": facts.network.vpc_id,
        # Explicit subnets and security group: without them the worker picks every subnet
        # of the VPC and assigns a public IP.
        "network_configuration": {
            "subnets": list(facts.network.subnet_ids),
            "securityGroups": [Ref(f"ec2.security_group/{d.flow_sg}", "id")],
            "assignPublicIp": "ENABLED" if env.network.assign_public_ip else "DISABLED",
        },
        "execution_role_arn": a.role_arn(d.flow_exec_role),
        "task_role_arn": a.role_arn(d.flow_task_role),
        "configure_cloudwatch_logs": True,
        "cloudwatch_logs_options": {"awslogs-group": d.flow_log_group, "awslogs-region": a.region,
                                    "awslogs-stream-prefix": "flow"},
        "image": a.agent_image,
        "cpu": cfg.flows.cpu,
        "memory": cfg.flows.memory,
        # Reuse the latest task-definition revision when it matches: AWS throttles concurrent
        # registrations in one family ("Too many concurrent attempts to create a new revision").
        "match_latest_revision_in_family": True,
        # Flow runs persist their results in the type's flow bucket (the S3Bucket block below).
        # Prefect merges a deployment's own `env` job variable into this one.
        "env": result_storage_env(d),
        # The secret holds JSON; ECS extracts one key with the ARN:key:: form.
        "prefect_api_key_secret_arn": Ref(f"secretsmanager.secret/{a.secret_name}", "arn", "{}:PREFECT_API_KEY::"),
        "aws_credentials": {"$ref": {"block_document_id": Ref(cred_key, "id")}},
    }


def prefect_resources(cfg: InfraConfig, env_name: str, facts: Facts) -> list[Resource]:
    sandbox, endpoint_url = facts.sandbox, facts.endpoint_url
    a = Account(cfg, env_name, facts.account_id, facts.region, facts.partition)
    out: list[Resource] = []
    for d in a.deployments:
        cred_name = f"{d.base}"
        cred_key = f"prefect.block/aws-credentials/{cred_name}"
        out.append(Resource("prefect.block", f"aws-credentials/{cred_name}", {
            "region_name": a.region, "endpoint_url": endpoint_url or "", "static_keys": False},
            deployment_type=d.t))
        out.append(Resource("prefect.block", f"s3-bucket/{d.base}-flows", {
            "bucket_name": d.bucket, "credentials": cred_name},
            deps=(cred_key, f"s3.bucket/{d.bucket}"), deployment_type=d.t))
        out.append(Resource("prefect.work_pool", d.pool, {
            "type": "ecs", "description": f"Flow runs of deployment type {d.t} on ECS Fargate ({cfg.prefix})" + (
                f". Sandbox: no ECS worker runs here (the emulator cannot run containers), so this pool stays "
                f"Not Ready; management flows run on the process pool {sandbox_pool(cfg.prefix, env_name)}"
                if sandbox else ""),
            "defaults": pool_defaults(cfg, d, facts, cred_key)},
            deps=(f"ecs.cluster/{d.cluster}", f"iam.role/{d.flow_exec_role}", f"iam.role/{d.flow_task_role}",
                  f"logs.group/{d.flow_log_group}"), deployment_type=d.t))
    lock = lock_name(cfg.prefix, env_name)
    out.append(Resource("prefect.concurrency_limit", lock, {"limit": 1, "active": True}))
    mgmt = a.deployment(cfg.management_type(env_name))
    if sandbox:
        pool = sandbox_pool(cfg.prefix, env_name)
        out.append(Resource("prefect.work_pool", pool, {
            "type": "process", "description": "Sandbox stand-in for the ECS agent: runs management flows locally",
            "defaults": {}}))
    else:
        pool = mgmt.pool
    workdir = management.working_directory(sandbox)
    deployment_keys: dict[str, str] = {}
    for spec in management.MANAGEMENT:
        role = a.control_role(spec.role)
        # Management runs return reports, not data: no result persistence (their roles may
        # not write the flow bucket, and Prefect merges the pool's `env` into this one).
        job_variables: dict[str, Any] = {"env": {"INFRA_ENV": env_name, "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false"}}
        if not sandbox:
            job_variables.update(image=a.agent_image, task_role_arn=a.role_arn(role))
        name = management.deployment_name(spec, cfg.prefix, env_name)
        deployment_keys[spec.flow_name] = f"prefect.deployment/{name}"
        out.append(Resource("prefect.deployment", name, {
            "work_pool_name": pool,
            "entrypoint": spec.entrypoint,
            "path": workdir,
            "pull_steps": [{"prefect.deployments.steps.set_working_directory": {"directory": workdir}}],
            "job_variables": job_variables,
            "parameters": management.default_parameters(spec, env_name),
            "tags": ["infra", env_name],
            "description": spec.description,
            "parameter_openapi_schema": management.parameter_schema(spec),
            "schedules": [schedule_key(cfg.prefect.drift_check_cron)] if spec.scheduled else [],
        }, deps=(f"prefect.work_pool/{pool}", f"iam.role/{role}")))
    if cfg.prefect.alerts_block:
        out.append(alert_automation(cfg, env_name, deployment_keys))
    return out


ALERTS_KEY = "prefect.alerts_block"


def alert_automation_name(prefix: str, env_name: str) -> str:
    return f"{prefix}-{env_name}-infra-alerts"


def _on(events: list[str], deployment_key: str) -> dict[str, Any]:
    """A reactive trigger: one of `events` on a flow run of this deployment (the
    deployment is a related resource of every flow-run state event)."""
    return {"type": "event", "posture": "Reactive", "threshold": 1, "within": 0.0,
            "match": {"prefect.resource.id": "prefect.flow-run.*"},
            "match_related": {"prefect.resource.role": "deployment",
                              "prefect.resource.id": Ref(deployment_key, "id", "prefect.deployment.{}")},
            "expect": sorted(events), "after": [], "for_each": ["prefect.resource.id"]}


def alert_automation(cfg: InfraConfig, env_name: str, deployment_keys: dict[str, str]) -> Resource:
    """Fires when the drift check ends Failed (it found drift) or crashes, and when an
    infra-update run crashes (an update that fails cleanly, e.g. an invalid request,
    already tells the person who submitted it)."""
    drift, update = deployment_keys[management.DRIFT_CHECK.flow_name], deployment_keys[
        management.INFRA_UPDATE.flow_name]
    block = cfg.prefect.alerts_block
    subject = f"[{cfg.prefix}] {env_name}: {{{{ flow.name }}}} run {{{{ flow_run.name }}}} {{{{ flow_run.state.name }}}}"
    body = "\n".join((
        f"Environment: {env_name}",
        "Deployment: {{ flow.name }}/{{ deployment.name }}",
        "Flow run: {{ flow_run.name }} ({{ flow_run.state.name }})",
        "{{ flow_run|ui_url }}",
        "",
        "{{ flow_run.state.message }}",
    ))
    return Resource("prefect.automation", alert_automation_name(cfg.prefix, env_name), {
        "description": f"Infrastructure alerts of {env_name}: the drift check ended Failed (drift found) or a "
                       f"management run crashed. Sent through {block} ({ALERTS_KEY} in infra.toml).",
        "enabled": True,
        "trigger": {"type": "compound", "require": "any", "within": None, "triggers": [
            _on(["prefect.flow-run.Failed", "prefect.flow-run.Crashed"], drift),
            _on(["prefect.flow-run.Crashed"], update),
        ]},
        "actions": [{"type": "send-notification", "block": block, "subject": subject, "body": body}],
    }, deps=(drift, update), ident={"config_key": ALERTS_KEY})
