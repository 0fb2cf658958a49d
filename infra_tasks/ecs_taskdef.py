"""Agent task definition: desired shape and the normaliser that makes AWS's answer
comparable with it (AWS fills defaults, orders lists and adds server fields)."""

from __future__ import annotations

import shlex
from typing import Any

from .aws import Missing, absent, client, paginate, retry_iam_propagation
from .handler import Handler, call, changed, tag_dict, tag_list
from .model import Diff, Observed, Ref, Resource

WORKER_CONTAINER = "prefect-worker"
HEALTH_PORT = 8080

SERVER_FIELDS = {
    "taskDefinitionArn", "revision", "status", "requiresAttributes", "compatibilities", "registeredAt",
    "registeredBy", "deregisteredAt", "deleteRequestedAt",
}
CONTAINER_DEFAULTS = {"essential": True}
HEALTHCHECK_DEFAULTS = {"interval": 30, "timeout": 5, "retries": 3}


# ECS answers a family with no (active) revision with its generic ClientException, no
# specific code; only the message tells "not there" from a bad request.
MISSING = Missing.of(messages={"ClientException": "Unable to describe task definition"})

# --- thin calls: "not there" is None ----------------------------------------------------


def describe_task_definition(family: str) -> dict[str, Any] | None:
    """The latest revision of `family` with its tags (`taskDefinition`, `tags`)."""
    return absent(f"ecs.task_definition/{family}", client("ecs").describe_task_definition, taskDefinition=family,
                  include=["TAGS"], missing=MISSING)


def active_revisions(family: str) -> list[str]:
    """ARNs of the family's ACTIVE revisions. ListTaskDefinitions' familyPrefix is a prefix
    ("agent" also lists "agent-2"): only the family itself is kept."""
    arns = paginate(client("ecs"), "list_task_definitions", "taskDefinitionArns", familyPrefix=family,
                    status="ACTIVE")
    return [a for a in arns if family_of(a) == family]


# --- normalisers (pure) -------------------------------------------------------------


def family_of(arn: str) -> str:
    """`arn:…:task-definition/FAMILY:REVISION` -> FAMILY."""
    return arn.rsplit("/", 1)[-1].rsplit(":", 1)[0]


def _empty(v: Any) -> bool:
    return v is None or v == [] or v == {}


def normalise_container(c: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in c.items() if not _empty(v)}
    for k, v in CONTAINER_DEFAULTS.items():
        out.setdefault(k, v)
    if out.get("cpu") == 0:
        del out["cpu"]
    for key in ("environment", "secrets"):
        if key in out:
            out[key] = sorted(({"name": e["name"], **{k: v for k, v in e.items() if k != "name"}}
                               for e in out[key]), key=lambda e: e["name"])
    if "portMappings" in out:
        out["portMappings"] = sorted(
            ({"protocol": "tcp", "hostPort": p.get("containerPort"), **{k: v for k, v in p.items() if not _empty(v)}}
             for p in out["portMappings"]), key=lambda p: (p.get("containerPort", 0), p.get("protocol")))
    if "healthCheck" in out:
        hc = {**HEALTHCHECK_DEFAULTS, **{k: v for k, v in out["healthCheck"].items() if not _empty(v)}}
        if hc.get("startPeriod") == 0:
            hc.pop("startPeriod")
        out["healthCheck"] = hc
    if "logConfiguration" in out:
        out["logConfiguration"] = {k: v for k, v in out["logConfiguration"].items() if not _empty(v)}
    return out


def normalise_taskdef(td: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in td.items() if k not in SERVER_FIELDS and not _empty(v)}
    for k in ("cpu", "memory"):
        if k in out:
            out[k] = str(out[k])
    if out.get("enableFaultInjection") is False:
        del out["enableFaultInjection"]
    if "requiresCompatibilities" in out:
        out["requiresCompatibilities"] = sorted(out["requiresCompatibilities"])
    out["containerDefinitions"] = sorted((normalise_container(c) for c in td.get("containerDefinitions", [])),
                                         key=lambda c: c["name"])
    return out


# --- desired properties -------------------------------------------------------------


def health_command() -> list[str]:
    probe = (f"import sys,urllib.request; "
             f"sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:{HEALTH_PORT}/health', timeout=4).status == 200 "
             f"else 1)")
    return ["CMD-SHELL", f"python -c {shlex.quote(probe)}"]


def worker_command(pool: str) -> list[str]:
    # prefect-aws is baked into the image: never install packages at start.
    return ["prefect", "worker", "start", "--pool", pool, "--type", "ecs", "--with-healthcheck",
            "--install-policy", "never"]


def agent_taskdef(*, family: str, cpu: int, memory: int, image: str, pool: str, exec_role_arn: str,
                  task_role_arn: str, secret_arn: Any, log_group: str, region: str, queue_name: str,
                  extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    env = {"PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_NAME": queue_name, "AWS_DEFAULT_REGION": region,
           "PREFECT_WORKER_WEBSERVER_PORT": str(HEALTH_PORT), **(extra_env or {})}
    return normalise_taskdef({
        "family": family,
        "cpu": str(cpu),
        "memory": str(memory),
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "executionRoleArn": exec_role_arn,
        "taskRoleArn": task_role_arn,
        "runtimePlatform": {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"},
        "containerDefinitions": [{
            "name": WORKER_CONTAINER,
            "image": image,
            "essential": True,
            "command": worker_command(pool),
            "environment": [{"name": k, "value": v} for k, v in sorted(env.items())],
            # Credentials come from Secrets Manager at task start, never as plain environment values.
            "secrets": [{"name": k, "valueFrom": Ref(secret_arn.key, secret_arn.attr, "{}:" + k + "::")
                         if isinstance(secret_arn, Ref) else f"{secret_arn}:{k}::"}
                        for k in ("PREFECT_API_KEY", "PREFECT_API_URL")],
            "healthCheck": {"command": health_command(), "interval": 30, "timeout": 5, "retries": 3,
                            "startPeriod": 60},
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": log_group, "awslogs-region": region, "awslogs-stream-prefix": "agent"}},
        }],
    })


# --- the handler --------------------------------------------------------------------


class TaskDefinitionHandler(Handler):
    kind = "ecs.task_definition"
    # A registered revision is immutable: a change registers a new revision (the old one
    # stays, so a rollback target remains) — a replacement that deletes nothing.
    replace_is_safe = True
    ownership_checked = False
    replace_paths = ("family", "cpu", "memory", "networkMode", "requiresCompatibilities", "executionRoleArn",
                     "taskRoleArn", "runtimePlatform", "containerDefinitions")

    def read(self, res: Resource) -> Observed | None:
        out = describe_task_definition(res.name)
        td = (out or {}).get("taskDefinition") or {}
        if td.get("status") != "ACTIVE":
            return None
        return Observed(normalise_taskdef(td), outputs={"arn": td["taskDefinitionArn"]},
                        tags=tag_dict(out.get("tags"), "key", "value"))

    def _register(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        body = {k: v for k, v in props.items() if k != "tags"}
        ecs = client("ecs")

        def register() -> dict[str, Any]:
            return ecs.register_task_definition(**body, tags=tag_list(props["tags"], "key", "value"))
        out = retry_iam_propagation(register, action="RegisterTaskDefinition", resource=res.key)
        return {"arn": out["taskDefinition"]["taskDefinitionArn"]}

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        return call("RegisterTaskDefinition", res.key, self._register, res, props)

    def replace(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        return call("RegisterTaskDefinition", res.key, self._register, res, props)

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        if changed(diffs, "tags"):
            call("TagResource", res.key, client("ecs").tag_resource, resourceArn=observed.outputs["arn"],
                 tags=tag_list(props["tags"], "key", "value"))
        return observed.outputs

    def delete(self, res: Resource, observed: Observed) -> None:
        # Deregistered revisions stay listed as INACTIVE (AWS's own record; tasks still
        # running keep theirs); nothing can start from them any more.
        ecs = client("ecs")
        for arn in active_revisions(res.name):
            absent(res.key, ecs.deregister_task_definition, taskDefinition=arn, missing=MISSING)
