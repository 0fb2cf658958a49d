"""Injected faults on the wire (botocore `before-send` hooks short-circuit a request
with AWS's error response, in each service's own protocol): throttling on every
service, IAM propagation delay, 5xx, read timeouts, AccessDenied, credentials that
expire mid-run, and the Prefect API going away mid-apply. Each ends with a message
naming the resource and the next step, and a plain re-run converges."""

from __future__ import annotations

from typing import Any

from botocore.awsrequest import AWSResponse

import pytest

from infra_tasks import aws

from .conftest import P
from .faults import Injector, aws_error, json_error


THROTTLE = {  # each service's throttling error
    "s3": ("SlowDown", 503), "ec2": ("RequestLimitExceeded", 503), "iam": ("Throttling", 400),
    "sts": ("Throttling", 400), "sqs": ("ThrottlingException", 400),
}
SERVICES = ["sts", "s3", "ecr", "logs", "secretsmanager", "iam", "ec2", "sqs", "events", "ecs",
            "application-autoscaling"]


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


# --- every service, every kind of fault (dev: the smaller stack) -------------------------

def dev_bootstrap(*flags: str) -> int:
    from .conftest import run_cli

    return run_cli("--env", "dev", "--no-prefect", *flags)


def test_every_service_used_is_throttled_and_retried(dev_account) -> None:
    def throttled(svc: str) -> AWSResponse:
        code, status = THROTTLE.get(svc, ("ThrottlingException", 400))
        return aws_error(svc, code, "Rate exceeded", status)

    injectors = [Injector(f"before-send.{svc}", throttled(svc), times=2) for svc in SERVICES]
    for inj in injectors:
        inj.__enter__()
    try:
        assert dev_bootstrap("--yes") == 0
    finally:
        for inj in injectors:
            inj.__exit__()
    assert {inj.event: inj.hits for inj in injectors} == {f"before-send.{svc}": 2 for svc in SERVICES}
    aws.CALLS.reset()
    assert dev_bootstrap("--plan") == 0


def test_a_5xx_mid_apply_is_retried(dev_account) -> None:
    with Injector("before-send.ecs.CreateService", json_error("ServerException", "internal", 500), times=2) as inj:
        assert dev_bootstrap("--yes") == 0
    assert inj.hits == 2


def test_a_read_timeout_mid_apply_is_retried_and_a_lasting_one_is_named(dev_account, moto_url, capsys,
                                                                         monkeypatch) -> None:
    from botocore.exceptions import ReadTimeoutError

    def timeout(**_: Any) -> None:
        raise ReadTimeoutError(endpoint_url="https://iam.amazonaws.com/")

    class Once:
        hits = 0

        def __call__(self, **kw: Any) -> None:
            self.hits += 1
            if self.hits == 1:
                timeout()

    once = Once()
    aws.add_handler("before-send.iam.CreateRole", once)
    try:
        assert dev_bootstrap("--yes") == 0
    finally:
        aws.remove_handler(once)
    assert once.hits > 1  # the timed-out call was sent again
    # A timeout that lasts past the retries names the resource and says what to do.
    from infra_tasks import emulator

    emulator.reset(moto_url)
    monkeypatch.setenv("INFRA_AWS_MAX_ATTEMPTS", "2")
    aws.add_handler("before-send.logs.CreateLogGroup", timeout)
    try:
        assert dev_bootstrap("--yes") == 1
    finally:
        aws.remove_handler(timeout)
    err = capsys.readouterr().err
    assert "create failed for logs.group//ecs/data-flows-dev/agent: Read timeout" in err
    assert "AWS did not answer after all retries" in err and "Traceback" not in err
    assert dev_bootstrap("--yes") == 0


def test_access_denied_on_one_resource_names_it_and_the_rest_is_applied(dev_account, capsys) -> None:
    denied = aws_error("logs", "AccessDeniedException", "User: arn:aws:sts::111111111111:assumed-role/x/y is not "
                       "authorized to perform: logs:CreateLogGroup")
    with Injector("before-send.logs.CreateLogGroup", denied, times=None):
        assert dev_bootstrap("--yes") == 1
    err = capsys.readouterr().err
    assert "failed: CreateLogGroup failed for logs.group//ecs/data-flows-dev/agent: AccessDeniedException" in err
    assert "the credentials in use lack this permission" in err and "Traceback" not in err
    aws.CALLS.reset()
    assert dev_bootstrap("--yes") == 0
    assert "logs:CreateLogGroup" in aws.CALLS.mutating() and "ecs:CreateCluster" not in aws.CALLS.mutating()


def test_credentials_that_expire_mid_run(dev_account, capsys) -> None:
    """After the fifth change has been sent, every service answers ExpiredToken (as AWS
    does when a session ends): the run stops, says to refresh the credentials, and a
    re-run converges."""
    changes = [0]

    def expire(event_name: str = "", **_: Any) -> AWSResponse | None:
        _, service, operation = event_name.split(".")
        if changes[0] < 5:
            changes[0] += aws.is_mutating(operation)
            return None
        return aws_error(service, "ExpiredTokenException" if service not in ("iam", "sts", "ec2", "s3")
                         else "ExpiredToken", "The security token included in the request is expired")

    aws.add_handler("before-send", expire)
    try:
        assert dev_bootstrap("--yes") == 1
    finally:
        aws.remove_handler(expire)
    err = capsys.readouterr().err
    assert "apply stopped:" in err and "ExpiredToken" in err
    assert "the session credentials expired; refresh them" in err and "Traceback" not in err
    assert dev_bootstrap("--yes") == 0


def test_prefect_api_gone_mid_apply(dev_account, capsys, monkeypatch) -> None:
    """The Prefect API stops answering after the third Prefect write: the run names the
    Prefect object and the API, and a re-run converges."""
    import httpx

    from infra_tasks import prefect_objects

    from .conftest import run_cli

    record, writes = prefect_objects._record, [0]  # noqa: SLF001

    def gone(op: str) -> None:
        writes[0] += 1
        if writes[0] > 3:
            raise httpx.ConnectError("All connection attempts failed")
        record(op)

    monkeypatch.setattr(prefect_objects, "_record", gone)
    assert run_cli("--env", "dev", "--yes") == 1
    monkeypatch.setattr(prefect_objects, "_record", record)
    err = capsys.readouterr().err
    assert "failed for prefect." in err and "did not answer (ConnectError" in err
    assert "check that the Prefect server is up" in err and "Traceback" not in err
    assert run_cli("--env", "dev", "--yes") == 0
    aws.CALLS.reset()
    assert run_cli("--env", "dev", "--plan") == 0


@pytest.mark.parametrize("where", ["registering its type", "the server's first document"])
def test_a_block_save_meeting_another_is_saved(where, prefect_clean, monkeypatch) -> None:
    """Against a remote API blocks are saved in parallel. Two races, each injected as a
    409 on the first try: Prefect registers a block's type and schema by reading, then
    creating (two saves at once both create; ObjectAlreadyExists); a new server's first
    block documents create its key for secrets (409 on `uq_configuration__key`, seen on
    PostgreSQL), which Prefect's client reads as "exists", and its overwrite then finds no
    such document (ObjectNotFound). The block is saved all the same."""
    from prefect.blocks.core import Block
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.exceptions import ObjectAlreadyExists
    from prefect_aws import AwsCredentials

    from infra_tasks.model import Resource
    from infra_tasks.prefect_objects import BlockHandler

    conflicts = [1]

    def once(original: Any) -> Any:
        def conflicting(*args: Any, **kwargs: Any) -> Any:
            if conflicts[0]:
                conflicts[0] -= 1
                raise ObjectAlreadyExists(http_exc=Exception("409 Conflict"))
            return original(*args, **kwargs)
        return conflicting

    if where == "registering its type":
        register = Block.register_type_and_schema.__func__
        monkeypatch.setattr(Block, "register_type_and_schema", classmethod(once(register)))
    else:
        monkeypatch.setattr(SyncPrefectClient, "create_block_document", once(SyncPrefectClient.create_block_document))
    res = Resource("prefect.block", "aws-credentials/raced", {})
    out = BlockHandler().create(res, {"region_name": "eu-west-1", "endpoint_url": "", "static_keys": False})
    assert conflicts == [0]  # the conflict happened
    assert out["name"] == "raced" and AwsCredentials.load("raced").region_name == "eu-west-1"
