"""What the IAM evaluation needs to know about the emulated account: a role's effective
policies as deployed (inline, attached managed, boundary), temporary credentials of a
role, and the resource facts (tags, ids, boundaries) AWS puts in a request's context."""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from botocore.exceptions import ClientError

from .conftest import PROD_ACCOUNT, REGION
from .iam_requests import AccountCtx

Boto = Callable[[str], Any]


def _doc(raw: Any) -> dict[str, Any]:
    return json.loads(raw) if isinstance(raw, str) else raw


def managed_document(iam: Any, arn: str) -> dict[str, Any]:
    if ":aws:policy/" in arn:
        from .iam_eval import MANAGED_POLICIES

        return MANAGED_POLICIES[arn]
    pol = iam.get_policy(PolicyArn=arn)["Policy"]
    return _doc(iam.get_policy_version(PolicyArn=arn, VersionId=pol["DefaultVersionId"])["PolicyVersion"]["Document"])


def effective_policies(boto: Boto, role: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The role's identity policies and its permissions boundary, read back from IAM."""
    iam = boto("iam")
    names = iam.list_role_policies(RoleName=role)["PolicyNames"]
    docs = [_doc(iam.get_role_policy(RoleName=role, PolicyName=n)["PolicyDocument"]) for n in names]
    docs += [managed_document(iam, p["PolicyArn"])
             for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]]
    arn = (iam.get_role(RoleName=role)["Role"].get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
    return docs, (managed_document(iam, arn) if arn else None)


def trust_policy(boto: Boto, role: str) -> dict[str, Any]:
    return _doc(boto("iam").get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"])


def assume(boto: Boto, role: str) -> dict[str, str]:
    """Temporary credentials of `role` (the emulator attributes them to its account)."""
    c = boto("sts").assume_role(RoleArn=f"arn:aws:iam::{PROD_ACCOUNT}:role/{role}", RoleSessionName="test")
    k = c["Credentials"]
    return {"AWS_ACCESS_KEY_ID": k["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": k["SecretAccessKey"],
            "AWS_SESSION_TOKEN": k["SessionToken"]}


def account_ctx(boto: Boto, account: str = PROD_ACCOUNT) -> AccountCtx:
    """Resource facts read from the emulator when a request needs them."""
    ec2, ecs, iam = boto("ec2"), boto("ecs"), boto("iam")

    def tags_of(arn: str) -> Mapping[str, str] | None:
        try:
            if ":security-group/" in arn:
                groups = ec2.describe_security_groups(GroupIds=[arn.rsplit("/", 1)[1]])["SecurityGroups"]
                return {t["Key"]: t["Value"] for t in groups[0].get("Tags", [])}
            if ":ecs:" in arn and not arn.endswith("*"):
                return {t["key"]: t["value"] for t in ecs.list_tags_for_resource(resourceArn=arn).get("tags", [])}
        except ClientError:
            return None
        return None

    def lookup(kind: str, key: str) -> str | None:
        try:
            if kind == "sg-vpc":
                return ec2.describe_security_groups(GroupIds=[key])["SecurityGroups"][0]["VpcId"]
            if kind == "default-vpc":
                vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
                return vpcs[0]["VpcId"] if vpcs else None
            if kind == "role-arn":
                return iam.get_role(RoleName=key)["Role"]["Arn"]
            if kind == "role-boundary":
                role = iam.get_role(RoleName=key.rsplit("/", 1)[1])["Role"]
                return (role.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn", "")
            if kind == "secret-arn":
                return boto("secretsmanager").describe_secret(SecretId=key)["ARN"]
            if kind == "task-definition-arn":
                return ecs.describe_task_definition(taskDefinition=key)["taskDefinition"]["taskDefinitionArn"]
            if kind == "scalable-target-arn":
                namespace, resource, dimension = key.split("|")
                found = boto("application-autoscaling").describe_scalable_targets(
                    ServiceNamespace=namespace, ResourceIds=[resource], ScalableDimension=dimension)
                targets = found["ScalableTargets"]
                return targets[0].get("ScalableTargetARN") if targets else None
            if kind == "service-linked-role":
                return "exists"
        except (ClientError, KeyError, IndexError):
            return None
        return None

    return AccountCtx(account, REGION, "aws", tags_of=tags_of, lookup=lookup)
