"""Least-privilege IAM documents for every role (pure data from names).

Who may do what, and why (the README's "IAM roles" table says the same in prose):

- Runtime roles, per deployment type T: `agent-exec`, `agent-task`, `flow-exec`,
  `flow-task`. Each carries the permissions boundary `{prefix}-T-runtime-boundary`,
  the union of what the four may ever need, so whoever can write their inline policies
  still cannot give them more than that.
- `infra-read` (drift check, plan, and `ci-plan`): reads only.
- `infra-write` (`infra-update` runs, and part of `ci-deploy`): creates and updates this
  environment's resources, each named exactly; IAM writes only on the runtime roles'
  inline policies and only while they keep their boundary; never a delete of a resource,
  never a boundary policy, a control-plane role (ci-*, infra-*) or a managed policy.
- `infra-prune` (`infra-prune` runs, after a person's approval): `infra-read` plus the
  deletes a prune of what is no longer configured makes — runtime roles, queues, the
  rule, the agent service, cluster and security groups of a deployment type — each by
  the names a type's resources have AND carrying this environment's ownership tags. No
  data (buckets, log groups, the registry, the secret), no control-plane role, policy or
  OIDC provider. A separate role so that `infra-write` and CI stay delete-free.
- `ci-deploy` (the environment's apply branch only): `infra-write` plus creating the
  runtime roles (with their boundary) and updating their trust policies.
- `ci-push` (the environment's CI branches): push images to the repository.
- `ci-plan` (any job of the project, pull requests included): `infra-read`.

Changing the control-plane roles, the boundaries or the OIDC provider needs an
administrator's bootstrap: nothing reachable from Prefect or CircleCI can widen itself.
`*` is used only for actions AWS does not scope to a resource.
"""

from __future__ import annotations

from typing import Any, Callable

from .config import DEPLOYMENT_TYPES
from .model import Action, Change
from .names import Account, Deployment
from .policy import allow, document

ECS_TASKS = "ecs-tasks.amazonaws.com"
# IAM quotas, counted without white space: all inline policies of one role together, and
# one managed policy (the boundaries).
ROLE_INLINE_LIMIT = 10240
MANAGED_POLICY_LIMIT = 6144
# CircleCI user ids are UUIDs: 36 single-character wildcards cannot stretch across the
# rest of the subject the way `*` would (see circleci_trust).
CIRCLECI_USER_ID = "????????-????-????-????-????????????"
ECR_PULL = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]


def ecs_tasks_trust(acct: Account) -> dict[str, Any]:
    # The confused-deputy guard: only ECS tasks of this account may assume the role.
    return document({
        "Effect": "Allow",
        "Principal": {"Service": ECS_TASKS},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": acct.account_id}},
    })


def circleci_subjects(acct: Account, branches: list[str]) -> list[str]:
    """The exact `sub` of CircleCI's v2 OIDC token for a job of this project on each branch
    (org/ORG/project/PROJECT/user/USER/vcs-origin/ORIGIN/vcs-ref/refs/heads/BRANCH).

    Only the user id varies, as a fixed-length wildcard; the origin is pinned. A `*`
    anywhere would let a branch named `x/vcs-ref/refs/heads/main-v2` match the subject
    meant for `main-v2`."""
    c = acct.cfg.circleci
    return [f"org/{c.org_id}/project/{c.project_id}/user/{CIRCLECI_USER_ID}/vcs-origin/{c.vcs_origin}"
            f"/vcs-ref/refs/heads/{b}" for b in branches]


def circleci_trust(acct: Account, branches: list[str] | None) -> dict[str, Any]:
    """Trust CircleCI's OIDC tokens of this org (aud) and project only.

    With `branches`, only jobs on exactly those branches; without, any job of the project
    (pull requests included) — used only for the read-only plan role."""
    c = acct.cfg.circleci
    host = acct.oidc_host
    subs = circleci_subjects(acct, branches) if branches else [f"org/{c.org_id}/project/{c.project_id}/user/*"]
    return document({
        "Effect": "Allow",
        "Principal": {"Federated": acct.oidc_provider_arn},
        "Action": ["sts:AssumeRoleWithWebIdentity", "sts:TagSession"],
        "Condition": {
            "StringEquals": {f"{host}:aud": c.org_id},
            "StringLike": {f"{host}:sub": subs},
        },
    })


def _secret_read(a: Account, sid: str) -> dict[str, Any]:
    return allow("secretsmanager:GetSecretValue", a.secret_arn_pattern, sid=sid)


def _log_group(d: Deployment, name: str) -> list[str]:
    # Log-group actions are authorised on the group's ARN with and without the ":*"
    # stream suffix, depending on the action.
    arn = d.log_group_arn(name)
    return [arn, f"{arn}:*"]


def agent_execution(d: Deployment) -> dict[str, Any]:
    """Start the agent container: pull its image, write its log, read the Prefect secret.
    Scoped inline instead of AmazonECSTaskExecutionRolePolicy, which allows pulling from
    every repository and writing every log group."""
    a = d.account
    pull = a.agent_image_repository_arn
    return document(
        *([allow(ECR_PULL, pull, sid="PullAgentImage")] if pull else []),
        allow(["ecr:GetAuthorizationToken"], "*", sid="EcrLogin"),
        allow(["logs:CreateLogStream", "logs:PutLogEvents"], _log_group(d, d.agent_log_group), sid="AgentLogs"),
        _secret_read(a, "PrefectCredentials"),
    )


def agent_task(d: Deployment, management: bool = False) -> dict[str, Any]:
    """The worker: register flow task definitions, run them on its own cluster with the
    roles it may pass, and watch them through its observer queue. The agent of the
    management deployment type also passes the infra-read/infra-write/infra-prune roles,
    which the drift-check, infra-update and infra-prune deployments run with."""
    a = d.account
    task_arn = a.arn("ecs", f"task/{d.cluster}/*")
    on_cluster = {"ArnEquals": {"ecs:cluster": d.cluster_arn}}
    passed = [a.role_arn(d.flow_exec_role), a.role_arn(d.flow_task_role)]
    if management:
        passed += [a.role_arn(r) for r in (a.infra_read_role, a.infra_write_role, a.infra_prune_role)]
    return document(
        allow(["ecs:RunTask"], a.arn("ecs", "task-definition/*"), sid="RunFlowsOnOwnCluster", condition=on_cluster),
        allow(["ecs:StopTask", "ecs:DescribeTasks"], task_arn, sid="ManageOwnTasks"),
        allow(["ecs:RegisterTaskDefinition"], a.arn("ecs", "task-definition/*"), sid="RegisterFlowTaskDefinitions"),
        allow(["ecs:DescribeTaskDefinition", "ecs:ListTaskDefinitions", "ecs:DeregisterTaskDefinition"], "*",
              sid="FlowTaskDefinitions"),
        allow(["ecs:TagResource"], [a.arn("ecs", "task-definition/*"), task_arn], sid="TagOnCreate",
              condition={"StringEquals": {"ecs:CreateAction": ["RunTask", "RegisterTaskDefinition"]}}),
        allow(["ecs:DescribeClusters"], d.cluster_arn, sid="DescribeOwnCluster"),
        allow(["ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"], "*", sid="NetworkLookup"),
        allow(["iam:PassRole"], sorted(passed), sid="PassRunRoles",
              condition={"StringEquals": {"iam:PassedToService": ECS_TASKS}}),
        allow(["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes",
               "sqs:GetQueueUrl"], d.queue_arn, sid="TaskStateObserver"),
        allow(["logs:GetLogEvents", "logs:DescribeLogStreams"], _log_group(d, d.flow_log_group), sid="ReadFlowLogs"),
    )


def flow_execution(d: Deployment) -> dict[str, Any]:
    """Start a flow run's container. prefect-aws always sets `awslogs-create-group`, for
    which ECS needs logs:CreateLogGroup even when the group exists."""
    a = d.account
    return document(
        allow(ECR_PULL, a.ecr_repository_arn, sid="PullFlowImages"),
        allow(["ecr:GetAuthorizationToken"], "*", sid="EcrLogin"),
        allow(["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
              _log_group(d, d.flow_log_group), sid="FlowLogs"),
        _secret_read(a, "PrefectCredentials"),
    )


def flow_task(d: Deployment, extra: list[dict[str, Any]]) -> dict[str, Any]:
    """What flow code may do: its own bucket (results, flow files) and the configured extras."""
    return document(
        allow(["s3:ListBucket", "s3:GetBucketLocation"], d.bucket_arn, sid="ListFlowBucket"),
        allow(["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], f"{d.bucket_arn}/*", sid="FlowBucketObjects"),
        *extra,
    )


def runtime_policies(d: Deployment, extra: list[dict[str, Any]], management: bool) -> dict[str, dict[str, Any]]:
    """Inline policy of each runtime role of deployment type T, by role name."""
    return {
        d.agent_exec_role: agent_execution(d),
        d.agent_task_role: agent_task(d, management),
        d.flow_exec_role: flow_execution(d),
        d.flow_task_role: flow_task(d, extra),
    }


def runtime_boundary(d: Deployment, extra: list[dict[str, Any]], management: bool) -> dict[str, Any]:
    """The permissions boundary of T's runtime roles: every statement any of them needs.
    A role's effective permissions are its policy AND this, so a rewritten inline policy
    cannot exceed it."""
    statements: list[dict[str, Any]] = []
    for role, doc in runtime_policies(d, extra, management).items():
        tag = "".join(p.capitalize() for p in role.removeprefix(d.base + "-").split("-"))
        for i, st in enumerate(doc["Statement"]):
            sid = st.get("Sid") or f"Extra{i}"
            statements.append({**st, "Sid": f"{tag}{sid}"})
    return document(*statements)


# --- control plane: management and CI roles --------------------------------------------

def infra_read(a: Account) -> dict[str, Any]:
    """What plan and drift check need: read-only, scoped where AWS allows it."""
    p = a.prefix
    roles = [a.arn("iam", f"role/{p}-*", region=False)]
    return document(
        allow(["iam:GetRole", "iam:GetRolePolicy", "iam:ListRolePolicies", "iam:ListAttachedRolePolicies",
               "iam:ListRoleTags"], roles, sid="ReadRoles"),
        allow(["iam:GetPolicy", "iam:GetPolicyVersion", "iam:ListPolicyTags"],
              a.arn("iam", f"policy/{p}-*", region=False), sid="ReadBoundaries"),
        allow(["iam:GetOpenIDConnectProvider", "iam:ListOpenIDConnectProviderTags"], a.oidc_provider_arn,
              sid="ReadOidc"),
        allow(["s3:GetBucketVersioning", "s3:GetBucketPublicAccessBlock", "s3:GetEncryptionConfiguration",
               "s3:GetBucketPolicy", "s3:GetLifecycleConfiguration", "s3:GetBucketTagging",
               "s3:GetBucketLocation", "s3:ListBucket"], f"arn:{a.partition}:s3:::{p}-*", sid="ReadBuckets"),
        allow(["ecr:DescribeRepositories", "ecr:GetLifecyclePolicy", "ecr:ListTagsForResource",
               "ecr:DescribeImages"], a.ecr_repository_arn, sid="ReadRegistry"),
        allow(["logs:ListTagsForResource", "logs:ListTagsLogGroup"],
              [a.arn("logs", f"log-group:/ecs/{p}-*")], sid="ReadLogGroups"),
        allow(["secretsmanager:DescribeSecret"], a.secret_arn_pattern, sid="ReadSecretMetadata"),
        allow(["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ListQueueTags"], a.arn("sqs", f"{p}-*"),
              sid="ReadQueues"),
        allow(["events:DescribeRule", "events:ListTargetsByRule", "events:ListTagsForResource"],
              a.arn("events", f"rule/{p}-*"), sid="ReadRules"),
        allow(["ecs:DescribeClusters", "ecs:DescribeServices", "ecs:ListTagsForResource"],
              [a.arn("ecs", f"cluster/{p}-*"), a.arn("ecs", f"service/{p}-*"),
               a.arn("ecs", f"task-definition/{p}-*")], sid="ReadEcs"),
        allow(["ecs:DescribeTaskDefinition", "ecs:ListClusters", "ecs:ListServices", "ecs:ListTaskDefinitionFamilies",
               "iam:ListRoles", "iam:ListOpenIDConnectProviders", "sqs:ListQueues", "s3:ListAllMyBuckets",
               "events:ListRules", "logs:DescribeLogGroups", "ec2:DescribeVpcs", "ec2:DescribeSubnets",
               "ec2:DescribeSecurityGroups", "ec2:DescribeSecurityGroupRules",
               "application-autoscaling:DescribeScalableTargets",
               "application-autoscaling:DescribeScalingPolicies"], "*", sid="UnscopableReads"),
    )


def infra_write(a: Account, owner: str) -> dict[str, Any]:
    """What `infra-update` (and CI's apply) needs on top of read: create and update this
    environment's resources, each by its exact name, and nothing else."""
    ds = a.deployments
    owned = {"StringEquals": {"aws:ResourceTag/managed-by": owner}}
    statements = [
        allow(["s3:CreateBucket", "s3:PutBucketVersioning", "s3:PutBucketPublicAccessBlock",
               "s3:PutEncryptionConfiguration", "s3:PutBucketPolicy", "s3:PutLifecycleConfiguration",
               "s3:PutBucketTagging", "s3:TagResource"], [d.bucket_arn for d in ds], sid="WriteBuckets"),
        allow(["ecr:CreateRepository", "ecr:PutLifecyclePolicy", "ecr:PutImageScanningConfiguration",
               "ecr:PutImageTagMutability", "ecr:TagResource"], a.ecr_repository_arn, sid="WriteRegistry"),
        allow(["logs:CreateLogGroup", "logs:PutRetentionPolicy", "logs:TagResource", "logs:TagLogGroup"],
              [d.log_group_arn(f"/ecs/{d.base}/*") for d in ds], sid="WriteLogGroups"),
        allow(["secretsmanager:TagResource"], a.secret_arn_pattern, sid="TagSecret"),
        allow(["sqs:CreateQueue", "sqs:SetQueueAttributes", "sqs:TagQueue"],
              [arn for d in ds for arn in (d.queue_arn, d.dlq_arn)], sid="WriteQueues"),
        allow(["events:PutRule", "events:TagResource"], [d.rule_arn for d in ds], sid="WriteRules"),
        allow(["events:PutTargets"], [d.rule_arn for d in ds], sid="RuleTargetsOwnQueues",
              condition={"ArnEquals": {"events:TargetArn": [d.queue_arn for d in ds]}}),
        allow(["ecs:CreateCluster", "ecs:UpdateCluster", "ecs:UpdateClusterSettings",
               "ecs:PutClusterCapacityProviders", "ecs:TagResource"], [d.cluster_arn for d in ds],
              sid="WriteClusters"),
        allow(["ecs:CreateService", "ecs:UpdateService", "ecs:TagResource"], [d.service_arn for d in ds],
              sid="WriteAgentServices"),
        allow(["ecs:RegisterTaskDefinition", "ecs:TagResource"], [d.task_family_arn for d in ds],
              sid="RegisterAgentTaskDefinitions"),
        allow(["iam:PassRole"], sorted(a.role_arn(r) for d in ds for r in (d.agent_exec_role, d.agent_task_role)),
              sid="PassAgentRoles", condition={"StringEquals": {"iam:PassedToService": ECS_TASKS}}),
        allow(["iam:CreateServiceLinkedRole"], a.arn("iam", "role/aws-service-role/*", region=False),
              sid="EcsServiceLinkedRoles", condition={"StringEquals": {"iam:AWSServiceName": [
                  "ecs.amazonaws.com", "ecs.application-autoscaling.amazonaws.com"]}}),
        # Security-group ids are assigned by AWS: ownership is the tag, set in the create call.
        # CreateSecurityGroup is authorized on the new group and on its VPC; the VPC half
        # has no request tags (the SAR lists aws:RequestTag for the group only), so it has
        # its own statement: one with the tag condition on both would deny every create.
        allow(["ec2:CreateSecurityGroup"], a.arn("ec2", "security-group/*"), sid="CreateOwnSecurityGroups",
              condition={"StringEquals": {"aws:RequestTag/managed-by": owner}}),
        allow(["ec2:CreateSecurityGroup"], a.arn("ec2", "vpc/*"), sid="SecurityGroupsInVpcs"),
        allow(["ec2:CreateTags"], a.arn("ec2", "security-group/*"), sid="TagOnCreateSecurityGroup",
              condition={"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"}}),
        allow(["ec2:CreateTags", "ec2:AuthorizeSecurityGroupEgress", "ec2:RevokeSecurityGroupEgress",
               "ec2:RevokeSecurityGroupIngress"], a.arn("ec2", "security-group/*"), sid="WriteOwnSecurityGroups",
              condition=owned),
        # Scalable targets have random ids; Application Auto Scaling also requires
        # ecs:UpdateService on the service itself, which only our services allow.
        allow(["application-autoscaling:RegisterScalableTarget", "application-autoscaling:PutScalingPolicy"],
              a.arn("application-autoscaling", "scalable-target/*"), sid="ScaleOwnAgents",
              condition={"StringEquals": {"application-autoscaling:service-namespace": "ecs",
                                          "application-autoscaling:scalable-dimension": "ecs:service:DesiredCount"}}),
        allow(["cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"],
              [a.arn("cloudwatch", f"alarm:TargetTracking-{d.scalable_resource_id}-*") for d in ds],
              sid="TargetTrackingAlarms"),
        allow(["cloudwatch:DescribeAlarms"], "*", sid="DescribeAlarms"),
    ]
    for d in ds:
        boundary = {"StringEquals": {"iam:PermissionsBoundary": d.boundary_arn}}
        statements.append(allow(
            ["iam:PutRolePolicy", "iam:DeleteRolePolicy", "iam:PutRolePermissionsBoundary"],
            runtime_roles_arn(d), sid=f"RuntimeRolesWithinBoundary{d.t.capitalize()}", condition=boundary))
    statements.append(allow(["iam:UpdateRole", "iam:TagRole"], [runtime_roles_arn(d) for d in ds],
                            sid="RuntimeRoleSettings"))
    return document(*infra_read(a)["Statement"], *statements)


def runtime_roles_arn(d: Deployment) -> str:
    """T's four runtime roles: `{prefix}-T-*`. Deployment types are dev/staging/main only,
    so this never reaches the control-plane roles (`{prefix}-ci-*`, `{prefix}-infra-*`)."""
    return d.account.arn("iam", f"role/{d.base}-*", region=False)


def ci_deploy_extra(a: Account) -> dict[str, Any]:
    """What only CI's apply may do beyond infra-write: create runtime roles (with their
    boundary) and change their trust policies, which decide who can assume them."""
    statements = [allow(["iam:CreateRole"], runtime_roles_arn(d), sid=f"CreateRuntimeRoles{d.t.capitalize()}",
                        condition={"StringEquals": {"iam:PermissionsBoundary": d.boundary_arn}})
                  for d in a.deployments]
    statements.append(allow(["iam:UpdateAssumeRolePolicy"], [runtime_roles_arn(d) for d in a.deployments],
                            sid="RuntimeRoleTrust"))
    return document(*statements)


def ci_push(a: Account) -> dict[str, Any]:
    """CircleCI on the environment's branches: build-and-push of the image, nothing else."""
    return document(
        allow(["ecr:GetAuthorizationToken"], "*", sid="EcrLogin"),
        allow(["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
               "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage",
               "ecr:DescribeImages"], a.ecr_repository_arn, sid="PushImages"),
    )


# What `infra-prune` may delete: per kind, the names that kind has in a deployment type.
# Data kinds (buckets, log groups, the registry, the secret) are absent on purpose.
PRUNABLE: dict[str, Callable[[Deployment], tuple[str, ...]]] = {
    "iam.role": lambda d: (d.agent_exec_role, d.agent_task_role, d.flow_exec_role, d.flow_task_role),
    "sqs.queue": lambda d: (d.queue, d.dlq),
    "events.rule": lambda d: (d.rule,),
    "ecs.service": lambda d: (d.service,),
    "ecs.cluster": lambda d: (d.cluster,),
    "ecs.task_definition": lambda d: (d.task_family,),
    "ec2.security_group": lambda d: (d.agent_sg, d.flow_sg),
}


def prunable_types(a: Account) -> list[Deployment]:
    """Every deployment type the configuration may name, not only today's: a prune deletes
    what a type that is no longer configured left behind, which a policy made from today's
    configuration could not otherwise name."""
    return [a.deployment(t) for t in DEPLOYMENT_TYPES]


def infra_prune(a: Account, owner: str) -> dict[str, Any]:
    """What `infra-prune` needs on top of read: the deletes a prune of non-data kinds makes
    (the `delete` of each kind's handler), on the names a deployment type's resources have
    AND only while they carry this environment's ownership tags."""
    ds = prunable_types(a)
    ours = {"StringEquals": {"aws:ResourceTag/managed-by": owner, "aws:ResourceTag/environment": a.env_name}}

    def arns(kind: str, arn: Callable[[Deployment, str], str]) -> list[str]:
        return sorted(arn(d, name) for d in ds for name in PRUNABLE[kind](d))

    roles = arns("iam.role", lambda d, n: a.role_arn(n))
    clusters = arns("ecs.cluster", lambda d, n: d.cluster_arn)
    return document(
        *infra_read(a)["Statement"],
        # Inline policies and attached ones first: IAM deletes only a bare role. Runtime
        # roles only: a control-plane role (ci-*, infra-*) has none of these names.
        allow(["iam:ListInstanceProfilesForRole", "iam:DeleteRolePolicy", "iam:DetachRolePolicy", "iam:DeleteRole"],
              roles, sid="DeleteRuntimeRoles", condition=ours),
        allow(["sqs:DeleteQueue"], arns("sqs.queue", lambda d, n: a.arn("sqs", n)), sid="DeleteQueues",
              condition=ours),
        allow(["events:RemoveTargets", "events:DeleteRule"], arns("events.rule", lambda d, n: d.rule_arn),
              sid="DeleteRules", condition=ours),
        # Scaled to 0 and drained before it is deleted.
        allow(["ecs:UpdateService", "ecs:DeleteService"], arns("ecs.service", lambda d, n: d.service_arn),
              sid="DeleteAgentServices", condition=ours),
        allow(["ecs:DeleteCluster"], clusters, sid="DeleteClusters", condition=ours),
        # Security-group ids are assigned by AWS: ownership is the tag.
        allow(["ec2:DeleteSecurityGroup"], a.arn("ec2", "security-group/*"), sid="DeleteOwnSecurityGroups",
              condition=ours),
        # What still runs in a cluster stops its deletion: listed first, and named.
        allow(["ecs:ListTasks"], "*", sid="ListClusterTasks", condition={"ArnEquals": {"ecs:cluster": clusters}}),
        allow(["ecs:DescribeTasks"], [a.arn("ecs", f"task/{d.cluster}/*") for d in ds], sid="DescribeClusterTasks"),
        # The SAR lists no resource type and no condition key for these: they cannot be scoped.
        # A deregistered revision stays listed (INACTIVE) and running tasks keep it.
        allow(["ecs:ListTaskDefinitions", "ecs:DeregisterTaskDefinition", "ec2:DescribeNetworkInterfaces"], "*",
              sid="UnscopableDeletePath"),
    )


def beyond_prune(change: Change, a: Account) -> str | None:
    """Why `infra-prune` cannot make this change (None: it can), as its policy says. The
    ownership tags it also requires are what the prune's plan deletes by (teardown.decide)."""
    res = change.resource
    if change.action is not Action.DELETE:
        return f"{res.key}: infra-prune only deletes"
    names = PRUNABLE.get(res.kind)
    if names is None:
        return f"{res.key}: infra-prune does not delete a {res.kind}"
    if res.kind == "ec2.security_group":
        return None  # by its tags alone (AWS assigns the id)
    types = prunable_types(a)
    if res.name not in {n for d in types for n in names(d)} or (
            res.kind == "ecs.service" and res.ident.get("cluster") not in {d.cluster for d in types}):
        return f"{res.key}: not a name a deployment type's {res.kind} has ({a.prefix}-T-…), so infra-prune may not " \
               f"delete it"
    return None


def beyond_role(change: Change, a: Account, role: str) -> str | None:
    """Why `role` (`infra-write`, `ci-deploy` or `infra-prune`) cannot make this change
    (None: it can). Checked before anything is applied (and before an `infra-update` or
    `infra-prune` asks for approval), so a change the role could never make fails up
    front, naming what to do."""
    res = change.resource
    if not change.action.mutates:
        return None
    if role == "infra-prune":
        return beyond_prune(change, a)
    admin = "needs an administrator's bootstrap (python -m flows.bootstrap with admin credentials)"
    control_plane = {a.ci_deploy_role, a.ci_push_role, a.ci_plan_role, a.infra_read_role, a.infra_write_role,
                     a.infra_prune_role}
    if res.kind in ("iam.policy", "iam.oidc_provider") or (res.kind == "iam.role" and res.name in control_plane):
        return f"{res.key}: {admin}; the management and CI roles cannot change their own permissions"
    if res.kind == "iam.role" and role != "ci-deploy" and (
            change.action is Action.CREATE or any(d.path == "trust" for d in change.diffs)):
        return f"{res.key}: its trust policy changes only through CI's apply or an administrator's bootstrap"
    if res.kind == "secretsmanager.secret" and (change.action is Action.CREATE
                                                or any(d.path == "value" for d in change.diffs)):
        return f"{res.key}: the Prefect credentials are set only by an administrator's bootstrap"
    if res.kind == "secretsmanager.secret" and any(d.path == "scheduled_for_deletion" for d in change.diffs):
        # A teardown with --delete-data scheduled it; RestoreSecret is no role's grant.
        return f"{res.key}: scheduled for deletion by a teardown; {admin} restores it"
    return None


def _size(doc: dict[str, Any]) -> int:
    import json

    return len(json.dumps(doc, separators=(",", ":")))


def size_errors(kind: str, name: str, props: dict[str, Any]) -> list[str]:
    """IAM rejects documents over its size quotas only at apply time; say so in the plan."""
    hint = "shorten flows.task_role_extra_statements" if ("-flow-task" in name or "boundary" in name) else \
        "a project policy outgrew IAM's quota: report it"
    if kind == "iam.policy" and _size(props["document"]) > MANAGED_POLICY_LIMIT:
        return [f"iam.policy/{name}: {_size(props['document'])} characters, over IAM's {MANAGED_POLICY_LIMIT} for a "
                f"managed policy; {hint} (the boundary includes them)"]
    if kind == "iam.role":
        total = sum(_size(d) for d in props["inline_policies"].values())
        if total > ROLE_INLINE_LIMIT:
            return [f"iam.role/{name}: inline policies total {total} characters, over IAM's {ROLE_INLINE_LIMIT}; "
                    f"{hint}"]
    return []
