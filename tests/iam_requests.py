"""The IAM authorization requests AWS makes for one API call.

`requests_for(Call, AccountCtx)` turns a captured boto3 call into the `Request`s AWS
authorizes for it: the primary action on the exact resource ARN, the condition keys AWS
supplies for it, and the implicit authorizations (iam:PassRole, tag-on-create, service-
linked roles, Application Auto Scaling's checks on the scaled ECS service and its alarms).
An unknown (service, operation) raises KeyError, so an uncovered call fails loudly.

`Call.params` are the API parameters (what botocore's `provide-client-params` and
`before-parameter-build` events pass as `params`). The `before-call` event's `params` is
the serialized HTTP request instead; it is rejected with a TypeError naming the fix.

Context: only keys describing the call. Session-wide keys (aws:SecureTransport,
aws:RequestedRegion, aws:PrincipalArn, ...) are the evaluator's business. Keys whose value
format AWS does not document clearly are left out rather than guessed (ecs:subnet,
ecs:capacity-provider, events:creatorAccount, s3:signature*, ...): a policy conditioned on
them then evaluates as "key absent", which fails visibly. aws:ResourceTag/<k> (and the
service's own alias, e.g. ec2:ResourceTag/<k>) is added for existing resources when
`ctx.tags_of(arn)` knows their tags and the Service Authorization Reference (SAR) lists
the key for that action.

Where AWS cannot know the final ARN when it authorizes, a stand-in is used:
  new security group / ECS task ......... security-group/* , task/CLUSTER/*  (AWS does the same)
  new task-definition revision .......... task-definition/FAMILY:*
  secret addressed by name .............. secret:NAME-??????  (AWS appends 6 random characters)
  scalable target without known id ...... scalable-target/*
  target-tracking alarms ................ alarm:TargetTracking-<resource id>-*

`ctx.lookup(kind, key) -> str | None` supplies facts the parameters do not carry (None =
unknown; each use falls back as described):
  "sg-vpc"               security-group id -> VPC id                      (ec2:Vpc; else omitted)
  "default-vpc"          region -> default VPC id                         (CreateSecurityGroup w/o VpcId; else vpc/*)
  "role-arn"             role name -> role ARN (roles with a path)         (else role/NAME)
  "role-boundary"        role ARN -> boundary policy ARN, "" if none      (iam:PermissionsBoundary; else omitted)
  "secret-arn"           secret name -> secret ARN                        (else the stand-in above)
  "task-definition-arn"  family -> ARN of its latest ACTIVE revision      (else FAMILY:*)
  "scalable-target-arn"  "NAMESPACE|RESOURCE_ID|DIMENSION" -> target ARN  (else scalable-target/*)
  "service-linked-role"  service principal -> "exists" | "missing"        (else assumed to exist)
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

try:
    from .iam_eval import Request
except ModuleNotFoundError as exc:  # the evaluator is not written yet: same shape, unified later
    if exc.name != f"{__package__}.iam_eval":
        raise

    @dataclass(frozen=True)
    class Request:  # type: ignore[no-redef]
        action: str
        resource: str
        context: Mapping[str, str | list[str] | bool]
        principal: str | None = None
        why: str = ""


@dataclass(frozen=True)
class Call:
    principal: str          # who made it (e.g. a role name)
    service: str            # botocore service name
    operation: str          # botocore operation name
    params: Mapping[str, Any]


@dataclass(frozen=True)
class AccountCtx:
    account_id: str
    region: str
    partition: str = "aws"
    tags_of: Callable[[str], Mapping[str, str] | None] | None = None
    lookup: Callable[[str, str], str | None] | None = None


ECS_TASKS = "ecs-tasks.amazonaws.com"


def requests_for(call: Call, ctx: AccountCtx) -> list[Request]:
    handler = _HANDLERS.get((call.service, call.operation))
    if handler is None:
        raise KeyError(f"no IAM mapping for {call.service}:{call.operation} (called by {call.principal})")
    if {"url_path", "body", "headers"} <= set(call.params):
        raise TypeError(f"{call.service}:{call.operation}: params is botocore's serialized request (the "
                        f"'before-call' event); capture the API parameters with 'before-parameter-build'")
    b = _Builder(call, ctx)
    handler(b)
    out: list[Request] = []
    for r in b.out:  # one request per distinct authorization
        if r not in out:
            out.append(r)
    return out


def covered() -> set[tuple[str, str]]:
    """Every (service, operation) requests_for knows."""
    return set(_HANDLERS)


# --- the Service Authorization Reference (parliament ships it) ----------------------

@functools.lru_cache(maxsize=1)
def sar() -> dict[str, dict[str, Any]]:
    import parliament

    with open(os.path.join(os.path.dirname(parliament.__file__), "iam_definition.json")) as f:
        return {s["prefix"]: s for s in json.load(f)}


@functools.lru_cache(maxsize=None)
def _resource_tag_prefixes(action: str) -> tuple[str, ...]:
    """'aws:ResourceTag', 'ec2:ResourceTag', ... as the SAR lists them for `action`."""
    prefix, name = action.split(":")
    svc = sar()[prefix]
    priv = next((p for p in svc["privileges"] if p["privilege"] == name), None)
    if priv is None:
        raise KeyError(f"{action} is not in the Service Authorization Reference")
    types = {rt["resource_type"].rstrip("*") for rt in priv["resource_types"]}
    keys = [k for rt in priv["resource_types"] for k in rt["condition_keys"]]
    keys += [k for r in svc["resources"] if r["resource"] in types for k in r["condition_keys"]]
    return tuple(sorted({k.split("/")[0] for k in keys if "ResourceTag/" in k}))


# --- building requests -----------------------------------------------------------------

class _Builder:
    def __init__(self, call: Call, ctx: AccountCtx) -> None:
        self.call, self.ctx, self.p, self.op = call, ctx, call.params, call.operation
        self.out: list[Request] = []

    def arn(self, service: str, resource: str, *, regional: bool = True, account: str | None = None) -> str:
        region = self.ctx.region if regional else ""
        acct = "" if service == "s3" else (account or self.ctx.account_id)
        return f"arn:{self.ctx.partition}:{service}:{region}:{acct}:{resource}"

    def lookup(self, kind: str, key: str) -> str | None:
        return self.ctx.lookup(kind, key) if self.ctx.lookup else None

    def add(self, action: str, resource: str, context: Mapping[str, Any] | None = None, *, why: str = "",
            new: bool = False, tags_arn: str | None = None) -> None:
        """`new`: the resource does not exist yet (no aws:ResourceTag; nor for stand-in
        ARNs). `tags_arn`: where its tags live when `resource` is not its own ARN."""
        c = dict(context or {})
        if not new and "*" not in resource and self.ctx.tags_of is not None:
            tags = self.ctx.tags_of(tags_arn or resource)
            for prefix in _resource_tag_prefixes(action) if tags else ():
                c.update({f"{prefix}/{k}": v for k, v in tags.items()})
        self.out.append(Request(action, resource, c, self.call.principal,
                                why or f"{self.call.service}:{self.op}"))

    def pass_role(self, role_arn: str, service: str, param: str) -> None:
        self.add("iam:PassRole", role_arn, {"iam:PassedToService": service},
                 why=f"{self.call.service}:{self.op} passes {param}")

    def tag_on_create(self, action: str, resource: str, tags: dict[str, str], **context: Any) -> None:
        self.add(action, resource, {**context, **request_tags(tags)}, new=True,
                 why=f"{self.call.service}:{self.op} tags the resource it creates")

    def service_linked_role(self, principal: str, role: str) -> None:
        # Created on first use by the caller's credentials; assumed present unless told otherwise.
        if self.lookup("service-linked-role", principal) == "missing":
            self.add("iam:CreateServiceLinkedRole",
                     self.arn("iam", f"role/aws-service-role/{principal}/{role}", regional=False),
                     {"iam:AWSServiceName": principal}, new=True,
                     why=f"{self.call.service}:{self.op} creates the {principal} service-linked role")


def tag_map(tags: Any) -> dict[str, str]:
    """{k: v}, [{Key, Value}] or [{key, value}] -> {k: v}."""
    if not tags:
        return {}
    if isinstance(tags, Mapping):
        return {str(k): str(v) for k, v in tags.items()}
    return {t.get("Key", t.get("key")): t.get("Value", t.get("value", "")) for t in tags}


def request_tags(tags: Mapping[str, str]) -> dict[str, Any]:
    if not tags:
        return {}
    return {**{f"aws:RequestTag/{k}": v for k, v in tags.items()}, "aws:TagKeys": list(tags)}


_HANDLERS: dict[tuple[str, str], Callable[[_Builder], None]] = {}


def _on(service: str, *operations: str) -> Callable[[Callable[[_Builder], None]], Callable[[_Builder], None]]:
    def register(fn: Callable[[_Builder], None]) -> Callable[[_Builder], None]:
        for op in operations:
            _HANDLERS[(service, op)] = fn
        return fn
    return register


def _unscoped(service: str, actions: Mapping[str, str],
              context: Callable[[_Builder], dict[str, Any]] | None = None) -> None:
    """Operations whose action has no resource type: Resource "*"."""
    def handle(b: _Builder) -> None:
        b.add(actions[b.op], "*", context(b) if context else None)
    _on(service, *actions)(handle)


# --- sts ------------------------------------------------------------------------------

@_on("sts", "GetCallerIdentity")
def _sts(b: _Builder) -> None:
    pass  # needs no permission: it answers even when everything is denied


# --- s3 ---------------------------------------------------------------------------------

# IAM action names differ from several S3 operation names.
S3_BUCKET_ACTIONS = {
    "CreateBucket": "s3:CreateBucket", "HeadBucket": "s3:ListBucket", "GetBucketLocation": "s3:GetBucketLocation",
    "GetBucketVersioning": "s3:GetBucketVersioning", "PutBucketVersioning": "s3:PutBucketVersioning",
    "GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock", "PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration", "PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "GetBucketPolicy": "s3:GetBucketPolicy", "PutBucketPolicy": "s3:PutBucketPolicy",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "GetBucketTagging": "s3:GetBucketTagging", "PutBucketTagging": "s3:PutBucketTagging",
    "ListObjectsV2": "s3:ListBucket", "ListObjects": "s3:ListBucket",
    # A teardown's (with --delete-data).
    "DeleteBucket": "s3:DeleteBucket", "ListObjectVersions": "s3:ListBucketVersions",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
}
# Multipart uploads are authorized as s3:PutObject; HeadObject as s3:GetObject.
S3_OBJECT_ACTIONS = {
    "PutObject": "s3:PutObject", "GetObject": "s3:GetObject", "HeadObject": "s3:GetObject",
    "DeleteObject": "s3:DeleteObject", "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject", "AbortMultipartUpload": "s3:AbortMultipartUpload",
}
S3_VERSIONED = {"s3:GetObject": "s3:GetObjectVersion", "s3:DeleteObject": "s3:DeleteObjectVersion"}


def _bucket(b: _Builder, bucket: str) -> str:
    return b.arn("s3", bucket, regional=False)


@_on("s3", *S3_BUCKET_ACTIONS)
def _s3_bucket(b: _Builder) -> None:
    context: dict[str, Any] = {}
    if b.op in ("ListObjectsV2", "ListObjects"):
        keys = {"Prefix": "s3:prefix", "Delimiter": "s3:delimiter", "MaxKeys": "s3:max-keys"}
        context = {k: str(b.p[param]) for param, k in keys.items() if param in b.p}
    if b.op == "CreateBucket" and (b.p.get("CreateBucketConfiguration") or {}).get("LocationConstraint"):
        context["s3:locationconstraint"] = b.p["CreateBucketConfiguration"]["LocationConstraint"]
    b.add(S3_BUCKET_ACTIONS[b.op], _bucket(b, b.p["Bucket"]), context, new=b.op == "CreateBucket")
    if b.op == "CreateBucket" and (b.p.get("CreateBucketConfiguration") or {}).get("Tags"):
        # Tags given at create are authorized as s3:TagResource as well.
        b.add("s3:TagResource", _bucket(b, b.p["Bucket"]), new=True)


@_on("s3", "DeleteObjects")
def _s3_delete_objects(b: _Builder) -> None:
    # Authorized per object, as DeleteObject(Version) would be.
    for o in b.p["Delete"]["Objects"]:
        obj = f"{_bucket(b, b.p['Bucket'])}/{o['Key']}"
        if o.get("VersionId"):
            b.add("s3:DeleteObjectVersion", obj, {"s3:versionid": o["VersionId"]})
        else:
            b.add("s3:DeleteObject", obj)


@_on("s3", *S3_OBJECT_ACTIONS)
def _s3_object(b: _Builder) -> None:
    action = S3_OBJECT_ACTIONS[b.op]
    context: dict[str, Any] = {}
    if b.p.get("VersionId") and action in S3_VERSIONED:
        action, context = S3_VERSIONED[action], {"s3:versionid": b.p["VersionId"]}
    obj = f"{_bucket(b, b.p['Bucket'])}/{b.p['Key']}"
    b.add(action, obj, context)
    if b.op == "PutObject" and b.p.get("Tagging"):
        b.add("s3:PutObjectTagging", obj, why="s3:PutObject with x-amz-tagging")
    if b.op in ("PutObject", "CreateMultipartUpload") and b.p.get("ACL"):
        b.add("s3:PutObjectAcl", obj, {"s3:x-amz-acl": b.p["ACL"]}, why=f"s3:{b.op} with an ACL")


@_on("s3", "CopyObject")
def _s3_copy(b: _Builder) -> None:
    src = b.p["CopySource"]
    if isinstance(src, str):
        bucket, _, key = src.lstrip("/").partition("/")
        src = {"Bucket": bucket, "Key": key.split("?versionId=")[0]}
    source = f"{src['Bucket']}/{src['Key']}"
    b.add("s3:PutObject", f"{_bucket(b, b.p['Bucket'])}/{b.p['Key']}", {"s3:x-amz-copy-source": source})
    b.add("s3:GetObjectVersion" if src.get("VersionId") else "s3:GetObject", _bucket(b, source),
          why="s3:CopyObject reads the source object")


_unscoped("s3", {"ListBuckets": "s3:ListAllMyBuckets"})


# --- ec2 --------------------------------------------------------------------------------

EC2_TYPES = {"sg": "security-group", "sgr": "security-group-rule", "vpc": "vpc", "subnet": "subnet"}


def _ec2(b: _Builder, resource_id: str) -> tuple[str, dict[str, Any]]:
    """ARN and resource-specific context of an existing EC2 resource."""
    kind = EC2_TYPES.get(resource_id.split("-")[0])
    if kind is None:
        raise KeyError(f"ec2:{b.op} on {resource_id}: resource type not modelled")
    context: dict[str, Any] = {"ec2:Region": b.ctx.region}
    if kind == "security-group":
        context["ec2:SecurityGroupID"] = resource_id
        vpc = b.lookup("sg-vpc", resource_id)
        if vpc:
            context["ec2:Vpc"] = b.arn("ec2", f"vpc/{vpc}")
    return b.arn("ec2", f"{kind}/{resource_id}"), context


def _tag_specs(b: _Builder, resource_type: str) -> dict[str, str]:
    return {k: v for s in b.p.get("TagSpecifications") or [] if s.get("ResourceType") == resource_type
            for k, v in tag_map(s.get("Tags")).items()}


_unscoped("ec2", {op: f"ec2:{op}" for op in ("DescribeVpcs", "DescribeSubnets", "DescribeSecurityGroups",
                                             "DescribeSecurityGroupRules")},
          lambda b: {"ec2:Region": b.ctx.region})


@_on("ec2", "CreateSecurityGroup")
def _create_sg(b: _Builder) -> None:
    region = {"ec2:Region": b.ctx.region}
    tags = _tag_specs(b, "security-group")
    new_sg = b.arn("ec2", "security-group/*")
    b.add("ec2:CreateSecurityGroup", new_sg, {**region, **request_tags(tags)}, new=True)
    vpc = b.p.get("VpcId") or b.lookup("default-vpc", b.ctx.region)
    b.add("ec2:CreateSecurityGroup", b.arn("ec2", f"vpc/{vpc or '*'}"),
          {**region, **({"ec2:VpcID": vpc} if vpc else {})})
    if tags:
        b.tag_on_create("ec2:CreateTags", new_sg, tags, **region, **{"ec2:CreateAction": "CreateSecurityGroup"})


@_on("ec2", "AuthorizeSecurityGroupIngress", "AuthorizeSecurityGroupEgress", "RevokeSecurityGroupIngress",
     "RevokeSecurityGroupEgress")
def _sg_rules(b: _Builder) -> None:
    arn, context = _ec2(b, b.p["GroupId"])
    b.add(f"ec2:{b.op}", arn, context)
    tags = _tag_specs(b, "security-group-rule")
    if tags:
        b.tag_on_create("ec2:CreateTags", b.arn("ec2", "security-group-rule/*"), tags,
                        **{"ec2:Region": b.ctx.region, "ec2:CreateAction": b.op})


@_on("ec2", "DeleteSecurityGroup")
def _delete_sg(b: _Builder) -> None:
    arn, context = _ec2(b, b.p["GroupId"])
    b.add("ec2:DeleteSecurityGroup", arn, context)


@_on("ec2", "DescribeNetworkInterfaces")
def _describe_enis(b: _Builder) -> None:
    b.add("ec2:DescribeNetworkInterfaces", "*")  # no resource-level permissions


@_on("ec2", "CreateTags")
def _ec2_tags(b: _Builder) -> None:
    for rid in b.p["Resources"]:
        arn, context = _ec2(b, rid)
        b.add("ec2:CreateTags", arn, {**context, **request_tags(tag_map(b.p.get("Tags")))})


# --- ecs --------------------------------------------------------------------------------

def _cluster(b: _Builder, value: str | None) -> str:
    value = value or "default"  # ECS's default cluster when none is named
    return value if value.startswith("arn:") else b.arn("ecs", f"cluster/{value}")


def _cluster_name(cluster_arn: str) -> str:
    return cluster_arn.rsplit("/", 1)[-1]


def _service(b: _Builder, cluster_arn: str, value: str) -> str:
    return value if value.startswith("arn:") else b.arn("ecs", f"service/{_cluster_name(cluster_arn)}/{value}")


def _task(b: _Builder, cluster_arn: str, value: str) -> str:
    return value if value.startswith("arn:") else b.arn("ecs", f"task/{_cluster_name(cluster_arn)}/{value}")


def _taskdef(b: _Builder, value: str) -> str:
    """A family alone means its latest ACTIVE revision, which ECS resolves before it
    authorizes; unknown here without the lookup, so FAMILY:* stands in."""
    if value.startswith("arn:"):
        return value
    if ":" in value:
        return b.arn("ecs", f"task-definition/{value}")
    return b.lookup("task-definition-arn", value) or b.arn("ecs", f"task-definition/{value}:*")


def _service_context(b: _Builder) -> dict[str, Any]:
    p, c = b.p, {}
    if p.get("taskDefinition"):
        c["ecs:task-definition"] = _taskdef(b, p["taskDefinition"])
    if "enableECSManagedTags" in p:
        c["ecs:enable-ecs-managed-tags"] = bool(p["enableECSManagedTags"])
    if p.get("propagateTags"):
        c["ecs:propagate-tags"] = p["propagateTags"]
    if "enableExecuteCommand" in p:
        c["ecs:enable-execute-command"] = str(bool(p["enableExecuteCommand"])).lower()
    awsvpc = (p.get("networkConfiguration") or {}).get("awsvpcConfiguration")
    if awsvpc:
        c["ecs:auto-assign-public-ip"] = awsvpc.get("assignPublicIp", "DISABLED") == "ENABLED"
    return c


@_on("ecs", "CreateCluster")
def _create_cluster(b: _Builder) -> None:
    arn, tags = b.arn("ecs", f"cluster/{b.p.get('clusterName') or 'default'}"), tag_map(b.p.get("tags"))
    b.add("ecs:CreateCluster", arn, request_tags(tags), new=True)
    if tags:
        b.tag_on_create("ecs:TagResource", arn, tags, **{"ecs:CreateAction": "CreateCluster"})
    b.service_linked_role("ecs.amazonaws.com", "AWSServiceRoleForECS")


@_on("ecs", "UpdateCluster", "UpdateClusterSettings", "PutClusterCapacityProviders")
def _cluster_write(b: _Builder) -> None:
    b.add(f"ecs:{b.op}", _cluster(b, b.p["cluster"]))


@_on("ecs", "DeleteCluster")
def _delete_cluster(b: _Builder) -> None:
    b.add("ecs:DeleteCluster", _cluster(b, b.p["cluster"]))


@_on("ecs", "DeleteService")
def _delete_service(b: _Builder) -> None:
    cluster = _cluster(b, b.p.get("cluster"))
    b.add("ecs:DeleteService", _service(b, cluster, b.p["service"]), {"ecs:cluster": cluster})


@_on("ecs", "ListTasks")
def _list_tasks(b: _Builder) -> None:
    # Authorized on container instances ("*" for Fargate), conditioned on the cluster.
    b.add("ecs:ListTasks", "*", {"ecs:cluster": _cluster(b, b.p.get("cluster"))})


@_on("ecs", "DescribeClusters")
def _describe_clusters(b: _Builder) -> None:
    for c in b.p.get("clusters") or [None]:
        b.add("ecs:DescribeClusters", _cluster(b, c))


@_on("ecs", "CreateService")
def _create_service(b: _Builder) -> None:
    cluster, tags = _cluster(b, b.p.get("cluster")), tag_map(b.p.get("tags"))
    arn = _service(b, cluster, b.p["serviceName"])
    b.add("ecs:CreateService", arn, {"ecs:cluster": cluster, **_service_context(b), **request_tags(tags)}, new=True)
    if tags:
        b.tag_on_create("ecs:TagResource", arn, tags, **{"ecs:CreateAction": "CreateService"})
    if b.p.get("role"):  # only for classic load balancers; awsvpc services use the service-linked role
        b.pass_role(b.p["role"], "ecs.amazonaws.com", "role")
    b.service_linked_role("ecs.amazonaws.com", "AWSServiceRoleForECS")


@_on("ecs", "UpdateService")
def _update_service(b: _Builder) -> None:
    cluster = _cluster(b, b.p.get("cluster"))
    b.add("ecs:UpdateService", _service(b, cluster, b.p["service"]), {"ecs:cluster": cluster, **_service_context(b)})


@_on("ecs", "DescribeServices")
def _describe_services(b: _Builder) -> None:
    cluster = _cluster(b, b.p.get("cluster"))
    for s in b.p["services"]:
        b.add("ecs:DescribeServices", _service(b, cluster, s), {"ecs:cluster": cluster})


@_on("ecs", "RegisterTaskDefinition")
def _register_taskdef(b: _Builder) -> None:
    p, tags = b.p, tag_map(b.p.get("tags"))
    arn = b.arn("ecs", f"task-definition/{p['family']}:*")  # the new revision's number is not known yet
    context: dict[str, Any] = {}
    if p.get("cpu"):
        context["ecs:task-cpu"] = str(p["cpu"])
    if p.get("memory"):
        context["ecs:task-memory"] = str(p["memory"])
    if p.get("requiresCompatibilities"):
        context["ecs:compute-compatibility"] = list(p["requiresCompatibilities"])
    privileged = [c["privileged"] for c in p.get("containerDefinitions", []) if "privileged" in c]
    if privileged:
        context["ecs:privileged"] = str(any(privileged)).lower()
    b.add("ecs:RegisterTaskDefinition", arn, {**context, **request_tags(tags)}, new=True)
    for param in ("taskRoleArn", "executionRoleArn"):
        if p.get(param):
            b.pass_role(p[param], ECS_TASKS, param)
    if tags:
        b.tag_on_create("ecs:TagResource", arn, tags, **{"ecs:CreateAction": "RegisterTaskDefinition"})


@_on("ecs", "RunTask", "StartTask")
def _run_task(b: _Builder) -> None:
    p, tags = b.p, tag_map(b.p.get("tags"))
    cluster = _cluster(b, p.get("cluster"))
    context: dict[str, Any] = {"ecs:cluster": cluster}
    if "enableExecuteCommand" in p:
        context["ecs:enable-execute-command"] = str(bool(p["enableExecuteCommand"])).lower()
    if p.get("containerInstances"):
        context["ecs:container-instances"] = [
            i if i.startswith("arn:") else b.arn("ecs", f"container-instance/{_cluster_name(cluster)}/{i}")
            for i in p["containerInstances"]]
    b.add(f"ecs:{b.op}", _taskdef(b, p["taskDefinition"]), {**context, **request_tags(tags)})
    overrides = p.get("overrides") or {}
    for param in ("taskRoleArn", "executionRoleArn"):
        if overrides.get(param):
            b.pass_role(overrides[param], ECS_TASKS, f"overrides.{param}")
    # The caller tags the tasks it starts (explicit tags, or ECS copying them for it).
    propagated = p.get("propagateTags") in ("TASK_DEFINITION", "SERVICE") or p.get("enableECSManagedTags")
    if tags or propagated:
        b.tag_on_create("ecs:TagResource", b.arn("ecs", f"task/{_cluster_name(cluster)}/*"), tags,
                        **{"ecs:CreateAction": b.op})


@_on("ecs", "StopTask", "DescribeTasks")
def _task_ops(b: _Builder) -> None:
    cluster = _cluster(b, b.p.get("cluster"))
    for t in b.p["tasks"] if b.op == "DescribeTasks" else [b.p["task"]]:
        b.add(f"ecs:{b.op}", _task(b, cluster, t), {"ecs:cluster": cluster})


@_on("ecs", "TagResource", "ListTagsForResource")
def _ecs_tags(b: _Builder) -> None:
    b.add(f"ecs:{b.op}", b.p["resourceArn"], request_tags(tag_map(b.p.get("tags"))))


_unscoped("ecs", {op: f"ecs:{op}" for op in ("ListClusters", "DescribeTaskDefinition", "DeregisterTaskDefinition",
                                             "ListTaskDefinitions", "ListTaskDefinitionFamilies")})
_unscoped("ecs", {"ListServices": "ecs:ListServices"}, lambda b: {"ecs:cluster": _cluster(b, b.p.get("cluster"))})


# --- ecr --------------------------------------------------------------------------------

ECR_REPOSITORY_OPS = ("DescribeRepositories", "GetLifecyclePolicy", "PutLifecyclePolicy", "ListTagsForResource",
                      "TagResource", "PutImageScanningConfiguration", "PutImageTagMutability", "DescribeImages",
                      "BatchCheckLayerAvailability", "InitiateLayerUpload", "UploadLayerPart",
                      "CompleteLayerUpload", "PutImage", "BatchGetImage", "GetDownloadUrlForLayer", "DeleteRepository")


def _repository(b: _Builder, name: str) -> str:
    return b.arn("ecr", f"repository/{name}", account=b.p.get("registryId"))


@_on("ecr", *ECR_REPOSITORY_OPS)
def _ecr_repository(b: _Builder) -> None:
    if b.op in ("TagResource", "ListTagsForResource"):
        arns = [b.p["resourceArn"]]
    elif b.op == "DescribeRepositories":
        # Without names it lists every repository of the registry.
        arns = [_repository(b, n) for n in b.p.get("repositoryNames") or ["*"]]
    else:
        arns = [_repository(b, b.p["repositoryName"])]
    for arn in arns:
        b.add(f"ecr:{b.op}", arn, request_tags(tag_map(b.p.get("tags"))))


@_on("ecr", "CreateRepository")
def _create_repository(b: _Builder) -> None:
    arn, tags = _repository(b, b.p["repositoryName"]), tag_map(b.p.get("tags"))
    b.add("ecr:CreateRepository", arn, request_tags(tags), new=True)
    if tags:
        b.tag_on_create("ecr:TagResource", arn, tags)


_unscoped("ecr", {"GetAuthorizationToken": "ecr:GetAuthorizationToken"})


# --- logs -------------------------------------------------------------------------------

def _log_group(b: _Builder, name: str) -> str:
    return b.arn("logs", f"log-group:{name}")


def _log_group_as_authorized(b: _Builder, name: str) -> str:
    # CloudWatch Logs authorizes its log-group-level (name-addressed) actions on
    # "log-group:NAME:log-stream:" (AWS's AccessDenied messages show it), so only a policy
    # resource like "log-group:NAME:*" matches, not the bare group ARN.
    return f"{_log_group(b, name)}:log-stream:"


def _group_name(b: _Builder) -> str:
    ident = b.p.get("logGroupName") or b.p["logGroupIdentifier"]
    return ident.split(":log-group:")[-1].removesuffix(":*")


@_on("logs", "CreateLogGroup")
def _create_log_group(b: _Builder) -> None:
    name, tags = b.p["logGroupName"], tag_map(b.p.get("tags"))
    b.add("logs:CreateLogGroup", _log_group_as_authorized(b, name), request_tags(tags), new=True)
    if tags:  # AWS: "CreateLogGroup with Tags ... logs:TagResource is required"
        b.tag_on_create("logs:TagResource", _log_group(b, name), tags)


@_on("logs", "PutRetentionPolicy", "DescribeLogStreams", "DeleteLogGroup")
def _log_group_ops(b: _Builder) -> None:
    name = _group_name(b)
    b.add(f"logs:{b.op}", _log_group_as_authorized(b, name), tags_arn=_log_group(b, name))


@_on("logs", "CreateLogStream", "PutLogEvents", "GetLogEvents")
def _log_stream_ops(b: _Builder) -> None:
    name = _group_name(b)
    b.add(f"logs:{b.op}", f"{_log_group(b, name)}:log-stream:{b.p['logStreamName']}", tags_arn=_log_group(b, name))


@_on("logs", "TagResource", "ListTagsForResource")
def _logs_tags(b: _Builder) -> None:
    b.add(f"logs:{b.op}", b.p["resourceArn"].removesuffix(":*"), request_tags(tag_map(b.p.get("tags"))))


_unscoped("logs", {"DescribeLogGroups": "logs:DescribeLogGroups"})


# --- sqs --------------------------------------------------------------------------------

def _queue(b: _Builder, url: str) -> str:
    parts = urlsplit(url)
    account, name = parts.path.strip("/").split("/")[-2:]
    m = re.match(r"sqs\.([a-z0-9-]+)\.", parts.hostname or "")
    region = m.group(1) if m else b.ctx.region
    return f"arn:{b.ctx.partition}:sqs:{region}:{account}:{name}"


@_on("sqs", "GetQueueAttributes", "SetQueueAttributes", "ListQueueTags", "TagQueue", "ReceiveMessage",
     "DeleteMessage", "ChangeMessageVisibility", "SendMessage", "DeleteQueue")
def _queue_ops(b: _Builder) -> None:
    b.add(f"sqs:{b.op}", _queue(b, b.p["QueueUrl"]), request_tags(tag_map(b.p.get("Tags"))))


@_on("sqs", "GetQueueUrl")
def _queue_url(b: _Builder) -> None:
    b.add("sqs:GetQueueUrl", b.arn("sqs", b.p["QueueName"], account=b.p.get("QueueOwnerAWSAccountId")))


@_on("sqs", "CreateQueue")
def _create_queue(b: _Builder) -> None:
    arn, tags = b.arn("sqs", b.p["QueueName"]), tag_map(b.p.get("tags"))
    b.add("sqs:CreateQueue", arn, request_tags(tags), new=True)
    if tags:
        b.tag_on_create("sqs:TagQueue", arn, tags)


_unscoped("sqs", {"ListQueues": "sqs:ListQueues"})


# --- events -----------------------------------------------------------------------------

def _rule(b: _Builder, name: str) -> str:
    if name.startswith("arn:"):
        return name
    bus = (b.p.get("EventBusName") or "default").rsplit("/", 1)[-1]
    return b.arn("events", f"rule/{name}" if bus == "default" else f"rule/{bus}/{name}")


@_on("events", "DescribeRule", "ListTargetsByRule", "PutTargets", "RemoveTargets", "DeleteRule")
def _rule_ops(b: _Builder) -> None:
    context: dict[str, Any] = {}
    if b.op == "PutTargets":
        context["events:TargetArn"] = [t["Arn"] for t in b.p["Targets"]]
    b.add(f"events:{b.op}", _rule(b, b.p.get("Name") or b.p["Rule"]), context)
    for t in b.p.get("Targets") or []:
        if t.get("RoleArn"):
            b.pass_role(t["RoleArn"], "events.amazonaws.com", f"Targets[{t['Id']}].RoleArn")


@_on("events", "PutRule")
def _put_rule(b: _Builder) -> None:
    arn, tags = _rule(b, b.p["Name"]), tag_map(b.p.get("Tags"))
    context: dict[str, Any] = {}
    pattern = json.loads(b.p["EventPattern"]) if b.p.get("EventPattern") else {}
    for field, key in (("source", "events:source"), ("detail-type", "events:detail-type")):
        if isinstance(pattern.get(field), list) and all(isinstance(v, str) for v in pattern[field]):
            context[key] = list(pattern[field])
    b.add("events:PutRule", arn, {**context, **request_tags(tags)})  # creates, or updates an existing rule
    if tags:
        b.tag_on_create("events:TagResource", arn, tags)
    if b.p.get("RoleArn"):
        b.pass_role(b.p["RoleArn"], "events.amazonaws.com", "RoleArn")


@_on("events", "TagResource", "ListTagsForResource")
def _events_tags(b: _Builder) -> None:
    b.add(f"events:{b.op}", b.p["ResourceARN"], request_tags(tag_map(b.p.get("Tags"))))


_unscoped("events", {"ListRules": "events:ListRules"})


# --- secretsmanager ---------------------------------------------------------------------

def _secret(b: _Builder, secret_id: str) -> tuple[str, dict[str, Any]]:
    """ARN and version context. ECS task definitions reference a JSON key of a secret as
    ARN:KEY:STAGE:VERSION (empty parts allowed); the secret is the first 7 fields."""
    if secret_id.startswith("arn:"):
        fields = secret_id.split(":")
        _key, stage, version = (fields[7:] + ["", "", ""])[:3]
        context = {k: v for k, v in (("secretsmanager:VersionStage", stage), ("secretsmanager:VersionId", version))
                   if v}
        return ":".join(fields[:7]), context
    return b.lookup("secret-arn", secret_id) or b.arn("secretsmanager", f"secret:{secret_id}-??????"), {}


@_on("secretsmanager", "DescribeSecret", "GetSecretValue", "PutSecretValue", "UpdateSecret", "TagResource",
     "DeleteSecret", "RestoreSecret")
def _secret_ops(b: _Builder) -> None:
    arn, context = _secret(b, b.p["SecretId"])
    context["secretsmanager:SecretId"] = arn
    for param, key in (("VersionStage", "secretsmanager:VersionStage"), ("VersionId", "secretsmanager:VersionId"),
                       ("Description", "secretsmanager:Description")):
        if b.p.get(param):
            context[key] = b.p[param]
    b.add(f"secretsmanager:{b.op}", arn, {**context, **request_tags(tag_map(b.p.get("Tags")))})


@_on("secretsmanager", "CreateSecret")
def _create_secret(b: _Builder) -> None:
    arn, tags = b.arn("secretsmanager", f"secret:{b.p['Name']}-??????"), tag_map(b.p.get("Tags"))
    context = {"secretsmanager:Name": b.p["Name"]}
    if b.p.get("Description"):
        context["secretsmanager:Description"] = b.p["Description"]
    b.add("secretsmanager:CreateSecret", arn, {**context, **request_tags(tags)}, new=True)
    if tags:
        b.tag_on_create("secretsmanager:TagResource", arn, tags)


# --- iam --------------------------------------------------------------------------------

IAM_ROLE_OPS = ("GetRole", "ListRolePolicies", "GetRolePolicy", "ListAttachedRolePolicies", "ListRoleTags",
                "UpdateAssumeRolePolicy", "UpdateRole", "TagRole", "PutRolePolicy", "DeleteRolePolicy",
                "AttachRolePolicy", "DetachRolePolicy", "PutRolePermissionsBoundary", "DeleteRole",
                "ListInstanceProfilesForRole")
# Actions on which IAM supplies the role's *current* permissions boundary.
IAM_BOUNDARY_CHECKED = {"PutRolePolicy", "DeleteRolePolicy", "AttachRolePolicy", "DetachRolePolicy"}
IAM_POLICY_OPS = ("GetPolicy", "GetPolicyVersion", "ListPolicyVersions", "ListPolicyTags", "CreatePolicyVersion",
                  "DeletePolicyVersion", "TagPolicy", "DeletePolicy", "ListEntitiesForPolicy")
IAM_OIDC_OPS = ("GetOpenIDConnectProvider", "AddClientIDToOpenIDConnectProvider", "TagOpenIDConnectProvider",
                "DeleteOpenIDConnectProvider")


def _role(b: _Builder, name: str) -> str:
    return b.lookup("role-arn", name) or b.arn("iam", f"role/{name}", regional=False)


@_on("iam", *IAM_ROLE_OPS)
def _role_ops(b: _Builder) -> None:
    arn = _role(b, b.p["RoleName"])
    context = request_tags(tag_map(b.p.get("Tags")))
    if b.op == "PutRolePermissionsBoundary":
        context["iam:PermissionsBoundary"] = b.p["PermissionsBoundary"]
    elif b.op in IAM_BOUNDARY_CHECKED and b.lookup("role-boundary", arn):
        context["iam:PermissionsBoundary"] = b.lookup("role-boundary", arn)
    if b.p.get("PolicyArn"):
        context["iam:PolicyARN"] = b.p["PolicyArn"]
    b.add(f"iam:{b.op}", arn, context)


@_on("iam", "RemoveRoleFromInstanceProfile")
def _remove_from_profile(b: _Builder) -> None:
    b.add("iam:RemoveRoleFromInstanceProfile",
          b.arn("iam", f"instance-profile/{b.p['InstanceProfileName']}", regional=False))


@_on("iam", "CreateRole")
def _create_role(b: _Builder) -> None:
    arn = b.arn("iam", f"role{b.p.get('Path') or '/'}{b.p['RoleName']}", regional=False)
    tags = tag_map(b.p.get("Tags"))
    context = request_tags(tags)
    if b.p.get("PermissionsBoundary"):
        context["iam:PermissionsBoundary"] = b.p["PermissionsBoundary"]
    b.add("iam:CreateRole", arn, context, new=True)
    if tags:
        b.tag_on_create("iam:TagRole", arn, tags)


@_on("iam", *IAM_POLICY_OPS)
def _policy_ops(b: _Builder) -> None:
    b.add(f"iam:{b.op}", b.p["PolicyArn"], request_tags(tag_map(b.p.get("Tags"))))


@_on("iam", "CreatePolicy")
def _create_policy(b: _Builder) -> None:
    arn = b.arn("iam", f"policy{b.p.get('Path') or '/'}{b.p['PolicyName']}", regional=False)
    tags = tag_map(b.p.get("Tags"))
    b.add("iam:CreatePolicy", arn, request_tags(tags), new=True)
    if tags:
        b.tag_on_create("iam:TagPolicy", arn, tags)


@_on("iam", *IAM_OIDC_OPS)
def _oidc_ops(b: _Builder) -> None:
    b.add(f"iam:{b.op}", b.p["OpenIDConnectProviderArn"], request_tags(tag_map(b.p.get("Tags"))))


@_on("iam", "CreateOpenIDConnectProvider")
def _create_oidc(b: _Builder) -> None:
    host = b.p["Url"].split("://", 1)[-1].rstrip("/")
    arn, tags = b.arn("iam", f"oidc-provider/{host}", regional=False), tag_map(b.p.get("Tags"))
    b.add("iam:CreateOpenIDConnectProvider", arn, request_tags(tags), new=True)
    if tags:
        b.tag_on_create("iam:TagOpenIDConnectProvider", arn, tags)


_unscoped("iam", {"ListRoles": "iam:ListRoles", "ListOpenIDConnectProviders": "iam:ListOpenIDConnectProviders"})


# --- application-autoscaling ------------------------------------------------------------

def _scalable_target(b: _Builder) -> tuple[str, dict[str, Any]]:
    ns, rid, dim = b.p["ServiceNamespace"], b.p["ResourceId"], b.p["ScalableDimension"]
    if ns != "ecs":
        raise KeyError(f"application-autoscaling:{b.op} for namespace {ns!r}: only ecs is modelled")
    # The target's ARN carries a random id AWS assigns at registration.
    arn = b.lookup("scalable-target-arn", f"{ns}|{rid}|{dim}") or b.arn("application-autoscaling", "scalable-target/*")
    return arn, {"application-autoscaling:service-namespace": ns, "application-autoscaling:scalable-dimension": dim}


def _scaled_ecs_service(b: _Builder) -> None:
    # AWS documents that scaling an ECS service needs these on the service, for the caller.
    _, cluster, service = b.p["ResourceId"].split("/")
    cluster_arn = b.arn("ecs", f"cluster/{cluster}")
    for action in ("ecs:DescribeServices", "ecs:UpdateService"):
        b.add(action, b.arn("ecs", f"service/{cluster}/{service}"), {"ecs:cluster": cluster_arn},
              why=f"application-autoscaling:{b.op} on an ECS service")


@_on("application-autoscaling", "RegisterScalableTarget")
def _register_target(b: _Builder) -> None:
    arn, context = _scalable_target(b)
    tags = tag_map(b.p.get("Tags"))
    b.add("application-autoscaling:RegisterScalableTarget", arn, {**context, **request_tags(tags)})
    if tags:
        b.tag_on_create("application-autoscaling:TagResource", arn, tags)
    _scaled_ecs_service(b)
    b.service_linked_role("ecs.application-autoscaling.amazonaws.com",
                          "AWSServiceRoleForApplicationAutoScaling_ECSService")


@_on("application-autoscaling", "DeleteScalingPolicy", "DeregisterScalableTarget")
def _delete_scaling(b: _Builder) -> None:
    arn, context = _scalable_target(b)
    b.add(f"application-autoscaling:{b.op}", arn, context)


@_on("application-autoscaling", "PutScalingPolicy")
def _put_scaling_policy(b: _Builder) -> None:
    arn, context = _scalable_target(b)
    b.add("application-autoscaling:PutScalingPolicy", arn, context)
    _scaled_ecs_service(b)
    if b.p.get("PolicyType") == "TargetTrackingScaling":
        # Target tracking creates and reads its own alarms, named
        # TargetTracking-<ResourceId>-AlarmHigh-<uuid> / -AlarmLow-<uuid>: the uuid is unknown.
        alarms = b.arn("cloudwatch", f"alarm:TargetTracking-{b.p['ResourceId']}-*")
        for action in ("cloudwatch:PutMetricAlarm", "cloudwatch:DescribeAlarms"):
            b.add(action, alarms, new=True, why="application-autoscaling:PutScalingPolicy (target tracking alarms)")


_unscoped("application-autoscaling", {
    "DescribeScalableTargets": "application-autoscaling:DescribeScalableTargets",
    "DescribeScalingPolicies": "application-autoscaling:DescribeScalingPolicies",
})


# --- calls no boto3 client makes in our process -----------------------------------------

ECR_IMAGE = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/([^:@]+)")


def image_push_calls(principal: str, repository: str, registry_id: str | None = None) -> list[Call]:
    """What `docker push` to ECR is authorized as (the registry API maps onto these)."""
    repo = {"repositoryName": repository, **({"registryId": registry_id} if registry_id else {})}
    return [Call(principal, "ecr", "GetAuthorizationToken", {})] + [
        Call(principal, "ecr", op, repo) for op in (
            "BatchCheckLayerAvailability", "InitiateLayerUpload", "UploadLayerPart", "CompleteLayerUpload",
            "PutImage", "DescribeImages", "BatchGetImage")]


def task_start_calls(principal: str, task_definition: Mapping[str, Any], task_id: str = "TASK_ID") -> list[Call]:
    """What ECS does with a Fargate task's execution role at start: pull ECR images,
    create the awslogs group (when asked) and stream, write to it, read secrets."""
    calls: list[Call] = []
    for c in task_definition.get("containerDefinitions", []):
        m = ECR_IMAGE.match(c.get("image", ""))
        if m:
            repo = {"registryId": m.group(1), "repositoryName": m.group(3)}
            calls.append(Call(principal, "ecr", "GetAuthorizationToken", {}))
            calls += [Call(principal, "ecr", op, repo)
                      for op in ("BatchCheckLayerAvailability", "GetDownloadUrlForLayer", "BatchGetImage")]
        log = c.get("logConfiguration") or {}
        if log.get("logDriver") == "awslogs":
            opts = log.get("options", {})
            group = opts["awslogs-group"]
            stream = f"{opts.get('awslogs-stream-prefix', 'ecs')}/{c['name']}/{task_id}"
            if str(opts.get("awslogs-create-group", "")).lower() == "true":
                calls.append(Call(principal, "logs", "CreateLogGroup", {"logGroupName": group}))
            calls.append(Call(principal, "logs", "CreateLogStream", {"logGroupName": group, "logStreamName": stream}))
            calls.append(Call(principal, "logs", "PutLogEvents", {"logGroupName": group, "logStreamName": stream}))
        for s in c.get("secrets", []):
            if ":ssm:" in s["valueFrom"]:  # unmodelled: requests_for raises KeyError for it
                calls.append(Call(principal, "ssm", "GetParameters", {"Names": [s["valueFrom"]]}))
            else:
                calls.append(Call(principal, "secretsmanager", "GetSecretValue", {"SecretId": s["valueFrom"]}))
    return calls
