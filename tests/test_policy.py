"""The IAM policy normaliser: equivalent documents compare equal, different ones don't."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from infra_tasks import policy

BASE = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::b/*"]}]}

EQUIVALENT = [
    ("single value vs one-item list",
     {"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "s3:GetObject",
                                             "Resource": "arn:aws:s3:::b/*"}}, BASE),
    ("url-encoded text", quote(json.dumps(BASE)), BASE),
    ("json text", json.dumps(BASE), BASE),
    ("empty sid", {"Version": "2012-10-17", "Statement": [
        {"Sid": "", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}]}, BASE),
    ("statement order",
     {"Version": "2012-10-17", "Statement": [
         {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"},
         {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]},
     {"Version": "2012-10-17", "Statement": [
         {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"},
         {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"}]}),
    ("action order and duplicates",
     {"Statement": [{"Effect": "Allow", "Action": ["b:B", "a:A", "a:A"], "Resource": "*"}], "Version": "2012-10-17"},
     {"Statement": [{"Effect": "Allow", "Action": ["a:A", "b:B"], "Resource": "*"}], "Version": "2012-10-17"}),
    ("principal star forms",
     {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "*"}]},
     {"Version": "2012-10-17", "Statement": [
         {"Effect": "Deny", "Principal": {"AWS": ["*"]}, "Action": "s3:*", "Resource": "*"}]}),
    ("service principal scalar vs list",
     {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                                              "Action": "sts:AssumeRole"}]},
     {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": ["ecs-tasks.amazonaws.com"]},
                                              "Action": ["sts:AssumeRole"]}]}),
    ("condition bool as string and scalar",
     {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*",
                                              "Condition": {"Bool": {"aws:SecureTransport": False}}}]},
     {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*",
                                              "Condition": {"Bool": {"aws:SecureTransport": ["false"]}}}]}),
    ("condition value order",
     {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "a:A", "Resource": "*",
                                              "Condition": {"StringLike": {"k": ["b", "a"]}}}]},
     {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "a:A", "Resource": "*",
                                              "Condition": {"StringLike": {"k": ["a", "b"]}}}]}),
    ("duplicate statements",
     {"Version": "2012-10-17", "Statement": [BASE["Statement"][0], BASE["Statement"][0]]}, BASE),
]

DIFFERENT = [
    ("other action", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::b/*"}]}, BASE),
    ("resource case matters", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::B/*"}]}, BASE),
    ("effect", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}]}, BASE),
    ("extra statement", {"Version": "2012-10-17", "Statement": [
        BASE["Statement"][0], {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}, BASE),
    ("condition added", {"Version": "2012-10-17", "Statement": [
        {**BASE["Statement"][0], "Condition": {"StringEquals": {"aws:SourceAccount": "1"}}}]}, BASE),
    ("version", {"Version": "2008-10-17", "Statement": BASE["Statement"]}, BASE),
    ("missing version is the old default", {"Statement": BASE["Statement"]}, BASE),
    ("sid differs", {"Version": "2012-10-17", "Statement": [{**BASE["Statement"][0], "Sid": "X"}]}, BASE),
]


@pytest.mark.parametrize("name,a,b", EQUIVALENT, ids=[c[0] for c in EQUIVALENT])
def test_equivalent(name: str, a: object, b: object) -> None:
    assert policy.equivalent(a, b)


@pytest.mark.parametrize("name,a,b", DIFFERENT, ids=[c[0] for c in DIFFERENT])
def test_different(name: str, a: object, b: object) -> None:
    assert not policy.equivalent(a, b)


def test_normalise_none() -> None:
    assert policy.normalise(None) is None
    assert policy.normalise("") is None


def test_generated_policies_pass_parliament_without_errors(cfg) -> None:
    """Every identity policy we write is valid IAM grammar with known actions (offline linter)."""
    parliament = pytest.importorskip("parliament")
    from infra_tasks import iam_policies
    from infra_tasks.names import Account

    a = Account(cfg, "production", "222222222222", "us-east-1")
    docs = {"infra_read": iam_policies.infra_read(a), "infra_write": iam_policies.infra_write(a),
            "ci_deploy": iam_policies.ci_deploy(a), "secret_read": iam_policies.secret_read(a)}
    for d in a.deployments:
        docs[f"agent_task_{d.t}"] = iam_policies.agent_task(d)
        docs[f"flow_execution_{d.t}"] = iam_policies.flow_execution(d)
        docs[f"flow_task_{d.t}"] = iam_policies.flow_task(d, [])
    for name, doc in docs.items():
        findings = parliament.analyze_policy_string(json.dumps(doc)).findings
        bad = [f for f in findings if f.issue in ("UNKNOWN_ACTION", "UNKNOWN_PREFIX", "MALFORMED", "INVALID_ARN",
                                                   "UNKNOWN_OPERATOR", "RESOURCE_MISMATCH")]
        assert not bad, f"{name}: {[(f.issue, f.detail) for f in bad]}"
