"""Injected faults on the wire (botocore `before-send` hooks short-circuit a request
with AWS's error response): throttling, IAM propagation delay, a failing call."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
from botocore.awsrequest import AWSResponse

from infra_tasks import aws

P = "data-flows"


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def json_error(code: str, message: str, status: int = 400) -> AWSResponse:
    body = json.dumps({"__type": code, "message": message}).encode()
    return AWSResponse("https://ecs.us-east-1.amazonaws.com/", status,
                       {"content-type": "application/x-amz-json-1.1", "x-amzn-requestid": "fault"}, _Raw(body))


class Injector:
    """Fail the first `times` requests of one operation (None = always)."""

    def __init__(self, event: str, response: AWSResponse, times: int | None) -> None:
        self.event, self.response, self.times, self.hits = event, response, times, 0

    def __call__(self, **_: Any) -> AWSResponse | None:
        if self.times is None or self.hits < self.times:
            self.hits += 1
            return self.response
        return None

    def __enter__(self) -> "Injector":
        aws.add_handler(self.event, self)
        return self

    def __exit__(self, *exc: Any) -> None:
        aws.remove_handler(self)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setenv("INFRA_IAM_RETRY_SLEEP", "0.05")
    aws.reset_clients()


def test_throttling_is_retried(bootstrap, capsys) -> None:
    with Injector("before-send.ecs.RegisterTaskDefinition",
                  json_error("ThrottlingException", "Rate exceeded"), times=2) as inj:
        assert bootstrap("--yes") == 0
    assert inj.hits == 2
    assert bootstrap("--plan") == 0


def test_throttling_gives_up_cleanly(bootstrap, capsys, monkeypatch) -> None:
    monkeypatch.setenv("INFRA_AWS_MAX_ATTEMPTS", "2")
    with Injector("before-send.ecs.RegisterTaskDefinition",
                  json_error("ThrottlingException", "Too many concurrent attempts to create a new revision"),
                  times=None) as inj:
        assert bootstrap("--yes") == 1
    err = capsys.readouterr().err
    assert f"ecs.task_definition/{P}-main-agent" in err
    assert "ThrottlingException" in err and "lower --parallelism" in err
    assert f"not attempted (a dependency failed): ecs.service/{P}-main-agent" in err
    assert inj.hits == 4  # two attempts for each deployment type's task definition


def test_iam_propagation_delay_is_retried(bootstrap) -> None:
    with Injector("before-send.ecs.CreateService",
                  json_error("InvalidParameterException", "Unable to assume role and validate the specified "
                             "targetGroupArn. Please verify that the ECS service role being passed has the "
                             "proper permissions."), times=3) as inj:
        assert bootstrap("--yes") == 0
    assert inj.hits == 3


def test_iam_propagation_gives_up_with_clear_error(bootstrap, capsys, monkeypatch) -> None:
    monkeypatch.setenv("INFRA_IAM_PROPAGATION_TIMEOUT", "0.3")
    with Injector("before-send.ecs.RegisterTaskDefinition",
                  json_error("ClientException", "Role is not valid"), times=None):
        assert bootstrap("--yes") == 1
    err = capsys.readouterr().err
    assert "still rejects the IAM role" in err and "propagate within two minutes" in err


def test_other_errors_are_not_retried_and_rerun_finishes(bootstrap, boto, capsys) -> None:
    with Injector("before-send.ecs.CreateService",
                  json_error("InvalidParameterException", "boom"), times=None) as inj:
        assert bootstrap("--yes") == 1
    assert inj.hits == 2  # once per service, no retries for an unrelated error
    err = capsys.readouterr().err
    assert "InvalidParameterException: boom" in err
    assert f"not attempted (a dependency failed): autoscaling.target/service/{P}-main/{P}-main-agent" in err
    # Completed work is kept; the re-run applies only what is left.
    aws.CALLS.reset()
    assert bootstrap("--yes") == 0
    mutating = aws.CALLS.mutating()
    assert sorted(set(mutating)) == ["application-autoscaling:PutScalingPolicy",
                                     "application-autoscaling:RegisterScalableTarget", "ecs:CreateService"]
    assert bootstrap("--plan") == 0
