"""Every project role evaluated, as AWS would, against the calls its job really makes,
and against calls it must never be able to make.

The jobs run for real against the emulator and are captured on the wire (botocore's
`before-parameter-build`), each labelled with the role that would make it on AWS. A
delete's resource is gone by the time it is evaluated, so the prune's calls are evaluated
with the tags their resources had when each call was made (AWS reads them then). Each
call becomes the IAM requests AWS authorizes for it (`iam_requests`: the action, the exact
resource ARN, condition keys, and dependent authorizations such as iam:PassRole or
tag-on-create) and is evaluated (`iam_eval`) against the role's policies and boundary as
deployed (read back from IAM). The agent's and the execution roles' evaluations are in
test_worker_runtime (the real prefect-aws worker), the flow task role's in
test_flow_results (a real flow run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import Any, Iterator, Mapping

import pytest
from botocore.exceptions import ClientError

from infra_tasks import aws, discovery, emulator
from infra_tasks.desired import owner_value

from . import test_drift
from .conftest import P, PROD_ACCOUNT, REGION, boto_maker, clean_prefect, run_cli
from .iam_capture import recording
from .iam_eval import Request, evaluate, evaluate_trust, explain_denials
from .iam_requests import AccountCtx, Call, image_push_calls, requests_for
from .iam_world import account_ctx, effective_policies, trust_policy

A = PROD_ACCOUNT
ARN = f"arn:aws:iam::{A}"
OWNER = f"prefect-aws-stack/{P}"
ORG = "a1b2c3d4-0000-4000-8000-000000000001"
PROJECT = "a1b2c3d4-0000-4000-8000-000000000002"
HOST = f"oidc.circleci.com/org/{ORG}"
ORIGIN = "github.com/example-org/data-flows"
USER = "5b3c0d6e-1f2a-4b7c-8d9e-0a1b2c3d4e5f"


def sub(branch: str, origin: str = ORIGIN, user: str = USER, project: str = PROJECT) -> str:
    return f"org/{ORG}/project/{project}/user/{user}/vcs-origin/{origin}/vcs-ref/refs/heads/{branch}"


class Jobs:
    def __init__(self, boto: Any, calls: list[Call], tags_when_called: Mapping[str, Mapping[str, str] | None]) -> None:
        self.boto = boto
        self.calls = calls
        self.ctx = account_ctx(boto)
        now = self.ctx.tags_of
        self.deletes_ctx = dataclasses.replace(
            self.ctx, tags_of=lambda arn: tags_when_called[arn] if arn in tags_when_called else now(arn))

    def of(self, principal: str) -> list[Call]:
        return [c for c in self.calls if c.principal == principal]

    def requests(self, principal: str) -> list[Request]:
        ctx = self.deletes_ctx if principal == PRUNE else self.ctx
        return [r for c in self.of(principal) for r in requests_for(c, ctx)]


PRUNE = f"{P}-infra-prune"


def tags_now(boto: Any, ctx: AccountCtx) -> Any:
    """A resource's tags by ARN, read now: also roles, queues and rules (the world's
    reader knows security groups and ECS resources)."""
    iam, sqs, events = boto("iam"), boto("sqs"), boto("events")

    def read(arn: str) -> Mapping[str, str] | None:
        kind = arn.split(":")[2]
        name = arn.rsplit("/", 1)[-1] if kind != "sqs" else arn.rsplit(":", 1)[-1]
        try:
            if kind == "iam" and ":role/" in arn:
                return {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=name)["Tags"]}
            if kind == "sqs":
                return sqs.list_queue_tags(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"]).get("Tags", {})
            if kind == "events":
                return {t["Key"]: t["Value"] for t in events.list_tags_for_resource(ResourceARN=arn)["Tags"]}
        except ClientError:
            return None
        return ctx.tags_of(arn) if ctx.tags_of else None
    return read


@contextlib.contextmanager
def tags_when_called(boto: Any) -> Iterator[dict[str, Mapping[str, str] | None]]:
    """The tags of every resource each call in this block addresses, read as the call is
    made (before it is sent), by ARN: what AWS sees when it authorizes a delete."""
    seen: dict[str, Mapping[str, str] | None] = {}
    ctx = account_ctx(boto)
    read = tags_now(boto, ctx)

    def remember(arn: str) -> Mapping[str, str] | None:
        if arn not in seen:
            seen[arn] = read(arn)
        return seen[arn]

    reading = dataclasses.replace(ctx, tags_of=remember, lookup=None)  # the ARNs are enough to find the tags

    def hook(model: Any = None, params: Any = None, **_: Any) -> None:
        requests_for(Call("", model.service_model.service_name, model.name,
                          json.loads(json.dumps(params, default=str))), reading)
    aws.add_handler("before-parameter-build", hook)
    try:
        yield seen
    finally:
        aws.remove_handler(hook)


def prune_staging() -> None:
    """What the infra-prune flow runs after approval (the drift check's --prune too) once
    the configuration no longer has the staging type; without the Prefect lock."""
    from flows.teardown import teardown_infra

    overrides = {"environments": {"production": {"deployment_types": ["main"]}}}
    result = teardown_infra(env="production", overrides=overrides, include_prefect=False, unmanaged_only=True)
    assert len(result["deleted"]) == 12, result


@pytest.fixture(scope="module")
def jobs(moto_url: str, prefect_api: None) -> Iterator[Jobs]:
    """One production stack; each job of the control plane run once, as its role."""
    from infra_tasks.config import load_config

    emulator.reset(moto_url)
    clean_prefect()
    with emulator.sandbox_env(moto_url, A, REGION), recording() as rec:
        boto = boto_maker(moto_url)
        assert run_cli("--env", "production", "--yes", "--no-prefect") == 0  # an administrator's first run
        cfg = load_config()
        with rec.acting_as(f"{P}-infra-read"):  # plan and the drift check's discovery
            assert run_cli("--env", "production", "--plan", "--no-prefect") == 0
            owned, unlisted = discovery.owned(cfg, "production", owner_value(cfg))
            assert unlisted == {}
        for _, mutate, *_ in test_drift.CASES:  # every kind of out-of-band change at once
            mutate(boto)
        with rec.acting_as(f"{P}-infra-write"):  # the repair, then a UI-style settings change
            assert run_cli("--env", "production", "--yes", "--no-prefect") == 0
            assert run_cli("--env", "production", "--yes", "--no-prefect", "--set", "agent.cpu=2048",
                           "--set", "agent.memory=4096", "--set", "agent.max_count=3",
                           "--set", "logs.retention_days=60") == 0
        with rec.acting_as(PRUNE), tags_when_called(boto) as tags:  # staging no longer configured: pruned
            prune_staging()
        with rec.acting_as(f"{P}-ci-deploy"):  # staging configured again: CI's apply re-creates it
            assert run_cli("--env", "production", "--yes", "--no-prefect") == 0
        iam = boto("iam")
        iam.update_assume_role_policy(RoleName=f"{P}-staging-flow-exec", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
                                                    "Action": "sts:AssumeRole"}]}))
        iam.delete_role_policy(RoleName=f"{P}-staging-flow-task", PolicyName="flow-task")
        iam.delete_role(RoleName=f"{P}-staging-flow-task")
        boto("s3").delete_bucket(Bucket=f"{P}-staging-flows-{A}")  # empty: re-created tagged, in one call
        with rec.acting_as(f"{P}-ci-deploy"):  # CI's apply: a trust repair, a re-created role and bucket
            assert run_cli("--env", "production", "--yes", "--no-prefect") == 0
            assert run_cli("--env", "production", "--plan", "--no-prefect") == 0
        yield Jobs(boto, list(rec.calls), tags)


def assert_allowed(jobs: Jobs, role: str, requests: list[Request], policies_of: str | None = None) -> None:
    policies, boundary = effective_policies(jobs.boto, policies_of or role)
    assert requests, f"{role}: no calls captured"
    denied = explain_denials(policies, requests, boundary=boundary)
    assert denied == [], f"{role} would be denied on AWS:\n" + "\n".join(denied)


def test_read_role_can_plan_and_check_drift(jobs: Jobs) -> None:
    reqs = jobs.requests(f"{P}-infra-read")
    assert {r.action for r in reqs} >= {"iam:GetRole", "s3:GetBucketPolicy", "ecs:DescribeServices",
                                        "iam:ListRoles", "iam:GetPolicyVersion"}
    assert_allowed(jobs, f"{P}-infra-read", reqs)
    assert_allowed(jobs, f"{P}-ci-plan", reqs, policies_of=f"{P}-ci-plan")  # the same policy


def test_write_role_repairs_every_kind_of_drift_and_applies_updates(jobs: Jobs) -> None:
    reqs = jobs.requests(f"{P}-infra-write")
    mutating = {r.action for r in reqs if not r.action.split(":")[1].startswith(("Get", "List", "Describe"))}
    # The repair really exercised the writes (one per kind of drift in test_drift.CASES).
    assert mutating >= {"logs:PutRetentionPolicy", "logs:CreateLogGroup", "s3:PutBucketVersioning",
                        "s3:PutBucketPolicy", "iam:DeleteRolePolicy", "iam:PutRolePolicy",
                        "iam:PutRolePermissionsBoundary", "ec2:RevokeSecurityGroupIngress",
                        "sqs:SetQueueAttributes", "ecs:UpdateService", "ecs:RegisterTaskDefinition",
                        "iam:PassRole", "events:PutRule", "ecr:PutImageScanningConfiguration", "ecs:TagResource",
                        "application-autoscaling:RegisterScalableTarget"}
    assert_allowed(jobs, f"{P}-infra-write", reqs)


def test_ci_deploy_recreates_runtime_roles_and_repairs_trust(jobs: Jobs) -> None:
    reqs = jobs.requests(f"{P}-ci-deploy")
    assert {r.action for r in reqs} >= {"iam:CreateRole", "iam:UpdateAssumeRolePolicy", "iam:PutRolePolicy",
                                        "iam:TagRole", "s3:CreateBucket", "s3:TagResource",
                                        # the pruned type's security groups, service and queues, re-created
                                        "ec2:CreateSecurityGroup", "ecs:CreateService", "ecs:CreateCluster",
                                        "sqs:CreateQueue", "events:PutTargets"}
    # The security group's create is authorized on the new group (with its tags) and on its VPC.
    assert {r.resource.split(":")[-1].split("/")[0] for r in reqs if r.action == "ec2:CreateSecurityGroup"} == {
        "security-group", "vpc"}
    assert_allowed(jobs, f"{P}-ci-deploy", reqs)


def test_prune_role_deletes_what_is_no_longer_configured(jobs: Jobs) -> None:
    reqs = jobs.requests(PRUNE)
    deletes = [r for r in reqs if not r.action.split(":")[1].startswith(("Get", "List", "Describe"))]
    # Every delete the staging type's non-data resources need, and nothing else.
    assert {r.action for r in deletes} == {
        "iam:DeleteRolePolicy", "iam:DeleteRole", "sqs:DeleteQueue", "events:RemoveTargets", "events:DeleteRule",
        "ecs:UpdateService", "ecs:DeleteService", "ecs:DeleteCluster", "ec2:DeleteSecurityGroup",
        "ecs:DeregisterTaskDefinition"}
    assert [r for r in deletes if f"{P}-staging" not in r.resource and r.action not in (
        "ec2:DeleteSecurityGroup", "ecs:DeregisterTaskDefinition")] == []
    assert_allowed(jobs, PRUNE, reqs)


def test_ci_push_can_push_images(jobs: Jobs) -> None:
    calls = image_push_calls(f"{P}-ci-push", P)
    assert_allowed(jobs, f"{P}-ci-push", [r for c in calls for r in requests_for(c, jobs.ctx)])


# --- forbidden probes --------------------------------------------------------------------

def _r(action: str, resource: str, **context: Any) -> Request:
    return Request(action, resource, context)


STAGING_CLUSTER = f"arn:aws:ecs:{REGION}:{A}:cluster/{P}-staging"
MAIN_CLUSTER = f"arn:aws:ecs:{REGION}:{A}:cluster/{P}-main"
FOREIGN_SG = f"arn:aws:ec2:{REGION}:{A}:security-group/sg-0123456789abcdef0"
ADMIN_POLICY = "arn:aws:iam::aws:policy/AdministratorAccess"
PASS = {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
# What a resource of this environment carries (aws:ResourceTag/* as AWS supplies it).
OURS = {"aws:ResourceTag/managed-by": OWNER, "aws:ResourceTag/environment": "production"}
EVERYONE_DENIED = [
    _r("secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{REGION}:{A}:secret:other/secret-AbCdEf"),
    _r("iam:AttachRolePolicy", f"{ARN}:role/{P}-main-flow-task", **{"iam:PolicyARN": ADMIN_POLICY}),
    _r("iam:PutRolePolicy", f"{ARN}:role/{P}-infra-write"),
    _r("iam:PutRolePolicy", f"{ARN}:role/{P}-ci-deploy"),
    _r("iam:UpdateAssumeRolePolicy", f"{ARN}:role/{P}-ci-deploy"),
    _r("iam:CreateRole", f"{ARN}:role/{P}-anything"),
    _r("iam:DeleteRole", f"{ARN}:role/{P}-main-flow-task"),
    _r("iam:DeleteRolePermissionsBoundary", f"{ARN}:role/{P}-main-agent-task"),
    _r("iam:CreatePolicyVersion", f"{ARN}:policy/{P}-main-runtime-boundary"),
    _r("iam:CreateAccessKey", f"{ARN}:user/admin"),
    _r("s3:DeleteBucket", f"arn:aws:s3:::{P}-main-flows-{A}"),
    _r("s3:PutBucketPolicy", "arn:aws:s3:::other-team-bucket"),
    _r("ecs:DeleteCluster", MAIN_CLUSTER),
    _r("ecs:DeleteService", f"arn:aws:ecs:{REGION}:{A}:service/{P}-main/{P}-main-agent"),
    _r("ecs:UpdateService", f"arn:aws:ecs:{REGION}:{A}:service/other/other-service", **{"ecs:cluster": f"arn:aws:ecs:{REGION}:{A}:cluster/other"}),
    _r("ec2:AuthorizeSecurityGroupIngress", FOREIGN_SG, **{"aws:ResourceTag/managed-by": "someone-else"}),
    _r("ec2:RevokeSecurityGroupEgress", FOREIGN_SG),
    _r("logs:DeleteLogGroup", f"arn:aws:logs:{REGION}:{A}:log-group:/ecs/{P}-main/flows"),
    _r("sqs:DeleteQueue", f"arn:aws:sqs:{REGION}:{A}:{P}-main-ecs-events"),
    _r("secretsmanager:PutSecretValue", f"arn:aws:secretsmanager:{REGION}:{A}:secret:{P}/prefect-credentials-AbCdEf"),
    _r("iam:PassRole", f"{ARN}:role/other-team-admin", **PASS),
]
PROBES: dict[str, list[Request]] = {
    f"{P}-main-agent-task": [
        _r("ecs:RunTask", f"arn:aws:ecs:{REGION}:{A}:task-definition/x:1", **{"ecs:cluster": STAGING_CLUSTER}),
        _r("iam:PassRole", f"{ARN}:role/{P}-staging-flow-task", **PASS),
        _r("iam:PassRole", f"{ARN}:role/{P}-ci-deploy", **PASS),
        _r("iam:PassRole", f"{ARN}:role/{P}-main-flow-task", **{"iam:PassedToService": "lambda.amazonaws.com"}),
        _r("secretsmanager:GetSecretValue",
           f"arn:aws:secretsmanager:{REGION}:{A}:secret:{P}/prefect-credentials-AbCdEf"),
        _r("sqs:ReceiveMessage", f"arn:aws:sqs:{REGION}:{A}:{P}-staging-ecs-events"),
    ],
    f"{P}-staging-agent-task": [
        _r("iam:PassRole", f"{ARN}:role/{P}-infra-write", **PASS),
        _r("iam:PassRole", f"{ARN}:role/{P}-main-flow-exec", **PASS),
        _r("ecs:RunTask", f"arn:aws:ecs:{REGION}:{A}:task-definition/x:1", **{"ecs:cluster": MAIN_CLUSTER}),
    ],
    f"{P}-main-flow-task": [
        _r("s3:GetObject", f"arn:aws:s3:::{P}-staging-flows-{A}/results/x"),
        _r("s3:PutObject", "arn:aws:s3:::other-team-bucket/x"),
        _r("iam:PassRole", f"{ARN}:role/{P}-main-flow-task", **PASS),
        _r("secretsmanager:GetSecretValue",
           f"arn:aws:secretsmanager:{REGION}:{A}:secret:{P}/prefect-credentials-AbCdEf"),
    ],
    f"{P}-main-flow-exec": [
        _r("ecr:BatchGetImage", f"arn:aws:ecr:{REGION}:{A}:repository/other-repo"),
        _r("logs:PutLogEvents", f"arn:aws:logs:{REGION}:{A}:log-group:/ecs/{P}-staging/flows:log-stream:x"),
    ],
    f"{P}-infra-read": [
        _r("s3:PutBucketPolicy", f"arn:aws:s3:::{P}-main-flows-{A}"),
        _r("secretsmanager:GetSecretValue",
           f"arn:aws:secretsmanager:{REGION}:{A}:secret:{P}/prefect-credentials-AbCdEf"),
        _r("ecs:UpdateService", f"arn:aws:ecs:{REGION}:{A}:service/{P}-main/{P}-main-agent",
           **{"ecs:cluster": MAIN_CLUSTER}),
    ],
    f"{P}-infra-write": [
        _r("secretsmanager:GetSecretValue",
           f"arn:aws:secretsmanager:{REGION}:{A}:secret:{P}/prefect-credentials-AbCdEf"),
        # Without the boundary (or with another one) the runtime roles are out of reach.
        _r("iam:PutRolePolicy", f"{ARN}:role/{P}-main-agent-task"),
        _r("iam:PutRolePolicy", f"{ARN}:role/{P}-main-agent-task",
           **{"iam:PermissionsBoundary": f"{ARN}:policy/{P}-staging-runtime-boundary"}),
        _r("iam:CreateRole", f"{ARN}:role/{P}-main-flow-task",
           **{"iam:PermissionsBoundary": f"{ARN}:policy/{P}-main-runtime-boundary"}),
        _r("iam:UpdateAssumeRolePolicy", f"{ARN}:role/{P}-main-flow-task"),
        _r("iam:PassRole", f"{ARN}:role/{P}-infra-write", **PASS),
        _r("iam:PassRole", f"{ARN}:role/{P}-main-flow-task", **PASS),
        _r("events:PutTargets", f"arn:aws:events:{REGION}:{A}:rule/{P}-main-ecs-task-state",
           **{"events:TargetArn": [f"arn:aws:lambda:{REGION}:{A}:function:exfiltrate"]}),
        _r("ec2:CreateSecurityGroup", f"arn:aws:ec2:{REGION}:{A}:security-group/*",
           **{"aws:RequestTag/managed-by": "someone-else"}),
        _r("ecs:RegisterTaskDefinition", f"arn:aws:ecs:{REGION}:{A}:task-definition/other-family:*"),
    ],
    f"{P}-ci-deploy": [
        _r("iam:CreateRole", f"{ARN}:role/{P}-main-flow-task"),  # no boundary
        _r("iam:UpdateAssumeRolePolicy", f"{ARN}:role/{P}-infra-write"),
        _r("ecr:PutImage", f"arn:aws:ecr:{REGION}:{A}:repository/{P}"),  # that is ci-push's job
    ],
    f"{P}-ci-push": [
        _r("ecr:PutImage", f"arn:aws:ecr:{REGION}:{A}:repository/other-repo"),
        _r("ecs:UpdateService", f"arn:aws:ecs:{REGION}:{A}:service/{P}-main/{P}-main-agent",
           **{"ecs:cluster": MAIN_CLUSTER}),
        _r("s3:GetObject", f"arn:aws:s3:::{P}-main-flows-{A}/x"),
    ],
    PRUNE: [
        # Only a runtime role's name: never a control-plane role, even carrying our tags.
        *(_r("iam:DeleteRole", f"{ARN}:role/{P}-{r}", **OURS) for r in ("ci-deploy", "infra-write", "infra-prune")),
        _r("iam:DeleteRolePolicy", f"{ARN}:role/{P}-infra-read", **OURS),
        _r("iam:DeletePolicy", f"{ARN}:policy/{P}-staging-runtime-boundary", **OURS),
        _r("iam:DeleteOpenIDConnectProvider", f"{ARN}:oidc-provider/{HOST}", **OURS),
        # No data: bucket, objects, log groups, registry, secret.
        _r("s3:DeleteBucket", f"arn:aws:s3:::{P}-staging-flows-{A}", **OURS),
        _r("s3:DeleteObject", f"arn:aws:s3:::{P}-staging-flows-{A}/results/x"),
        _r("logs:DeleteLogGroup", f"arn:aws:logs:{REGION}:{A}:log-group:/ecs/{P}-staging/flows:log-stream:", **OURS),
        _r("ecr:DeleteRepository", f"arn:aws:ecr:{REGION}:{A}:repository/{P}", **OURS),
        _r("secretsmanager:DeleteSecret",
           f"arn:aws:secretsmanager:{REGION}:{A}:secret:{P}/prefect-credentials-AbCdEf", **OURS),
        # Another owner's, another environment's or untagged: even where the name is ours.
        _r("sqs:DeleteQueue", f"arn:aws:sqs:{REGION}:{A}:{P}-staging-ecs-events",
           **{**OURS, "aws:ResourceTag/managed-by": "someone-else"}),
        _r("ecs:DeleteCluster", STAGING_CLUSTER, **{**OURS, "aws:ResourceTag/environment": "dev"}),
        _r("iam:DeleteRole", f"{ARN}:role/{P}-staging-flow-task"),
        _r("ec2:DeleteSecurityGroup", FOREIGN_SG),
        _r("events:DeleteRule", f"arn:aws:events:{REGION}:{A}:rule/other-team-rule", **OURS),
        # Deletes only: no writes that widen or redirect.
        _r("iam:PutRolePolicy", f"{ARN}:role/{P}-staging-agent-task", **OURS),
        _r("iam:PassRole", f"{ARN}:role/{P}-main-flow-task", **PASS),
        _r("ecs:CreateService", f"arn:aws:ecs:{REGION}:{A}:service/{P}-main/x", **{"ecs:cluster": MAIN_CLUSTER}),
    ],
    f"{P}-ci-plan": [
        _r("s3:PutBucketVersioning", f"arn:aws:s3:::{P}-main-flows-{A}"),
        _r("ecr:PutImage", f"arn:aws:ecr:{REGION}:{A}:repository/{P}"),
    ],
}


@pytest.mark.parametrize("role", sorted(PROBES))
def test_forbidden_probes_are_denied(jobs: Jobs, role: str) -> None:
    policies, boundary = effective_policies(jobs.boto, role)
    for req in PROBES[role] + EVERYONE_DENIED:
        decision = evaluate(policies, req, boundary=boundary)
        assert not decision.allowed, f"{role} may {req.action} on {req.resource} {dict(req.context)}: " \
                                     f"{decision.reason}"


def test_scaling_another_teams_service_is_denied_by_its_dependent_check(jobs: Jobs) -> None:
    """Application Auto Scaling writes are scoped by namespace only, so registering another
    team's service is stopped by the ecs:UpdateService AWS requires on that service."""
    call = Call(f"{P}-infra-write", "application-autoscaling", "RegisterScalableTarget", {
        "ServiceNamespace": "ecs", "ResourceId": "service/other/other-service",
        "ScalableDimension": "ecs:service:DesiredCount", "MinCapacity": 0, "MaxCapacity": 0})
    policies, boundary = effective_policies(jobs.boto, f"{P}-infra-write")
    verdicts = {r.action: evaluate(policies, r, boundary=boundary).allowed for r in requests_for(call, jobs.ctx)}
    assert verdicts["ecs:UpdateService"] is False
    assert not all(verdicts.values())


# --- who may assume the CI roles ---------------------------------------------------------

def _oidc(subject: str, aud: str = ORG) -> Request:
    return Request("sts:AssumeRoleWithWebIdentity", f"{ARN}:role/x", {f"{HOST}:aud": aud, f"{HOST}:sub": subject},
                   principal={"Federated": f"{ARN}:oidc-provider/{HOST}"})


CRAFTED = [
    "feature/vcs-ref/refs/heads/main-v2",
    f"x/vcs-origin/{ORIGIN}/vcs-ref/refs/heads/main-v2",
    "main-v2/../main-v2",
]
TRUST = [
    # role, subject, allowed
    ("ci-deploy", sub("main-v2"), True),
    ("ci-deploy", sub("staging-v2"), False),   # staging pushes images, never applies infrastructure
    ("ci-deploy", sub("main-v2", origin="github.com/attacker/data-flows"), False),  # a fork
    ("ci-deploy", sub("main-v2", project="a1b2c3d4-0000-4000-8000-00000000ffff"), False),
    ("ci-push", sub("staging-v2"), True),
    ("ci-push", sub("main-v2"), True),
    ("ci-push", sub("feature-x"), False),
    ("ci-plan", sub("feature-x"), True),
    ("ci-plan", f"org/{ORG}/project/{PROJECT}/user/{USER}", True),
    ("ci-plan", sub("main-v2", project="a1b2c3d4-0000-4000-8000-00000000ffff"), False),
    *[(role, sub(branch), False) for role in ("ci-deploy", "ci-push") for branch in CRAFTED],
]


@pytest.mark.parametrize("role,subject,allowed", TRUST)
def test_ci_role_trust(jobs: Jobs, role: str, subject: str, allowed: bool) -> None:
    trust = trust_policy(jobs.boto, f"{P}-{role}")
    assert evaluate_trust(trust, _oidc(subject)).allowed is allowed
    assert not evaluate_trust(trust, _oidc(subject, aud="another-audience")).allowed


def test_runtime_roles_trust_only_this_accounts_ecs_tasks(jobs: Jobs) -> None:
    trust = trust_policy(jobs.boto, f"{P}-main-flow-task")
    ecs = {"Service": "ecs-tasks.amazonaws.com"}
    assert evaluate_trust(trust, Request("sts:AssumeRole", "*", {"aws:SourceAccount": A}, principal=ecs)).allowed
    assert not evaluate_trust(trust, Request("sts:AssumeRole", "*", {"aws:SourceAccount": "999999999999"},
                                             principal=ecs)).allowed
    assert not evaluate_trust(trust, Request("sts:AssumeRole", "*", {"aws:SourceAccount": A},
                                             principal={"AWS": f"arn:aws:iam::{A}:root"})).allowed
