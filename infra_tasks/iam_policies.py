"""Least-privilege IAM documents for every role (pure data from names).

Each grant is scoped to this project's own resources by ARN or condition; `*` is used
only for actions AWS does not allow to be scoped (Describe/List calls,
ecr:GetAuthorizationToken, task-definition registration).
"""

from __future__ import annotations

from typing import Any

from .names import Account, Deployment
from .policy import allow, document

ECS_TASKS = "ecs-tasks.amazonaws.com"
TASK_EXECUTION_MANAGED = "arn:{partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"


def ecs_tasks_trust(acct: Account) -> dict[str, Any]:
    # The confused-deputy guard: only ECS tasks of this account may assume the role.
    return document({
        "Effect": "Allow",
        "Principal": {"Service": ECS_TASKS},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": acct.account_id}},
    })


def circleci_trust(acct: Account, branches: list[str] | None) -> dict[str, Any]:
    """Trust CircleCI's OIDC tokens of this org and project only.

    With `branches`, only CircleCI's v2 token of those branches matches
    (sub = org/ORG/project/PROJECT/user/USER/vcs-origin/ORIGIN/vcs-ref/refs/heads/BRANCH);
    without, any job of the project (pull requests included) may assume the role.
    """
    org, project = acct.cfg.circleci.org_id, acct.cfg.circleci.project_id
    host = acct.oidc_host
    base = f"org/{org}/project/{project}/user/*"
    subs = [f"{base}/vcs-origin/*/vcs-ref/refs/heads/{b}" for b in branches] if branches else [base]
    return document({
        "Effect": "Allow",
        "Principal": {"Federated": acct.oidc_provider_arn},
        "Action": ["sts:AssumeRoleWithWebIdentity", "sts:TagSession"],
        "Condition": {
            "StringEquals": {f"{host}:aud": org},
            "StringLike": {f"{host}:sub": subs},
        },
    })


def secret_read(acct: Account) -> dict[str, Any]:
    return document(allow("secretsmanager:GetSecretValue", acct.secret_arn_pattern, sid="PrefectCredentials"))


def agent_task(d: Deployment) -> dict[str, Any]:
    a = d.account
    task_arn = a.arn("ecs", f"task/{d.cluster}/*")
    on_cluster = {"ArnEquals": {"ecs:cluster": d.cluster_arn}}
    return document(
        allow(["ecs:RunTask"], a.arn("ecs", "task-definition/*"), sid="RunFlowsOnOwnCluster", condition=on_cluster),
        allow(["ecs:StopTask", "ecs:DescribeTasks"], task_arn, sid="ManageOwnTasks"),
        allow(["ecs:RegisterTaskDefinition", "ecs:DeregisterTaskDefinition", "ecs:DescribeTaskDefinition",
               "ecs:ListTaskDefinitions"], "*", sid="FlowTaskDefinitions"),
        allow(["ecs:TagResource"], [a.arn("ecs", "task-definition/*"), task_arn], sid="TagOnCreate",
              condition={"StringEquals": {"ecs:CreateAction": ["RunTask", "RegisterTaskDefinition"]}}),
        allow(["ecs:DescribeClusters"], d.cluster_arn, sid="DescribeOwnCluster"),
        allow(["ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"], "*", sid="NetworkLookup"),
        allow(["iam:PassRole"], [a.role_arn(d.flow_exec_role), a.role_arn(d.flow_task_role)], sid="PassFlowRoles",
              condition={"StringEquals": {"iam:PassedToService": ECS_TASKS}}),
        allow(["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes",
               "sqs:GetQueueUrl"], d.queue_arn, sid="TaskStateObserver"),
        allow(["logs:GetLogEvents", "logs:DescribeLogStreams"],
              [d.log_group_arn(d.flow_log_group), d.log_group_arn(d.flow_log_group) + ":*"], sid="ReadFlowLogs"),
    )


def flow_execution(d: Deployment) -> dict[str, Any]:
    a = d.account
    return document(
        allow(["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
              a.ecr_repository_arn, sid="PullFlowImages"),
        allow(["ecr:GetAuthorizationToken"], "*", sid="EcrLogin"),
        allow(["logs:CreateLogStream", "logs:PutLogEvents"], d.log_group_arn(d.flow_log_group) + ":*", sid="FlowLogs"),
        allow(["secretsmanager:GetSecretValue"], a.secret_arn_pattern, sid="PrefectCredentials"),
    )


def flow_task(d: Deployment, extra: list[dict[str, Any]]) -> dict[str, Any]:
    return document(
        allow(["s3:ListBucket", "s3:GetBucketLocation"], d.bucket_arn, sid="ListFlowBucket"),
        allow(["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], f"{d.bucket_arn}/*", sid="FlowBucketObjects"),
        *extra,
    )


def _scopes(a: Account) -> dict[str, list[str]]:
    p = a.prefix
    return {
        "role": [a.arn("iam", f"role/{p}-*", region=False)],
        "oidc": [a.oidc_provider_arn],
        "bucket": [f"arn:{a.partition}:s3:::{p}-*"],
        "ecr": [a.ecr_repository_arn],
        "logs": [a.arn("logs", f"log-group:/ecs/{p}-*")],
        "secret": [a.secret_arn_pattern],
        "sqs": [a.arn("sqs", f"{p}-*")],
        "events": [a.arn("events", f"rule/{p}-*")],
        "ecs": [a.arn("ecs", f"cluster/{p}-*"), a.arn("ecs", f"service/{p}-*"),
                a.arn("ecs", f"task-definition/{p}-*"), a.arn("ecs", "capacity-provider/*")],
    }


def infra_read(a: Account) -> dict[str, Any]:
    """What plan and drift check need: read-only, scoped where AWS allows it."""
    s = _scopes(a)
    return document(
        allow(["iam:GetRole", "iam:GetRolePolicy", "iam:ListRolePolicies", "iam:ListAttachedRolePolicies",
               "iam:ListRoleTags"], s["role"], sid="ReadRoles"),
        allow(["iam:GetOpenIDConnectProvider", "iam:ListOpenIDConnectProviderTags"], s["oidc"], sid="ReadOidc"),
        allow(["iam:ListOpenIDConnectProviders"], "*", sid="ListOidc"),
        allow(["s3:GetBucketVersioning", "s3:GetBucketPublicAccessBlock", "s3:GetEncryptionConfiguration",
               "s3:GetBucketPolicy", "s3:GetLifecycleConfiguration", "s3:GetBucketTagging",
               "s3:GetBucketLocation", "s3:ListBucket"], s["bucket"], sid="ReadBuckets"),
        allow(["ecr:DescribeRepositories", "ecr:GetLifecyclePolicy", "ecr:ListTagsForResource",
               "ecr:DescribeImages"], s["ecr"], sid="ReadRegistry"),
        allow(["logs:DescribeLogGroups"], "*", sid="ListLogGroups"),
        allow(["logs:ListTagsForResource", "logs:ListTagsLogGroup"], s["logs"], sid="ReadLogGroups"),
        allow(["secretsmanager:DescribeSecret"], s["secret"], sid="ReadSecretMetadata"),
        allow(["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ListQueueTags"], s["sqs"], sid="ReadQueues"),
        allow(["events:DescribeRule", "events:ListTargetsByRule", "events:ListTagsForResource"], s["events"],
              sid="ReadRules"),
        allow(["ecs:DescribeClusters", "ecs:DescribeServices", "ecs:ListTagsForResource"],
              s["ecs"], sid="ReadEcs"),
        allow(["ecs:DescribeTaskDefinition", "ecs:ListClusters", "ecs:ListServices", "ecs:ListTaskDefinitionFamilies",
               "iam:ListRoles", "sqs:ListQueues", "s3:ListAllMyBuckets", "events:ListRules", "ec2:DescribeVpcs",
               "ec2:DescribeSubnets",
               "ec2:DescribeSecurityGroups", "ec2:DescribeSecurityGroupRules",
               "application-autoscaling:DescribeScalableTargets",
               "application-autoscaling:DescribeScalingPolicies"], "*", sid="UnscopableReads"),
    )


def infra_write(a: Account) -> dict[str, Any]:
    """What bootstrap and updates need on top of read: create/update, never delete,
    and only resources named with this project's prefix."""
    s = _scopes(a)
    read = infra_read(a)["Statement"]
    return document(
        *read,
        allow(["iam:CreateRole", "iam:UpdateRole", "iam:UpdateAssumeRolePolicy", "iam:PutRolePolicy",
               "iam:DeleteRolePolicy", "iam:AttachRolePolicy", "iam:DetachRolePolicy", "iam:TagRole"],
              s["role"], sid="WriteRoles"),
        allow(["iam:PassRole"], s["role"], sid="PassOwnRoles",
              condition={"StringEquals": {"iam:PassedToService": [ECS_TASKS, "ecs.amazonaws.com"]}}),
        allow(["iam:CreateOpenIDConnectProvider", "iam:TagOpenIDConnectProvider",
               "iam:AddClientIDToOpenIDConnectProvider"], s["oidc"], sid="WriteOidc"),
        allow(["iam:CreateServiceLinkedRole"], a.arn("iam", "role/aws-service-role/*", region=False),
              sid="EcsServiceLinkedRoles",
              condition={"StringEquals": {"iam:AWSServiceName": [
                  "ecs.amazonaws.com", "ecs.application-autoscaling.amazonaws.com"]}}),
        allow(["s3:CreateBucket", "s3:PutBucketVersioning", "s3:PutBucketPublicAccessBlock",
               "s3:PutEncryptionConfiguration", "s3:PutBucketPolicy", "s3:PutLifecycleConfiguration",
               "s3:PutBucketTagging"], s["bucket"], sid="WriteBuckets"),
        allow(["ecr:CreateRepository", "ecr:PutLifecyclePolicy", "ecr:PutImageScanningConfiguration",
               "ecr:PutImageTagMutability", "ecr:TagResource"], s["ecr"], sid="WriteRegistry"),
        allow(["logs:CreateLogGroup", "logs:PutRetentionPolicy", "logs:TagResource", "logs:TagLogGroup"],
              s["logs"], sid="WriteLogGroups"),
        allow(["secretsmanager:CreateSecret", "secretsmanager:PutSecretValue", "secretsmanager:TagResource"],
              s["secret"], sid="WriteSecret"),
        allow(["sqs:CreateQueue", "sqs:SetQueueAttributes", "sqs:TagQueue"], s["sqs"], sid="WriteQueues"),
        allow(["events:PutRule", "events:PutTargets", "events:TagResource"], s["events"], sid="WriteRules"),
        allow(["ecs:CreateCluster", "ecs:UpdateCluster", "ecs:UpdateClusterSettings",
               "ecs:PutClusterCapacityProviders", "ecs:CreateService", "ecs:UpdateService", "ecs:TagResource"],
              s["ecs"], sid="WriteEcs"),
        allow(["ecs:RegisterTaskDefinition", "application-autoscaling:RegisterScalableTarget",
               "application-autoscaling:PutScalingPolicy", "ec2:CreateSecurityGroup",
               "ec2:AuthorizeSecurityGroupEgress", "ec2:RevokeSecurityGroupEgress",
               "ec2:RevokeSecurityGroupIngress", "ec2:CreateTags"], "*", sid="UnscopableWrites"),
    )


def ci_deploy(a: Account) -> dict[str, Any]:
    """CircleCI on protected branches: push images, register flow task definitions and
    pass the flow roles to them."""
    roles = [a.role_arn(a.deployment(t).flow_exec_role) for t in a.cfg.env(a.env_name).deployment_types]
    roles += [a.role_arn(a.deployment(t).flow_task_role) for t in a.cfg.env(a.env_name).deployment_types]
    return document(
        allow(["ecr:GetAuthorizationToken"], "*", sid="EcrLogin"),
        allow(["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
               "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage",
               "ecr:DescribeImages"], a.ecr_repository_arn, sid="PushImages"),
        allow(["ecs:RegisterTaskDefinition", "ecs:ListTaskDefinitions", "ecs:DescribeTaskDefinition",
               "ecs:DeregisterTaskDefinition"], "*", sid="FlowTaskDefinitions"),
        allow(["iam:PassRole"], roles, sid="PassFlowRoles",
              condition={"StringEquals": {"iam:PassedToService": ECS_TASKS}}),
    )
