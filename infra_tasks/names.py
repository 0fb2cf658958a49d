"""Names and ARNs of everything the project owns, derived from the config (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config import InfraConfig, flow_bucket_name


def arn(partition: str, service: str, resource: str, region: str = "", account: str = "") -> str:
    """An ARN in `partition` (`aws`, `aws-cn`, `aws-us-gov`), never hard-coded to the commercial one."""
    return f"arn:{partition}:{service}:{region}:{account}:{resource}"


def bucket_arn(partition: str, bucket: str) -> str:
    # S3 bucket ARNs carry neither region nor account.
    return arn(partition, "s3", bucket)


@dataclass(frozen=True)
class Account:
    """Names of per-account resources and the ARN building blocks."""

    cfg: InfraConfig
    env_name: str
    account_id: str
    region: str
    partition: str = "aws"

    @property
    def prefix(self) -> str:
        return self.cfg.prefix

    def arn(self, service: str, resource: str, region: bool = True, account: bool = True) -> str:
        return arn(self.partition, service, resource, self.region if region else "",
                   self.account_id if account else "")

    def role_arn(self, name: str) -> str:
        return self.arn("iam", f"role/{name}", region=False)

    @property
    def ecr_repository(self) -> str:
        return self.prefix

    @property
    def ecr_repository_arn(self) -> str:
        return self.arn("ecr", f"repository/{self.ecr_repository}")

    @property
    def registry(self) -> str:
        suffix = "amazonaws.com.cn" if self.partition == "aws-cn" else "amazonaws.com"
        return f"{self.account_id}.dkr.ecr.{self.region}.{suffix}"

    @property
    def agent_image_repository_arn(self) -> str | None:
        """The ECR repository the agent image is pulled from (None: not an ECR registry)."""
        repo = self.cfg.agent.image_repository
        if not repo:
            return self.ecr_repository_arn
        m = re.fullmatch(r"(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/(.+)", repo)
        if not m:
            return None
        return arn(self.partition, "ecr", f"repository/{m.group(3)}", m.group(2), m.group(1))

    @property
    def agent_image(self) -> str:
        repo = self.cfg.agent.image_repository or f"{self.registry}/{self.ecr_repository}"
        return f"{repo}:{self.cfg.agent.image_tag}"

    @property
    def secret_name(self) -> str:
        return self.cfg.secret_name()

    @property
    def secret_arn_pattern(self) -> str:
        # Secrets Manager appends "-" and six random characters to a secret's ARN.
        return self.arn("secretsmanager", f"secret:{self.secret_name}-??????")

    @property
    def oidc_host(self) -> str:
        return f"oidc.circleci.com/org/{self.cfg.circleci.org_id}"

    @property
    def oidc_provider_arn(self) -> str:
        return self.arn("iam", f"oidc-provider/{self.oidc_host}", region=False)

    def control_role(self, role: str) -> str:
        """The control-plane role that plays `role` (`ci-deploy`, `infra-read`, ...)."""
        return f"{self.prefix}-{role}"

    ci_deploy_role = property(lambda self: self.control_role("ci-deploy"))
    ci_push_role = property(lambda self: self.control_role("ci-push"))
    ci_plan_role = property(lambda self: self.control_role("ci-plan"))
    infra_read_role = property(lambda self: self.control_role("infra-read"))
    infra_write_role = property(lambda self: self.control_role("infra-write"))
    infra_prune_role = property(lambda self: self.control_role("infra-prune"))

    def project_role_of(self, caller_arn: str) -> str | None:
        """`ci-deploy` / `infra-write` when the caller is that role's session, else None."""
        m = re.fullmatch(r"arn:[^:]+:sts::\d{12}:assumed-role/([^/]+)/.*", caller_arn or "")
        if not m:
            return None
        return {self.ci_deploy_role: "ci-deploy", self.infra_write_role: "infra-write"}.get(m.group(1))

    def deployment(self, t: str) -> "Deployment":
        return Deployment(self, t)

    @property
    def deployments(self) -> list["Deployment"]:
        return [Deployment(self, t) for t in self.cfg.env(self.env_name).deployment_types]


@dataclass(frozen=True)
class Deployment:
    """Names of the resources of one deployment type T."""

    account: Account
    t: str

    @property
    def base(self) -> str:
        return f"{self.account.prefix}-{self.t}"

    bucket = property(lambda self: flow_bucket_name(self.account.prefix, self.t, self.account.account_id))
    agent_log_group = property(lambda self: f"/ecs/{self.base}/agent")
    flow_log_group = property(lambda self: f"/ecs/{self.base}/flows")
    agent_exec_role = property(lambda self: f"{self.base}-agent-exec")
    agent_task_role = property(lambda self: f"{self.base}-agent-task")
    flow_exec_role = property(lambda self: f"{self.base}-flow-exec")
    flow_task_role = property(lambda self: f"{self.base}-flow-task")
    agent_sg = property(lambda self: f"{self.base}-agent")
    flow_sg = property(lambda self: f"{self.base}-flows")
    queue = property(lambda self: f"{self.base}-ecs-events")
    dlq = property(lambda self: f"{self.base}-ecs-events-dlq")
    rule = property(lambda self: f"{self.base}-ecs-task-state")
    cluster = property(lambda self: self.base)
    task_family = property(lambda self: f"{self.base}-agent")
    service = property(lambda self: f"{self.base}-agent")
    scaling_policy = property(lambda self: f"{self.base}-agent-cpu")
    pool = property(lambda self: self.base)
    boundary = property(lambda self: f"{self.base}-runtime-boundary")

    @property
    def boundary_arn(self) -> str:
        return self.account.arn("iam", f"policy/{self.boundary}", region=False)

    @property
    def service_arn(self) -> str:
        return self.account.arn("ecs", f"service/{self.cluster}/{self.service}")

    @property
    def task_family_arn(self) -> str:
        return self.account.arn("ecs", f"task-definition/{self.task_family}:*")

    @property
    def bucket_arn(self) -> str:
        return bucket_arn(self.account.partition, self.bucket)

    @property
    def cluster_arn(self) -> str:
        return self.account.arn("ecs", f"cluster/{self.cluster}")

    @property
    def queue_arn(self) -> str:
        return self.account.arn("sqs", self.queue)

    @property
    def dlq_arn(self) -> str:
        return self.account.arn("sqs", self.dlq)

    @property
    def rule_arn(self) -> str:
        return self.account.arn("events", f"rule/{self.rule}")

    def log_group_arn(self, name: str) -> str:
        return self.account.arn("logs", f"log-group:{name}")

    @property
    def scalable_resource_id(self) -> str:
        return f"service/{self.cluster}/{self.service}"


# --- Prefect-side names (they depend only on the prefix and the environment) ---------

def lock_name(prefix: str, env_name: str) -> str:
    """The global concurrency limit that serialises an environment's mutating runs."""
    return f"{prefix}-{env_name}-infra-mutations"


def sandbox_pool(prefix: str, env_name: str) -> str:
    """The process work pool that stands in for the ECS agent in the sandbox."""
    return f"{prefix}-{env_name}-sandbox"


def management_deployment_name(prefix: str, env_name: str, flow_name: str) -> str:
    """The deployment name of management flow `flow_name` (drift-check, infra-update,
    infra-prune): it says what the deployment is, since the UI's deployment list shows the
    flow name only in small print (`drift-check/data-flows-dev-drift-check`)."""
    return f"{prefix}-{env_name}-{flow_name}"


def retired_management_deployment_name(prefix: str, env_name: str) -> str:
    """The name both management deployments carried before they were told apart
    (`drift-check/data-flows-dev`); bootstrap never deletes, so older installations may
    still hold deployments under it."""
    return f"{prefix}-{env_name}"
