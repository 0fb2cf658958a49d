"""`infra.toml`: the validated configuration every run starts from.

Everything AWS would reject later (Fargate cpu/memory pairs, CloudWatch retention
values, bucket-name rules, account id format) is rejected here, before a single AWS
call, with the key path, the value and what is allowed.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "infra.toml"

# Fargate task-level cpu units -> allowed memory (MiB).
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html
FARGATE_MEMORY: dict[int, list[int]] = {
    256: [512, 1024, 2048],
    512: list(range(1024, 4096 + 1, 1024)),
    1024: list(range(2048, 8192 + 1, 1024)),
    2048: list(range(4096, 16384 + 1, 1024)),
    4096: list(range(8192, 30720 + 1, 1024)),
    8192: list(range(16384, 61440 + 1, 4096)),
    16384: list(range(32768, 122880 + 1, 8192)),
}

# CloudWatch Logs PutRetentionPolicy accepts only these values.
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731,
    1096, 1827, 2192, 2557, 2922, 3288, 3653,
)

DEPLOYMENT_TYPES = ("dev", "staging", "main")
ACCOUNT_ID_RE = re.compile(r"^\d{12}$")
PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{1,22}[a-z0-9]$")
TAG_KEY_RE = re.compile(r"^[\w\s.:/=+\-@]{1,128}$")
IMAGE_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
REGION_RE = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
IP_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
# A Prefect block document by name: block type slug (lowercase, dashes) / block name
# (Prefect allows lowercase letters, digits and dashes in block names).
BLOCK_REF_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*/[a-z0-9]+(-[a-z0-9]+)*$")

# Said by every plan that includes the Prefect side when no alerts block is configured.
NO_ALERTS_NOTE = ("drift alerts: no notification block configured (prefect.alerts_block); "
                  "drift only shows as a Failed run")


class ConfigError(Exception):
    """A configuration value is invalid. The message names the key path and value."""


def fargate_pair_error(cpu: int, memory: int) -> str | None:
    if cpu not in FARGATE_MEMORY:
        return f"cpu {cpu} is not a Fargate size; allowed cpu: {sorted(FARGATE_MEMORY)}"
    allowed = FARGATE_MEMORY[cpu]
    if memory not in allowed:
        return (
            f"Fargate does not accept cpu {cpu} with memory {memory}; "
            f"with cpu {cpu} memory must be one of {allowed[0]}..{allowed[-1]} "
            f"({', '.join(map(str, allowed[:8]))}{', ...' if len(allowed) > 8 else ''})"
        )
    return None


def bucket_name_error(name: str) -> str | None:
    """S3 general-purpose bucket naming rules (the emulator does not enforce them)."""
    if not 3 <= len(name) <= 63:
        return f"bucket name {name!r} must be 3-63 characters long (is {len(name)})"
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", name):
        return f"bucket name {name!r} may only contain a-z, 0-9, '.', '-' and must start and end with a letter or digit"
    if ".." in name or ".-" in name or "-." in name:
        return f"bucket name {name!r} must not contain '..', '.-' or '-.'"
    if IP_RE.match(name):
        return f"bucket name {name!r} must not look like an IP address"
    for bad in ("xn--", "sthree-", "amzn-s3-demo-"):
        if name.startswith(bad):
            return f"bucket name {name!r} must not start with {bad!r}"
    for bad in ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"):
        if name.endswith(bad):
            return f"bucket name {name!r} must not end with {bad!r}"
    return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VpcSelector(_Model):
    """Exactly one of: `id`, `name` (the VPC's Name tag) or `default = true`."""

    id: str | None = Field(None, pattern=r"^vpc-[0-9a-f]{8,17}$")
    name: str | None = Field(None, min_length=1)
    default: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> "VpcSelector":
        chosen = [k for k in ("id", "name") if getattr(self, k)] + (["default"] if self.default else [])
        if len(chosen) != 1:
            raise ValueError(f"choose exactly one of id, name or default = true (got {chosen or 'none'})")
        return self


class SubnetSelector(_Model):
    """Exactly one of: `ids`, `tags` (all must match) or `all = true` (every subnet of the VPC)."""

    ids: list[str] | None = None
    tags: dict[str, str] | None = None
    all: bool = False

    @field_validator("ids")
    @classmethod
    def _ids(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("ids must not be empty")
            for s in v:
                if not re.fullmatch(r"subnet-[0-9a-f]{8,17}", s):
                    raise ValueError(f"{s!r} is not a subnet id (subnet-xxxxxxxx)")
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> "SubnetSelector":
        chosen = [k for k in ("ids", "tags") if getattr(self, k)] + (["all"] if self.all else [])
        if len(chosen) != 1:
            raise ValueError(f"choose exactly one of ids, tags or all = true (got {chosen or 'none'})")
        return self


class Network(_Model):
    vpc: VpcSelector = VpcSelector(default=True)
    subnets: SubnetSelector = SubnetSelector(all=True)
    assign_public_ip: bool = False


class Environment(_Model):
    account_id: str
    deployment_types: list[Literal["dev", "staging", "main"]]
    network: Network = Network()
    # Branches whose CircleCI jobs may push images to this account (the ci-push role).
    ci_branches: list[str]
    # The one branch whose pipeline applies infrastructure here (the ci-deploy role);
    # default: the last of ci_branches.
    apply_branch: str | None = None
    # A protected environment is torn down only by someone typing its name at a terminal
    # (`--yes` is refused). Unset: protected when the environment is named production.
    protected: bool | None = None

    @field_validator("account_id")
    @classmethod
    def _account(cls, v: str) -> str:
        if not ACCOUNT_ID_RE.match(v):
            raise ValueError("account id must be exactly 12 digits, as a quoted string")
        return v

    @field_validator("deployment_types")
    @classmethod
    def _types(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one deployment type is required")
        if len(set(v)) != len(v):
            raise ValueError("deployment types must be unique")
        return v

    @field_validator("ci_branches")
    @classmethod
    def _branches(cls, v: list[str]) -> list[str]:
        for b in v:
            if not re.fullmatch(r"[A-Za-z0-9._/-]+", b):
                raise ValueError(f"{b!r} is not a plain branch name")
        return v

    @model_validator(mode="after")
    def _apply_branch(self) -> "Environment":
        if self.apply_branch is None and self.ci_branches:
            self.apply_branch = self.ci_branches[-1]
        if self.apply_branch is not None and self.apply_branch not in self.ci_branches:
            raise ValueError(f"apply_branch {self.apply_branch!r} must be one of ci_branches {self.ci_branches}")
        return self


class Agent(_Model):
    image_tag: str = "prefect-agent-latest"
    # Repository holding the agent image; empty = this account's ECR repository.
    image_repository: str = ""
    cpu: int = 1024
    memory: int = 2048
    desired_count: int = Field(2, ge=0, le=10)
    min_count: int = Field(1, ge=0, le=10)
    max_count: int = Field(2, ge=1, le=10)
    cpu_target_percent: float = Field(45.0, gt=0, le=100)
    scale_in_cooldown: int = Field(60, ge=0, le=3600)
    scale_out_cooldown: int = Field(60, ge=0, le=3600)

    @field_validator("image_tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        if not IMAGE_TAG_RE.match(v):
            raise ValueError("image tag must be 1-128 of [A-Za-z0-9_.-] and not start with '.' or '-'")
        return v

    @model_validator(mode="after")
    def _rules(self) -> "Agent":
        err = fargate_pair_error(self.cpu, self.memory)
        if err:
            raise ValueError(err)
        if not self.min_count <= self.max_count:
            raise ValueError(f"min_count {self.min_count} must be <= max_count {self.max_count}")
        if not self.min_count <= self.desired_count <= self.max_count:
            raise ValueError(
                f"desired_count {self.desired_count} must lie within min_count..max_count "
                f"({self.min_count}..{self.max_count})"
            )
        return self


class Flows(_Model):
    cpu: int = 1024
    memory: int = 2048
    task_role_extra_statements: list[dict[str, Any]] = []

    @field_validator("task_role_extra_statements")
    @classmethod
    def _statements(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        allowed = {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}
        for i, st in enumerate(v):
            unknown = set(st) - allowed
            if unknown:
                raise ValueError(f"statement {i}: unknown keys {sorted(unknown)}; allowed {sorted(allowed)}")
            if st.get("Effect") not in ("Allow", "Deny"):
                raise ValueError(f"statement {i}: Effect must be 'Allow' or 'Deny'")
            if not (st.get("Action") or st.get("NotAction")):
                raise ValueError(f"statement {i}: Action is required")
            if not (st.get("Resource") or st.get("NotResource")):
                raise ValueError(f"statement {i}: Resource is required")
            actions = st.get("Action") or st.get("NotAction")
            for a in [actions] if isinstance(actions, str) else actions:
                if not (a == "*" or re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9*]+", a)):
                    raise ValueError(f"statement {i}: {a!r} is not an IAM action (service:Action)")
        return v

    @model_validator(mode="after")
    def _pair(self) -> "Flows":
        err = fargate_pair_error(self.cpu, self.memory)
        if err:
            raise ValueError(err)
        return self


class Logs(_Model):
    retention_days: int = 30

    @field_validator("retention_days")
    @classmethod
    def _retention(cls, v: int) -> int:
        if v not in LOG_RETENTION_DAYS:
            raise ValueError(f"CloudWatch accepts only these retention values: {list(LOG_RETENTION_DAYS)}")
        return v


class Ecr(_Model):
    images_kept: int = Field(500, ge=1, le=10000)
    tag_mutability: Literal["IMMUTABLE", "MUTABLE"] = "IMMUTABLE"


class S3(_Model):
    noncurrent_version_days: int = Field(30, ge=1, le=3650)


class CircleCI(_Model):
    org_id: str
    project_id: str
    # The repository's VCS origin as CircleCI puts it in the OIDC token's subject, e.g.
    # "github.com/example-org/data-flows". Pinned so no crafted branch name can match.
    vcs_origin: str

    @field_validator("org_id", "project_id")
    @classmethod
    def _uuid(cls, v: str) -> str:
        if not UUID_RE.match(v):
            raise ValueError("must be a lowercase CircleCI UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")
        return v


    @field_validator("vcs_origin")
    @classmethod
    def _origin(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9.-]+(/[A-Za-z0-9._-]+)+", v):
            raise ValueError("must be the repository's origin without a scheme, e.g. github.com/example-org/data-flows")
        return v


class PrefectSettings(_Model):
    credentials_secret_name: str = ""
    # Schedule of the drift-check deployment (cron, UTC).
    drift_check_cron: str = "0 * * * *"
    # Whose agent pool runs the management deployments; default: the environment's last type.
    management_deployment_type: Literal["dev", "staging", "main"] | None = None
    # Seconds a mutating run waits for another one to finish before failing.
    lock_timeout_seconds: int = Field(600, ge=1, le=86400)
    # Notification block (any Prefect notification block, by "{block type slug}/{block name}",
    # e.g. "slack-webhook/infra-alerts") the drift-alert automation sends through;
    # empty = no automation (drift then only shows as a Failed run).
    alerts_block: str = ""

    @field_validator("drift_check_cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=v, timezone="UTC")
        except ValueError:
            raise ValueError("not a valid cron expression (5 fields: minute hour day month weekday)") from None
        return v

    @field_validator("alerts_block")
    @classmethod
    def _alerts_block(cls, v: str) -> str:
        if v and not BLOCK_REF_RE.match(v):
            raise ValueError("must name a notification block as '{block type slug}/{block name}', e.g. "
                             "'slack-webhook/infra-alerts' (the slug is in the block's page in the UI)")
        return v

    @field_validator("credentials_secret_name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v and not re.fullmatch(r"[A-Za-z0-9/_+=.@-]{1,512}", v):
            raise ValueError("secret names may contain only A-Za-z0-9/_+=.@-")
        if v and re.search(r"-[A-Za-z0-9]{6}$", v):
            raise ValueError("must not end with '-' and six characters (Secrets Manager confuses it with an ARN suffix)")
        return v


class InfraConfig(_Model):
    prefix: str
    region: str
    default_tags: dict[str, str]
    environments: dict[str, Environment]
    agent: Agent = Agent()
    flows: Flows = Flows()
    logs: Logs = Logs()
    ecr: Ecr = Ecr()
    s3: S3 = S3()
    circleci: CircleCI
    prefect: PrefectSettings = PrefectSettings()

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not PREFIX_RE.match(v):
            raise ValueError(
                "prefix must be 3-24 characters of a-z, 0-9 and '-', start with a letter and end with a letter "
                "or digit (it becomes part of bucket, role and queue names)"
            )
        if "--" in v:
            raise ValueError("prefix must not contain '--'")
        if v.startswith("prefect"):
            raise ValueError("prefix must not start with 'prefect': work pools are named '{prefix}-{type}' and "
                             "Prefect reserves pool names starting with 'prefect'")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not REGION_RE.match(v):
            raise ValueError("not an AWS region name such as 'us-east-1'")
        return v

    @field_validator("default_tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        for key in ("service", "team"):
            if not v.get(key):
                raise ValueError(f"default_tags must set {key!r}")
        for k, val in v.items():
            if k.lower().startswith("aws:"):
                raise ValueError(f"tag key {k!r}: keys starting with 'aws:' are reserved by AWS")
            if not TAG_KEY_RE.match(k) or len(val) > 256:
                raise ValueError(f"tag {k!r}: keys are 1-128 and values 0-256 characters of letters, digits, spaces and _.:/=+-@")
        if "managed-by" in v or "deployment-type" in v:
            raise ValueError("'managed-by' and 'deployment-type' are set by this project; remove them")
        return v

    @field_validator("environments")
    @classmethod
    def _envs(cls, v: dict[str, Environment]) -> dict[str, Environment]:
        if not v:
            raise ValueError("at least one environment is required")
        seen: dict[str, str] = {}
        for name, env in v.items():
            if not re.fullmatch(r"[a-z][a-z0-9-]{0,15}", name):
                raise ValueError(f"environment name {name!r} must be 1-16 of a-z, 0-9, '-'")
            for t in env.deployment_types:
                if t in seen:
                    raise ValueError(f"deployment type {t!r} is in both {seen[t]!r} and {name!r}")
                seen[t] = name
        return v

    @model_validator(mode="after")
    def _names(self) -> "InfraConfig":
        for env_name, env in self.environments.items():
            for t in env.deployment_types:
                err = bucket_name_error(flow_bucket_name(self.prefix, t, env.account_id))
                if err:
                    raise ValueError(f"environments.{env_name}: {err}")
        return self

    # --- derived values -------------------------------------------------------------
    def env(self, name: str) -> Environment:
        if name not in self.environments:
            raise ConfigError(
                f"environment {name!r} is not in infra.toml; configured: {', '.join(sorted(self.environments))}"
            )
        return self.environments[name]

    def is_protected(self, env_name: str) -> bool:
        protected = self.env(env_name).protected
        return env_name == "production" if protected is None else protected

    def management_type(self, env_name: str) -> str:
        env = self.env(env_name)
        chosen = self.prefect.management_deployment_type or env.deployment_types[-1]
        if chosen not in env.deployment_types:
            raise ConfigError(f"prefect.management_deployment_type = {chosen!r} is not a deployment type of "
                              f"environment {env_name!r} ({env.deployment_types})")
        return chosen

    def secret_name(self) -> str:
        return self.prefect.credentials_secret_name or f"{self.prefix}/prefect-credentials"


def flow_bucket_name(prefix: str, deployment_type: str, account_id: str) -> str:
    # Bucket names are global: the account id keeps two installs from colliding.
    return f"{prefix}-{deployment_type}-flows-{account_id}"


def _format_error(err: dict[str, Any], raw: dict[str, Any], source: str) -> str:
    loc = [str(p) for p in err.get("loc", ())]
    path = ".".join(loc) or "(top level)"
    value = raw
    for part in err.get("loc", ()):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            value = None
            break
    msg = err.get("msg", "invalid").removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key (check the spelling; see infra.toml's comments for the allowed keys)"
    elif err.get("type") == "missing":
        return f"{source}: {path}: required key is missing"
    shown = "" if value is None or isinstance(value, (dict, list)) and len(repr(value)) > 120 else f" = {value!r}"
    return f"{source}: {path}{shown}: {msg}"


def parse_config(raw: dict[str, Any], source: str = "infra.toml") -> InfraConfig:
    try:
        return InfraConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [_format_error(e, raw, source) for e in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> InfraConfig:
    """Read and validate `infra.toml`; `overrides` (nested dict) are merged on top."""
    p = Path(path) if path else DEFAULT_CONFIG_PATH
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found (pass --config PATH)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    if overrides:
        raw = deep_merge(raw, overrides)
    return parse_config(raw, source=p.name)


REPLACE = "__replace__"


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Merge `over` into `base`; a dict carrying `__replace__` replaces instead of merging."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and v.get(REPLACE):
            out[k] = {kk: vv for kk, vv in v.items() if kk != REPLACE}
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out
