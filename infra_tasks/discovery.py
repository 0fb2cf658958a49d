"""Finding resources that carry our ownership tag (read-only), so the drift check can
report the ones no longer desired as UNMANAGED. The resource-groups tagging API does
not return IAM roles or ECR repositories, so each service's own list calls are used,
narrowed by our name prefix first."""

from __future__ import annotations

from typing import Callable

from . import ecs_taskdef, events, iam, logs, s3, sqs
from .aws import BotoCoreError, ClientError, InfraError, Missing, absent, client, paginate
from .config import InfraConfig
from .handler import tag_dict
from .model import OWNER_TAG, Resource

# A bucket of another account that happens to match our prefix cannot be read: not ours.
FOREIGN_BUCKET = Missing(s3.MISSING.codes | {"AccessDenied", "403"})


def _found(kind: str, name: str, **ident: str) -> Resource:
    """A resource found by listing: no desired properties, only what reading it needs."""
    return Resource(kind, name, {}, ident=ident)


def _ours(tags: dict[str, str], owner: str, env: str) -> bool:
    return tags.get(OWNER_TAG) == owner and tags.get("environment", env) == env


def roles(prefix: str, owner: str, env: str) -> list[Resource]:
    out = []
    for r in paginate(client("iam"), "list_roles", "Roles"):
        if r["RoleName"].startswith(prefix + "-") and _ours(tag_dict(iam.role_tags(r["RoleName"])), owner, env):
            out.append(_found("iam.role", r["RoleName"]))
    return out


def log_groups(prefix: str, owner: str, env: str) -> list[Resource]:
    out = []
    for g in paginate(client("logs"), "describe_log_groups", "logGroups", logGroupNamePrefix=f"/ecs/{prefix}-"):
        if _ours(logs.log_group_tags(g["logGroupName"], logs.log_group_arn(g)), owner, env):
            out.append(_found("logs.group", g["logGroupName"]))
    return out


def queues(prefix: str, owner: str, env: str) -> list[Resource]:
    out = []
    for url in client("sqs").list_queues(QueueNamePrefix=f"{prefix}-").get("QueueUrls", []):
        name = url.rsplit("/", 1)[1]
        if _ours(sqs.queue_tags(name, url), owner, env):
            out.append(_found("sqs.queue", name))
    return out


def security_groups(prefix: str, owner: str, env: str) -> list[Resource]:
    groups = client("ec2").describe_security_groups(
        Filters=[{"Name": f"tag:{OWNER_TAG}", "Values": [owner]}])["SecurityGroups"]
    return [_found("ec2.security_group", g["GroupName"], vpc_id=g["VpcId"]) for g in groups
            if _ours(tag_dict(g.get("Tags")), owner, env)]


def clusters(prefix: str, owner: str, env: str) -> list[Resource]:
    ecs = client("ecs")
    arns = [a for a in paginate(ecs, "list_clusters", "clusterArns") if a.rsplit("/", 1)[1].startswith(prefix)]
    out = []
    for i in range(0, len(arns), 100):
        for c in ecs.describe_clusters(clusters=arns[i:i + 100], include=["TAGS"])["clusters"]:
            if c.get("status") == "ACTIVE" and _ours(tag_dict(c.get("tags"), "key", "value"), owner, env):
                out.append(_found("ecs.cluster", c["clusterName"]))
    return out


def services(prefix: str, owner: str, env: str) -> list[Resource]:
    ecs = client("ecs")
    out = []
    for cluster in [a for a in paginate(ecs, "list_clusters", "clusterArns") if a.rsplit("/", 1)[1].startswith(prefix)]:
        arns = list(paginate(ecs, "list_services", "serviceArns", cluster=cluster))
        for i in range(0, len(arns), 10):
            for svc in ecs.describe_services(cluster=cluster, services=arns[i:i + 10], include=["TAGS"])["services"]:
                if svc.get("status") == "ACTIVE" and _ours(tag_dict(svc.get("tags"), "key", "value"), owner, env):
                    out.append(_found("ecs.service", svc["serviceName"], cluster=cluster.rsplit("/", 1)[1]))
    return out


def task_families(prefix: str, owner: str, env: str) -> list[Resource]:
    ecs = client("ecs")
    out = []
    for family in paginate(ecs, "list_task_definition_families", "families", familyPrefix=prefix, status="ACTIVE"):
        got = ecs_taskdef.describe_task_definition(family)
        # Only a family with an ACTIVE revision is there (deregistered revisions linger).
        if got and (got.get("taskDefinition") or {}).get("status") == "ACTIVE" and _ours(tag_dict(got.get("tags"), "key", "value"), owner, env):
            out.append(_found("ecs.task_definition", family))
    return out


def buckets(prefix: str, owner: str, env: str) -> list[Resource]:
    out = []
    for b in client("s3").list_buckets().get("Buckets", []):
        if not b["Name"].startswith(prefix + "-"):
            continue
        got = absent(f"s3.bucket/{b['Name']}", client("s3").get_bucket_tagging, Bucket=b["Name"],
                     missing=FOREIGN_BUCKET)
        if got and _ours(tag_dict(got.get("TagSet")), owner, env):
            out.append(_found("s3.bucket", b["Name"]))
    return out


def rules(prefix: str, owner: str, env: str) -> list[Resource]:
    out = []
    for r in client("events").list_rules(NamePrefix=f"{prefix}-").get("Rules", []):
        if _ours(tag_dict(events.rule_tags(r["Name"], r["Arn"])), owner, env):
            out.append(_found("events.rule", r["Name"]))
    return out


FINDERS: dict[str, Callable[[str, str, str], list[Resource]]] = {
    "iam.role": roles, "logs.group": log_groups, "sqs.queue": queues, "ec2.security_group": security_groups,
    "ecs.cluster": clusters, "ecs.service": services, "ecs.task_definition": task_families,
    "s3.bucket": buckets, "events.rule": rules,
}


def owned(cfg: InfraConfig, env: str, owner: str) -> tuple[list[str], dict[str, str]]:
    """Keys of resources carrying our tag, and the kinds that could not be listed (why)."""
    found, failed = owned_resources(cfg, env, owner)
    return [r.key for r in found], failed


def owned_resources(cfg: InfraConfig, env: str, owner: str) -> tuple[list[Resource], dict[str, str]]:
    """Resources carrying our tag (with what their handler needs to read them), and the
    kinds that could not be listed (why)."""
    found: list[Resource] = []
    failed: dict[str, str] = {}
    for kind, finder in FINDERS.items():
        try:
            found.extend(finder(cfg.prefix, owner, env))
        except (InfraError, ClientError, BotoCoreError) as exc:  # reported, never silently "in sync"
            failed[kind] = str(exc).split("\n")[0]
    return found, failed
