"""Finding resources that carry our ownership tag (read-only), so the drift check can
report the ones no longer desired as UNMANAGED. The resource-groups tagging API does
not return IAM roles or ECR repositories, so each service's own list calls are used,
narrowed by our name prefix first."""

from __future__ import annotations

from typing import Callable

from .aws import client, error_code, paginate
from .config import InfraConfig
from .handler import tag_dict
from .model import OWNER_TAG


def _ours(tags: dict[str, str], owner: str, env: str) -> bool:
    return tags.get(OWNER_TAG) == owner and tags.get("environment", env) == env


def roles(prefix: str, owner: str, env: str) -> list[str]:
    iam = client("iam")
    out = []
    for r in paginate(iam, "list_roles", "Roles"):
        if r["RoleName"].startswith(prefix + "-"):
            if _ours(tag_dict(iam.list_role_tags(RoleName=r["RoleName"]).get("Tags")), owner, env):
                out.append(f"iam.role/{r['RoleName']}")
    return out


def log_groups(prefix: str, owner: str, env: str) -> list[str]:
    logs = client("logs")
    out = []
    for g in paginate(logs, "describe_log_groups", "logGroups", logGroupNamePrefix=f"/ecs/{prefix}-"):
        if _ours(logs.list_tags_for_resource(resourceArn=g["arn"].removesuffix(":*")).get("tags", {}), owner, env):
            out.append(f"logs.group/{g['logGroupName']}")
    return out


def queues(prefix: str, owner: str, env: str) -> list[str]:
    sqs = client("sqs")
    out = []
    for url in sqs.list_queues(QueueNamePrefix=f"{prefix}-").get("QueueUrls", []):
        if _ours(sqs.list_queue_tags(QueueUrl=url).get("Tags", {}), owner, env):
            out.append(f"sqs.queue/{url.rsplit('/', 1)[1]}")
    return out


def security_groups(prefix: str, owner: str, env: str) -> list[str]:
    groups = client("ec2").describe_security_groups(
        Filters=[{"Name": f"tag:{OWNER_TAG}", "Values": [owner]}])["SecurityGroups"]
    return [f"ec2.security_group/{g['GroupName']}" for g in groups if _ours(tag_dict(g.get("Tags")), owner, env)]


def clusters(prefix: str, owner: str, env: str) -> list[str]:
    ecs = client("ecs")
    arns = [a for a in paginate(ecs, "list_clusters", "clusterArns") if a.rsplit("/", 1)[1].startswith(prefix)]
    out = []
    for i in range(0, len(arns), 100):
        for c in ecs.describe_clusters(clusters=arns[i:i + 100], include=["TAGS"])["clusters"]:
            if c.get("status") == "ACTIVE" and _ours(tag_dict(c.get("tags"), "key", "value"), owner, env):
                out.append(f"ecs.cluster/{c['clusterName']}")
    return out


def services(prefix: str, owner: str, env: str) -> list[str]:
    ecs = client("ecs")
    out = []
    for cluster in [a for a in paginate(ecs, "list_clusters", "clusterArns") if a.rsplit("/", 1)[1].startswith(prefix)]:
        arns = list(paginate(ecs, "list_services", "serviceArns", cluster=cluster))
        for i in range(0, len(arns), 10):
            for svc in ecs.describe_services(cluster=cluster, services=arns[i:i + 10], include=["TAGS"])["services"]:
                if svc.get("status") == "ACTIVE" and _ours(tag_dict(svc.get("tags"), "key", "value"), owner, env):
                    out.append(f"ecs.service/{svc['serviceName']}")
    return out


def task_families(prefix: str, owner: str, env: str) -> list[str]:
    ecs = client("ecs")
    out = []
    for family in paginate(ecs, "list_task_definition_families", "families", familyPrefix=prefix, status="ACTIVE"):
        got = ecs.describe_task_definition(taskDefinition=family, include=["TAGS"])
        if _ours(tag_dict(got.get("tags"), "key", "value"), owner, env):
            out.append(f"ecs.task_definition/{family}")
    return out


def buckets(prefix: str, owner: str, env: str) -> list[str]:
    s3 = client("s3")
    out = []
    for b in s3.list_buckets().get("Buckets", []):
        if not b["Name"].startswith(prefix + "-"):
            continue
        try:
            tags = tag_dict(s3.get_bucket_tagging(Bucket=b["Name"]).get("TagSet"))
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) in ("NoSuchTagSet", "NoSuchTagSetError", "AccessDenied"):
                continue
            raise
        if _ours(tags, owner, env):
            out.append(f"s3.bucket/{b['Name']}")
    return out


def rules(prefix: str, owner: str, env: str) -> list[str]:
    ev = client("events")
    out = []
    for r in ev.list_rules(NamePrefix=f"{prefix}-").get("Rules", []):
        if _ours(tag_dict(ev.list_tags_for_resource(ResourceARN=r["Arn"]).get("Tags")), owner, env):
            out.append(f"events.rule/{r['Name']}")
    return out


FINDERS: dict[str, Callable[[str, str, str], list[str]]] = {
    "iam.role": roles, "logs.group": log_groups, "sqs.queue": queues, "ec2.security_group": security_groups,
    "ecs.cluster": clusters, "ecs.service": services, "ecs.task_definition": task_families,
    "s3.bucket": buckets, "events.rule": rules,
}


def owned(cfg: InfraConfig, env: str, owner: str) -> tuple[list[str], dict[str, str]]:
    """Keys of resources carrying our tag, and the kinds that could not be listed (why)."""
    found: list[str] = []
    failed: dict[str, str] = {}
    for kind, finder in FINDERS.items():
        try:
            found.extend(finder(cfg.prefix, owner, env))
        except Exception as exc:  # noqa: BLE001 - reported, never silently "in sync"
            failed[kind] = str(exc).split("\n")[0]
    return found, failed
