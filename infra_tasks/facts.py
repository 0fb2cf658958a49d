"""Facts: everything a plan depends on besides the config, gathered once, up front.

pyinfra's rule: read first, then decide from what was read. Desired state
(`desired.py`, `desired_prefect.py`) and `engine.decide()` take a `Facts` and read no
environment variable, no clock and no API of their own.

Gathered here:
- the account behind the credentials (and the account guard), region, partition and the
  caller's ARN;
- the resolved network (VPC, subnets, which of them are public);
- where AWS is: the embedded sandbox, an `--endpoint-url`, and whether that endpoint is
  the moto emulator (whose gaps the comparison allows for);
- Prefect credentials given in the environment, and whether rotation was asked for;
- whether the agent image is in ECR (the agent waits for the push when it is not).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import ecr, emulator
from .aws import BotoCoreError, ClientError, InfraError, client, translate, use_region
from .config import InfraConfig
from .ec2 import NetworkFacts, resolve_network
from .model import Sensitive
from .names import Account


@dataclass(frozen=True)
class Facts:
    account_id: str
    region: str
    network: NetworkFacts
    partition: str = "aws"
    # Who runs this: the caller's ARN (sts:GetCallerIdentity), to refuse up front what
    # one of the project's own roles may not do.
    caller_arn: str = ""
    # The embedded sandbox (an emulator account, a process pool instead of the ECS agent).
    sandbox: bool = False
    # AWS_ENDPOINT_URL: every client talks to it; the AWS credentials blocks carry it too.
    endpoint_url: str | None = None
    # The endpoint is the moto emulator: properties it does not store are not compared.
    emulated: bool = False
    # PREFECT_API_URL and PREFECT_API_KEY from the environment (both, or None).
    prefect_credentials: Sensitive | None = None
    prefect_api_url: str | None = None
    # `bootstrap --rotate-credentials`: keep the secret equal to the given credentials.
    rotate_credentials: bool = False
    # The agent image is in the project's ECR repository (None: an external registry,
    # not ours to check).
    agent_image_present: bool | None = None


class AccountMismatch(InfraError):
    pass


def caller_account() -> tuple[str, str]:
    ident = client("sts").get_caller_identity()
    return ident["Account"], ident["Arn"]


def account_guard(cfg: InfraConfig, env_name: str) -> tuple[str, str]:
    """The credentials must belong to the environment's configured account."""
    want = cfg.env(env_name).account_id
    try:
        got, arn = caller_account()
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, "sts:GetCallerIdentity", f"environment {env_name!r}") from None
    if got != want:
        raise AccountMismatch(
            f"account guard: environment {env_name!r} is configured for account {want} (infra.toml "
            f"environments.{env_name}.account_id) but the credentials in use belong to account {got} ({arn}); "
            f"switch AWS_PROFILE to the {env_name} account or fix the account id. Nothing was changed."
        )
    return got, arn


def partition_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[1] if len(parts) > 2 and parts[0] == "arn" and parts[1] else "aws"


def prefect_credentials() -> Sensitive | None:
    url, key = os.environ.get("PREFECT_API_URL"), os.environ.get("PREFECT_API_KEY")
    if url and key:
        return Sensitive({"PREFECT_API_URL": url, "PREFECT_API_KEY": key})
    return None


def gather_facts(cfg: InfraConfig, env_name: str) -> Facts:
    use_region(cfg.region)
    account, caller = account_guard(cfg, env_name)
    partition = partition_of(caller)
    try:
        network = resolve_network(cfg.env(env_name).network, f"environments.{env_name}")
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, getattr(exc, "operation_name", "reading the network"),
                        f"the network of environment {env_name!r}") from None
    image_present = None
    if not cfg.agent.image_repository:
        a = Account(cfg, env_name, account, cfg.region, partition)
        try:
            image_present = ecr.image_exists(a.ecr_repository, cfg.agent.image_tag)
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, "ecr:DescribeImages", f"ecr.repository/{a.ecr_repository}") from None
    return Facts(
        account_id=account, region=cfg.region, network=network, partition=partition, caller_arn=caller,
        sandbox=bool(os.environ.get("INFRA_SANDBOX_ACCOUNT")),
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
        emulated=emulator.detected(),
        prefect_credentials=prefect_credentials(),
        prefect_api_url=os.environ.get("PREFECT_API_URL") or None,
        rotate_credentials=os.environ.get("INFRA_ROTATE_CREDENTIALS") == "1",
        agent_image_present=image_present,
    )
