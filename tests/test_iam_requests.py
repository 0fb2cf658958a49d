"""requests_for: captured AWS calls -> the IAM requests AWS authorizes for them.

Table tests pin the exact requests of representative calls; the SAR tests check that
every action emitted exists in the Service Authorization Reference and that its resource
matches one of that action's ARN templates (or is "*" exactly when the action has no
resource type), for the table, for the calls made outside our process (ECS worker, image
push, task start, flow result storage) and for everything a real production bootstrap,
an update, a plan and the drift check's discovery send on the wire.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Iterable

import botocore.session
import pytest

from infra_tasks import aws

from .conftest import PROD_ACCOUNT as A, REGION, ROOT
from .iam_requests import (AccountCtx, Call, Request, covered, image_push_calls, requests_for, sar,
                           task_start_calls)

CTX = AccountCtx(A, REGION)
TAGS = [{"Key": "managed-by", "Value": "me"}, {"Key": "team", "Value": "data"}]
ECS_TAGS = [{"key": "managed-by", "value": "me"}, {"key": "team", "value": "data"}]
RT = {"aws:RequestTag/managed-by": "me", "aws:RequestTag/team": "data", "aws:TagKeys": ["managed-by", "team"]}
PASS_TO_ECS = {"iam:PassedToService": "ecs-tasks.amazonaws.com"}


def arn(service: str, resource: str) -> str:
    region = "" if service == "iam" else REGION
    return f"arn:aws:{service}:{region}:{A}:{resource}"


CLUSTER = arn("ecs", "cluster/c")
ON_CLUSTER = {"ecs:cluster": CLUSTER}
TASK_ROLE, EXEC_ROLE = arn("iam", "role/flow-task"), arn("iam", "role/flow-exec")
SERVICE = arn("ecs", "service/c/agent")
SECRET = arn("secretsmanager", "secret:data-flows/prefect-credentials-AbCdEf")
QUEUE_URL = f"http://127.0.0.1:5000/{A}/events"  # the emulator's form of https://sqs.REGION.amazonaws.com/ACCOUNT/NAME


def lookups(facts: dict[tuple[str, str], str]) -> AccountCtx:
    return AccountCtx(A, REGION, lookup=lambda kind, key: facts.get((kind, key)))


def c(service_: str, operation_: str, **params: Any) -> Call:
    return Call("someone", service_, operation_, params)


CASES = [
    # --- sts / s3 ------------------------------------------------------------------------
    (c("sts", "GetCallerIdentity"), []),
    (c("s3", "HeadBucket", Bucket="b"), [("s3:ListBucket", "arn:aws:s3:::b", {})]),
    (c("s3", "GetBucketEncryption", Bucket="b"), [("s3:GetEncryptionConfiguration", "arn:aws:s3:::b", {})]),
    (c("s3", "PutBucketEncryption", Bucket="b", ServerSideEncryptionConfiguration={}),
     [("s3:PutEncryptionConfiguration", "arn:aws:s3:::b", {})]),
    (c("s3", "GetPublicAccessBlock", Bucket="b"), [("s3:GetBucketPublicAccessBlock", "arn:aws:s3:::b", {})]),
    (c("s3", "PutBucketLifecycleConfiguration", Bucket="b", LifecycleConfiguration={}),
     [("s3:PutLifecycleConfiguration", "arn:aws:s3:::b", {})]),
    (c("s3", "ListObjectsV2", Bucket="b", Prefix="results/"),
     [("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "results/"})]),
    (c("s3", "HeadObject", Bucket="b", Key="results/x"), [("s3:GetObject", "arn:aws:s3:::b/results/x", {})]),
    (c("s3", "GetObject", Bucket="b", Key="k", VersionId="v1"),
     [("s3:GetObjectVersion", "arn:aws:s3:::b/k", {"s3:versionid": "v1"})]),
    (c("s3", "PutObject", Bucket="b", Key="results/x", Body="..."), [("s3:PutObject", "arn:aws:s3:::b/results/x", {})]),
    (c("s3", "DeleteObject", Bucket="b", Key="results/x"), [("s3:DeleteObject", "arn:aws:s3:::b/results/x", {})]),
    (c("s3", "ListBuckets"), [("s3:ListAllMyBuckets", "*", {})]),
    # --- ecs -----------------------------------------------------------------------------
    (c("ecs", "RegisterTaskDefinition", family="flow", taskRoleArn=TASK_ROLE, executionRoleArn=EXEC_ROLE,
       cpu="1024", memory="2048", requiresCompatibilities=["FARGATE"], containerDefinitions=[], tags=ECS_TAGS),
     [("ecs:RegisterTaskDefinition", arn("ecs", "task-definition/flow:*"),
       {"ecs:task-cpu": "1024", "ecs:task-memory": "2048", "ecs:compute-compatibility": ["FARGATE"], **RT}),
      ("iam:PassRole", TASK_ROLE, PASS_TO_ECS),
      ("iam:PassRole", EXEC_ROLE, PASS_TO_ECS),
      ("ecs:TagResource", arn("ecs", "task-definition/flow:*"), {"ecs:CreateAction": "RegisterTaskDefinition", **RT})]),
    # The prefect-aws worker's RunTask: a task-definition ARN, a task role override, flow-run tags.
    (c("ecs", "RunTask", cluster=CLUSTER, taskDefinition=arn("ecs", "task-definition/flow:3"), launchType="FARGATE",
       overrides={"taskRoleArn": TASK_ROLE, "containerOverrides": []}, tags=ECS_TAGS),
     [("ecs:RunTask", arn("ecs", "task-definition/flow:3"), {**ON_CLUSTER, **RT}),
      ("iam:PassRole", TASK_ROLE, PASS_TO_ECS),
      ("ecs:TagResource", arn("ecs", "task/c/*"), {"ecs:CreateAction": "RunTask", **RT})]),
    # A bare family runs its latest ACTIVE revision: resolved by lookup, else FAMILY:*.
    (c("ecs", "RunTask", cluster="c", taskDefinition="flow"), [("ecs:RunTask", arn("ecs", "task-definition/flow:*"),
                                                                ON_CLUSTER)]),
    (c("ecs", "RunTask", cluster="c", taskDefinition="flow"), [("ecs:RunTask", arn("ecs", "task-definition/flow:7"),
                                                                ON_CLUSTER)],
     lookups({("task-definition-arn", "flow"): arn("ecs", "task-definition/flow:7")})),
    (c("ecs", "StopTask", cluster=CLUSTER, task="0123abcd"),
     [("ecs:StopTask", arn("ecs", "task/c/0123abcd"), ON_CLUSTER)]),
    (c("ecs", "DescribeTasks", cluster=CLUSTER, tasks=[arn("ecs", "task/c/1"), "2"], include=["TAGS"]),
     [("ecs:DescribeTasks", arn("ecs", "task/c/1"), ON_CLUSTER),
      ("ecs:DescribeTasks", arn("ecs", "task/c/2"), ON_CLUSTER)]),
    (c("ecs", "DescribeTaskDefinition", taskDefinition="flow"), [("ecs:DescribeTaskDefinition", "*", {})]),
    (c("ecs", "DeregisterTaskDefinition", taskDefinition="flow:3"), [("ecs:DeregisterTaskDefinition", "*", {})]),
    (c("ecs", "CreateService", cluster="c", serviceName="agent", taskDefinition=arn("ecs", "task-definition/agent:1"),
       launchType="FARGATE", propagateTags="SERVICE", enableECSManagedTags=True, tags=ECS_TAGS,
       networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-1"], "assignPublicIp": "DISABLED"}}),
     [("ecs:CreateService", SERVICE,
       {**ON_CLUSTER, "ecs:task-definition": arn("ecs", "task-definition/agent:1"), "ecs:enable-ecs-managed-tags": True,
        "ecs:propagate-tags": "SERVICE", "ecs:auto-assign-public-ip": False, **RT}),
      ("ecs:TagResource", SERVICE, {"ecs:CreateAction": "CreateService", **RT})]),
    (c("ecs", "UpdateService", cluster="c", service="agent", desiredCount=2),
     [("ecs:UpdateService", SERVICE, ON_CLUSTER)]),
    (c("ecs", "CreateCluster", clusterName="c", tags=ECS_TAGS),
     [("ecs:CreateCluster", CLUSTER, RT), ("ecs:TagResource", CLUSTER, {"ecs:CreateAction": "CreateCluster", **RT}),
      ("iam:CreateServiceLinkedRole", arn("iam", "role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS"),
       {"iam:AWSServiceName": "ecs.amazonaws.com"})],
     lookups({("service-linked-role", "ecs.amazonaws.com"): "missing"})),
    (c("ecs", "DescribeServices", cluster="c", services=["agent"]),
     [("ecs:DescribeServices", SERVICE,
       {**ON_CLUSTER, "aws:ResourceTag/team": "data", "ecs:ResourceTag/team": "data"})],
     AccountCtx(A, REGION, tags_of=lambda a: {"team": "data"} if a == SERVICE else None)),
    # --- ec2 -----------------------------------------------------------------------------
    (c("ec2", "DescribeVpcs", Filters=[]), [("ec2:DescribeVpcs", "*", {"ec2:Region": REGION})]),
    (c("ec2", "CreateSecurityGroup", GroupName="g", Description="d", VpcId="vpc-1",
       TagSpecifications=[{"ResourceType": "security-group", "Tags": TAGS}]),
     [("ec2:CreateSecurityGroup", arn("ec2", "security-group/*"), {"ec2:Region": REGION, **RT}),
      ("ec2:CreateSecurityGroup", arn("ec2", "vpc/vpc-1"), {"ec2:Region": REGION, "ec2:VpcID": "vpc-1"}),
      ("ec2:CreateTags", arn("ec2", "security-group/*"),
       {"ec2:Region": REGION, "ec2:CreateAction": "CreateSecurityGroup", **RT})]),
    (c("ec2", "AuthorizeSecurityGroupEgress", GroupId="sg-1", IpPermissions=[]),
     [("ec2:AuthorizeSecurityGroupEgress", arn("ec2", "security-group/sg-1"),
       {"ec2:Region": REGION, "ec2:SecurityGroupID": "sg-1", "ec2:Vpc": arn("ec2", "vpc/vpc-1")})],
     lookups({("sg-vpc", "sg-1"): "vpc-1"})),
    # --- iam -----------------------------------------------------------------------------
    (c("iam", "CreateRole", RoleName="r", AssumeRolePolicyDocument="{}", Tags=TAGS,
       PermissionsBoundary=arn("iam", "policy/boundary")),
     [("iam:CreateRole", arn("iam", "role/r"), {**RT, "iam:PermissionsBoundary": arn("iam", "policy/boundary")}),
      ("iam:TagRole", arn("iam", "role/r"), RT)]),
    (c("iam", "PutRolePolicy", RoleName="r", PolicyName="p", PolicyDocument="{}"),
     [("iam:PutRolePolicy", arn("iam", "role/r"), {"iam:PermissionsBoundary": arn("iam", "policy/boundary")})],
     lookups({("role-boundary", arn("iam", "role/r")): arn("iam", "policy/boundary")})),
    (c("iam", "CreatePolicy", PolicyName="boundary", PolicyDocument="{}", Tags=TAGS),
     [("iam:CreatePolicy", arn("iam", "policy/boundary"), RT), ("iam:TagPolicy", arn("iam", "policy/boundary"), RT)]),
    (c("iam", "CreateOpenIDConnectProvider", Url="https://oidc.circleci.com/org/o", ClientIDList=["o"], Tags=TAGS),
     [("iam:CreateOpenIDConnectProvider", arn("iam", "oidc-provider/oidc.circleci.com/org/o"), RT),
      ("iam:TagOpenIDConnectProvider", arn("iam", "oidc-provider/oidc.circleci.com/org/o"), RT)]),
    # --- logs ----------------------------------------------------------------------------
    (c("logs", "CreateLogGroup", logGroupName="/ecs/g", tags={"managed-by": "me", "team": "data"}),
     [("logs:CreateLogGroup", arn("logs", "log-group:/ecs/g:log-stream:"), RT),
      ("logs:TagResource", arn("logs", "log-group:/ecs/g"), RT)]),
    (c("logs", "PutRetentionPolicy", logGroupName="/ecs/g", retentionInDays=30),
     [("logs:PutRetentionPolicy", arn("logs", "log-group:/ecs/g:log-stream:"), {})]),
    (c("logs", "GetLogEvents", logGroupName="/ecs/g", logStreamName="flows/prefect/1", limit=10),
     [("logs:GetLogEvents", arn("logs", "log-group:/ecs/g:log-stream:flows/prefect/1"), {})]),
    # --- sqs / events --------------------------------------------------------------------
    (c("sqs", "CreateQueue", QueueName="events", tags={"managed-by": "me", "team": "data"}),
     [("sqs:CreateQueue", arn("sqs", "events"), RT), ("sqs:TagQueue", arn("sqs", "events"), RT)]),
    (c("sqs", "ReceiveMessage", QueueUrl=QUEUE_URL, WaitTimeSeconds=20),
     [("sqs:ReceiveMessage", arn("sqs", "events"), {})]),
    (c("sqs", "DeleteMessage", QueueUrl=f"https://sqs.eu-west-1.amazonaws.com/{A}/q", ReceiptHandle="h"),
     [("sqs:DeleteMessage", f"arn:aws:sqs:eu-west-1:{A}:q", {})]),
    (c("sqs", "GetQueueUrl", QueueName="events"), [("sqs:GetQueueUrl", arn("sqs", "events"), {})]),
    (c("events", "PutRule", Name="r", State="ENABLED", Tags=TAGS,
       EventPattern=json.dumps({"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"]})),
     [("events:PutRule", arn("events", "rule/r"),
       {"events:source": ["aws.ecs"], "events:detail-type": ["ECS Task State Change"], **RT}),
      ("events:TagResource", arn("events", "rule/r"), RT)]),
    (c("events", "PutTargets", Rule="r", Targets=[{"Id": "q", "Arn": arn("sqs", "events")}]),
     [("events:PutTargets", arn("events", "rule/r"), {"events:TargetArn": [arn("sqs", "events")]})]),
    # --- secretsmanager ------------------------------------------------------------------
    (c("secretsmanager", "CreateSecret", Name="data-flows/prefect-credentials", SecretString="{}", Tags=TAGS),
     [("secretsmanager:CreateSecret", arn("secretsmanager", "secret:data-flows/prefect-credentials-??????"),
       {"secretsmanager:Name": "data-flows/prefect-credentials", **RT}),
      ("secretsmanager:TagResource", arn("secretsmanager", "secret:data-flows/prefect-credentials-??????"), RT)]),
    # The ECS agent reads one JSON key of the secret: ARN:KEY:: names the secret ARN.
    (c("secretsmanager", "GetSecretValue", SecretId=f"{SECRET}:PREFECT_API_KEY::"),
     [("secretsmanager:GetSecretValue", SECRET, {"secretsmanager:SecretId": SECRET})]),
    (c("secretsmanager", "DescribeSecret", SecretId="data-flows/prefect-credentials"),
     [("secretsmanager:DescribeSecret", SECRET, {"secretsmanager:SecretId": SECRET})],
     lookups({("secret-arn", "data-flows/prefect-credentials"): SECRET})),
    # --- ecr -----------------------------------------------------------------------------
    (c("ecr", "CreateRepository", repositoryName="data-flows", tags=TAGS),
     [("ecr:CreateRepository", arn("ecr", "repository/data-flows"), RT),
      ("ecr:TagResource", arn("ecr", "repository/data-flows"), RT)]),
    (c("ecr", "PutImage", repositoryName="data-flows", imageManifest="{}", imageTag="t"),
     [("ecr:PutImage", arn("ecr", "repository/data-flows"), {})]),
    (c("ecr", "GetAuthorizationToken"), [("ecr:GetAuthorizationToken", "*", {})]),
    # --- application-autoscaling --------------------------------------------------------
    (c("application-autoscaling", "RegisterScalableTarget", ServiceNamespace="ecs", ResourceId="service/c/agent",
       ScalableDimension="ecs:service:DesiredCount", MinCapacity=1, MaxCapacity=2),
     [("application-autoscaling:RegisterScalableTarget", arn("application-autoscaling", "scalable-target/*"),
       {"application-autoscaling:service-namespace": "ecs",
        "application-autoscaling:scalable-dimension": "ecs:service:DesiredCount"}),
      ("ecs:DescribeServices", SERVICE, ON_CLUSTER),
      ("ecs:UpdateService", SERVICE, ON_CLUSTER)]),
    (c("application-autoscaling", "PutScalingPolicy", PolicyName="cpu", ServiceNamespace="ecs",
       ResourceId="service/c/agent", ScalableDimension="ecs:service:DesiredCount", PolicyType="TargetTrackingScaling",
       TargetTrackingScalingPolicyConfiguration={}),
     [("application-autoscaling:PutScalingPolicy", arn("application-autoscaling", "scalable-target/0123abcd"),
       {"application-autoscaling:service-namespace": "ecs",
        "application-autoscaling:scalable-dimension": "ecs:service:DesiredCount"}),
      ("ecs:DescribeServices", SERVICE, ON_CLUSTER),
      ("ecs:UpdateService", SERVICE, ON_CLUSTER),
      ("cloudwatch:PutMetricAlarm", arn("cloudwatch", "alarm:TargetTracking-service/c/agent-*"), {}),
      ("cloudwatch:DescribeAlarms", arn("cloudwatch", "alarm:TargetTracking-service/c/agent-*"), {})],
     lookups({("scalable-target-arn", "ecs|service/c/agent|ecs:service:DesiredCount"):
              arn("application-autoscaling", "scalable-target/0123abcd")})),
]


def case_id(case: tuple[Any, ...]) -> str:
    return f"{case[0].service}:{case[0].operation}"


@pytest.mark.parametrize("case", CASES, ids=[case_id(x) for x in CASES])
def test_requests(case: tuple[Any, ...]) -> None:
    call, expected, ctx = (*case, CTX)[:3]
    got = requests_for(call, ctx)
    assert [(r.action, r.resource, dict(r.context)) for r in got] == expected
    assert all(r.principal == "someone" and r.why for r in got)


# --- calls made outside our process --------------------------------------------------------

WORKER = "flow-agent-task"
BUCKET = f"data-flows-main-flows-{A}"
# What the prefect-aws 0.7.12 ECS worker and its observer send (workers/ecs_worker.py, observers/ecs.py).
WORKER_CALLS = [
    Call(WORKER, "ec2", "DescribeVpcs", {"Filters": [{"Name": "isDefault", "Values": ["true"]}]}),
    Call(WORKER, "ec2", "DescribeSubnets", {"Filters": [{"Name": "vpc-id", "Values": ["vpc-1"]}]}),
    Call(WORKER, "ecs", "DescribeTaskDefinition", {"taskDefinition": "flow"}),
    Call(WORKER, "ecs", "ListTaskDefinitions", {"familyPrefix": "flow"}),
    Call(WORKER, "ecs", "RegisterTaskDefinition", {
        "family": "prefect_flow", "executionRoleArn": EXEC_ROLE, "taskRoleArn": TASK_ROLE, "cpu": "1024",
        "memory": "2048", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
        "containerDefinitions": [{"name": "prefect", "image": f"{A}.dkr.ecr.{REGION}.amazonaws.com/data-flows:t"}]}),
    Call(WORKER, "ecs", "RunTask", {
        "cluster": CLUSTER, "taskDefinition": arn("ecs", "task-definition/prefect_flow:1"), "launchType": "FARGATE",
        "overrides": {"containerOverrides": [{"name": "prefect"}], "taskRoleArn": TASK_ROLE,
                      "executionRoleArn": EXEC_ROLE},
        "tags": [{"key": "prefect.io/flow-run-id", "value": "f"}]}),
    Call(WORKER, "ecs", "DescribeTasks", {"cluster": CLUSTER, "tasks": [arn("ecs", "task/c/1")], "include": ["TAGS"]}),
    Call(WORKER, "ecs", "StopTask", {"cluster": CLUSTER, "task": arn("ecs", "task/c/1"), "reason": "stop"}),
    Call(WORKER, "ecs", "DeregisterTaskDefinition", {"taskDefinition": arn("ecs", "task-definition/prefect_flow:1")}),
    Call(WORKER, "sqs", "GetQueueUrl", {"QueueName": "events"}),
    Call(WORKER, "sqs", "GetQueueAttributes", {"QueueUrl": QUEUE_URL, "AttributeNames": ["All"]}),
    Call(WORKER, "sqs", "ReceiveMessage", {"QueueUrl": QUEUE_URL, "MaxNumberOfMessages": 1}),
    Call(WORKER, "sqs", "ChangeMessageVisibility", {"QueueUrl": QUEUE_URL, "ReceiptHandle": "h",
                                                    "VisibilityTimeout": 30}),
    Call(WORKER, "sqs", "DeleteMessage", {"QueueUrl": QUEUE_URL, "ReceiptHandle": "h"}),
    Call(WORKER, "logs", "GetLogEvents", {"logGroupName": "/ecs/g", "logStreamName": "s/prefect/1", "limit": 50}),
]
# A flow run's result storage through prefect-aws's S3Bucket block (upload_fileobj / download_fileobj).
RESULT_STORAGE_CALLS = [Call("flow-task", "s3", op, {"Bucket": BUCKET, **extra}) for op, extra in (
    ("PutObject", {"Key": "results/r"}), ("HeadObject", {"Key": "results/r"}), ("GetObject", {"Key": "results/r"}),
    ("ListObjectsV2", {"Prefix": "results/"}), ("DeleteObject", {"Key": "results/r"}),
    ("CreateMultipartUpload", {"Key": "big"}), ("UploadPart", {"Key": "big", "UploadId": "u", "PartNumber": 1}),
    ("CompleteMultipartUpload", {"Key": "big", "UploadId": "u"}))]


def agent_task_definition(create_group: bool = False) -> dict[str, Any]:
    from infra_tasks.ecs_taskdef import agent_taskdef

    td = agent_taskdef(family="data-flows-main-agent", cpu=1024, memory=2048,
                       image=f"{A}.dkr.ecr.{REGION}.amazonaws.com/data-flows:prefect-agent-0.1.0", pool="p",
                       exec_role_arn=EXEC_ROLE, task_role_arn=TASK_ROLE, secret_arn=SECRET, log_group="/ecs/g",
                       region=REGION, queue_name="events")
    if create_group:
        td["containerDefinitions"][0]["logConfiguration"]["options"]["awslogs-create-group"] = "true"
    return td


def test_task_start_of_the_agent() -> None:
    calls = task_start_calls("agent-exec", agent_task_definition(create_group=True), task_id="t1")
    got = [(r.action, r.resource) for call in calls for r in requests_for(call, CTX)]
    repo = arn("ecr", "repository/data-flows")
    stream = arn("logs", "log-group:/ecs/g:log-stream:agent/prefect-worker/t1")
    assert got == [
        ("ecr:GetAuthorizationToken", "*"), ("ecr:BatchCheckLayerAvailability", repo),
        ("ecr:GetDownloadUrlForLayer", repo), ("ecr:BatchGetImage", repo),
        ("logs:CreateLogGroup", arn("logs", "log-group:/ecs/g:log-stream:")),
        ("logs:CreateLogStream", stream), ("logs:PutLogEvents", stream),
        ("secretsmanager:GetSecretValue", SECRET), ("secretsmanager:GetSecretValue", SECRET),
    ]


def test_image_push() -> None:
    actions = [r.action for call in image_push_calls("ci-push", "data-flows") for r in requests_for(call, CTX)]
    assert actions == ["ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload",
                       "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage", "ecr:DescribeImages",
                       "ecr:BatchGetImage"]


def test_unknown_operation_fails_loudly() -> None:
    with pytest.raises(KeyError, match="ecs:DeleteCapacityProvider"):
        requests_for(c("ecs", "DeleteCapacityProvider", capacityProvider="c"), CTX)
    with pytest.raises(KeyError, match="application-autoscaling:RegisterScalableTarget.*'dynamodb'"):
        requests_for(c("application-autoscaling", "RegisterScalableTarget", ServiceNamespace="dynamodb",
                       ResourceId="table/t", ScalableDimension="dynamodb:table:ReadCapacityUnits"), CTX)


def test_serialized_request_is_refused() -> None:
    # botocore's before-call event passes the HTTP request as `params`, not the API parameters.
    with pytest.raises(TypeError, match="before-parameter-build"):
        requests_for(c("ecs", "DescribeClusters", url_path="/", body=b"{}", headers={}, method="POST"), CTX)


# --- the Service Authorization Reference ---------------------------------------------------

PLACEHOLDERS = {"Partition": r"aws(-cn|-us-gov)?", "Region": r"[a-z]{2}(-[a-z]+)+-\d", "Account": r"\d{12}",
                "ObjectName": r".+"}


@functools.lru_cache(maxsize=None)
def template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"\$\{(\w+)\}", template)
    return re.compile("".join(re.escape(p) if i % 2 == 0 else PLACEHOLDERS.get(p, r"[^:]+")
                              for i, p in enumerate(parts)) + r"\Z")


# Resource types AWS added to an action after parliament 1.6.4's copy of the SAR was taken.
# s3:TagResource on general purpose buckets: CreateBucket's `CreateBucketConfiguration.Tags`
# and S3 Control's TagResource documentation (2025).
SAR_SINCE_SNAPSHOT: dict[str, list[str]] = {
    "s3:TagResource": ["arn:${Partition}:s3:::${BucketName}"],
}


def sar_problem(r: Request) -> str | None:
    if any(template_regex(t).match(r.resource) for t in SAR_SINCE_SNAPSHOT.get(r.action, ())):
        return None
    prefix, name = r.action.split(":")
    svc = sar().get(prefix)
    priv = next((p for p in svc["privileges"] if p["privilege"] == name), None) if svc else None
    if priv is None:
        return f"{r.action} is not in the SAR"
    templates = {x["resource"]: x["arn"] for x in svc["resources"]}
    types = [t["resource_type"].rstrip("*") for t in priv["resource_types"] if t["resource_type"]]
    if not types:
        return None if r.resource == "*" else f"{r.action} has no resource type but got {r.resource}"
    resource = r.resource
    if prefix == "logs" and resource.endswith(":log-stream:"):
        resource = resource.removesuffix(":log-stream:")  # how Logs authorizes group-level actions
    if any(template_regex(templates[t]).match(resource) for t in types):
        return None
    return f"{r.action} on {r.resource} matches none of {[templates[t] for t in types]}"


def sar_problems(calls: Iterable[Call], ctx: AccountCtx = CTX) -> list[str]:
    problems = []
    for call in calls:
        problems += [f"{call.service}:{call.operation} -> {p}" for r in requests_for(call, ctx)
                     if (p := sar_problem(r))]
    return sorted(set(problems))


def test_table_and_outside_calls_conform_to_the_sar() -> None:
    outside = [*WORKER_CALLS, *RESULT_STORAGE_CALLS, *image_push_calls("ci-push", "data-flows"),
               *task_start_calls("agent-exec", agent_task_definition(create_group=True))]
    assert sar_problems([case[0] for case in CASES]) == []
    assert sar_problems(outside) == []


def test_sar_check_catches_a_wrong_arn() -> None:
    assert sar_problem(Request("s3:GetObject", "arn:aws:s3:::bucket-only", {}))
    assert sar_problem(Request("ecs:ListClusters", arn("ecs", "cluster/c"), {}))
    assert sar_problem(Request("iam:GetRole", "*", {}))
    assert sar_problem(Request("ecs:RunTask", arn("ecs", "task-definition/no-revision"), {}))


def test_bootstrap_update_plan_and_discovery_conform_to_the_sar(bootstrap, cfg) -> None:
    from infra_tasks import discovery
    from infra_tasks.desired import owner_value

    calls: list[Call] = []

    def record(model: Any = None, params: Any = None, **_: Any) -> None:
        clean = json.loads(json.dumps(params, default=str))
        calls.append(Call("bootstrap", model.service_model.service_name, model.name, clean))

    aws.add_handler("before-parameter-build", record)
    try:
        assert bootstrap("--yes") == 0
        # Changed settings exercise the update paths (tags, new revision, retention, scaling, ...).
        changed = ("--set", "default_tags.team=platform", "--set", "agent.cpu=2048", "--set", "agent.memory=4096",
                   "--set", "logs.retention_days=60", "--set", "agent.max_count=3",
                   "--set", "ecr.tag_mutability=MUTABLE")
        assert bootstrap("--yes", *changed) == 0
        assert bootstrap("--plan", *changed) == 0
        discovery.owned(cfg, "production", owner_value(cfg))
    finally:
        aws.remove_handler(record)

    ops = {(x.service, x.operation) for x in calls}
    assert {("ecs", "RegisterTaskDefinition"), ("iam", "TagRole"), ("ec2", "CreateTags"),
            ("application-autoscaling", "PutScalingPolicy"), ("iam", "ListRoles")} <= ops
    assert sar_problems(calls) == []
    passed = {r.resource for x in calls if x.operation == "RegisterTaskDefinition"
              for r in requests_for(x, CTX) if r.action == "iam:PassRole"}
    assert passed == {arn("iam", f"role/data-flows-{t}-agent-{k}")
                      for t in ("staging", "main") for k in ("exec", "task")}


# --- every call in the source is covered --------------------------------------------------

def _source_files() -> list[Path]:
    import prefect_aws

    site = Path(prefect_aws.__file__).parent
    return [*sorted((ROOT / "infra_tasks").glob("*.py")), *sorted((ROOT / "flows").glob("*.py")),
            *sorted((ROOT / "deployments").glob("*.py")), site / "workers" / "ecs_worker.py",
            site / "observers" / "ecs.py"]


WAITERS = {("ecs", "services_stable"): "DescribeServices"}


def called_operations(path: Path) -> set[tuple[str, str]]:
    """(service, operation) of every boto3 client method the file calls or passes on (our
    `call("Op", key, ecs.create_cluster, ...)`), for the services whose clients it creates
    (`client("ecs")`, `get_client("ec2")`, `create_client("sqs")`)."""
    text = path.read_text()
    services = set(re.findall(r"(?:client|get_client|create_client)\(\s*\"([a-z0-9-]+)\"", text))
    names = set(re.findall(r"\.([a-z][a-z0-9_]*)", text))
    names |= set(re.findall(r"(?:paginate\(\w+,|get_paginator\()\s*\"([a-z_]+)\"", text))
    found = set()
    session = botocore.session.get_session()
    for service in services:
        ops = {botocore.xform_name(op): op for op in session.get_service_model(service).operation_names}
        found |= {(service, ops[n]) for n in names if n in ops}
        found |= {(service, op) for n in re.findall(r"get_waiter\(\"([a-z_]+)\"\)", text)
                  if (op := WAITERS.get((service, n)))}
    return found


def test_every_call_in_the_source_is_covered() -> None:
    seen = {f"{p.parent.name}/{p.name}": called_operations(p) for p in _source_files()}
    missing = {name: sorted(ops - covered()) for name, ops in seen.items() if ops - covered()}
    assert missing == {}
    assert ("ec2", "RevokeSecurityGroupEgress") in seen["infra_tasks/ec2.py"]
    assert ("ecs", "RunTask") in seen["workers/ecs_worker.py"]
    assert ("sqs", "ReceiveMessage") in seen["observers/ecs.py"]
