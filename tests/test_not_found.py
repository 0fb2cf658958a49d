"""One not-found idiom for every AWS read: `aws.absent` with the service's `Missing` test.

First as a table of each service's real "not there" error (and errors that are not),
then over HTTP against the emulator: reading a missing resource of every kind is None,
and any other error is raised translated, naming the operation and the resource."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from infra_tasks import autoscaling, ec2, ecr, ecs, ecs_taskdef, engine, events, iam, logs, s3, secrets, sqs
from infra_tasks.aws import InfraError, Missing, absent
from infra_tasks.model import Resource


def client_error(code: str, message: str = "", op: str = "Op") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, op)


# (service's test, error code, message, "not there"?)
CASES = [
    ("iam", iam.MISSING, "NoSuchEntity", "The role with name x cannot be found.", True),
    ("iam", iam.MISSING, "AccessDenied", "not authorized to perform: iam:GetRole", False),
    ("s3 head", s3.MISSING, "404", "Not Found", True),
    ("s3 head foreign", s3.MISSING, "403", "Forbidden", False),
    ("s3 policy", s3.MISSING, "NoSuchBucketPolicy", "The bucket policy does not exist", True),
    ("s3 encryption", s3.MISSING, "ServerSideEncryptionConfigurationNotFoundError", "", True),
    ("s3 public access", s3.MISSING, "NoSuchPublicAccessBlockConfiguration", "", True),
    ("s3 lifecycle", s3.MISSING, "NoSuchLifecycleConfiguration", "", True),
    ("s3 tags", s3.MISSING, "NoSuchTagSet", "The TagSet does not exist", True),
    ("s3 throttled", s3.MISSING, "SlowDown", "Please reduce your request rate.", False),
    ("ecr repository", ecr.MISSING, "RepositoryNotFoundException", "", True),
    ("ecr lifecycle", ecr.MISSING, "LifecyclePolicyNotFoundException", "", True),
    ("ecr image", ecr.MISSING, "ImageNotFoundException", "The image with imageId … does not exist", True),
    ("ecr denied", ecr.MISSING, "AccessDeniedException", "", False),
    ("ecs cluster", ecs.MISSING, "ClusterNotFoundException", "Cluster not found.", True),
    ("ecs service", ecs.MISSING, "ServiceNotFoundException", "", True),
    ("ecs bad request", ecs.MISSING, "InvalidParameterException", "", False),
    ("ecs task definition", ecs_taskdef.MISSING, "ClientException", "Unable to describe task definition.", True),
    ("ecs other ClientException", ecs_taskdef.MISSING, "ClientException", "Revision is invalid.", False),
    ("sqs", sqs.MISSING, "AWS.SimpleQueueService.NonExistentQueue", "", True),
    ("sqs json protocol", sqs.MISSING, "QueueDoesNotExist", "", True),
    ("sqs throttled", sqs.MISSING, "ThrottlingException", "", False),
    ("events", events.MISSING, "ResourceNotFoundException", "Rule x does not exist.", True),
    ("logs", logs.MISSING, "ResourceNotFoundException", "The specified log group does not exist.", True),
    ("secrets", secrets.MISSING, "ResourceNotFoundException", "Secrets Manager can't find the secret.", True),
    ("secrets denied", secrets.MISSING, "AccessDeniedException", "", False),
    ("autoscaling", autoscaling.MISSING, "ObjectNotFoundException", "", True),
    ("ec2 group", ec2.MISSING, "InvalidGroup.NotFound", "", True),
    ("ec2 vpc", ec2.MISSING, "InvalidVpcID.NotFound", "", True),
    ("ec2 throttled", ec2.MISSING, "RequestLimitExceeded", "", False),
]


@pytest.mark.parametrize("name,missing,code,message,expected", CASES, ids=[c[0] for c in CASES])
def test_each_service_says_not_there_its_own_way(name, missing: Missing, code: str, message: str,
                                                  expected: bool) -> None:
    exc = client_error(code, message)
    assert missing(exc) is expected

    def read() -> dict:
        raise exc
    if expected:
        assert absent("kind/x", read, missing=missing) is None
    else:
        with pytest.raises(InfraError) as err:
            absent("kind/x", read, missing=missing)
        assert f"Op failed for kind/x: {code}" in str(err.value) and "next step:" in str(err.value)


def test_absent_passes_answers_through_and_names_a_dead_endpoint() -> None:
    assert absent("kind/x", lambda **kw: kw, Bucket="b", missing=s3.MISSING) == {"Bucket": "b"}

    def unreachable() -> None:
        raise EndpointConnectionError(endpoint_url="https://s3.amazonaws.com")
    with pytest.raises(InfraError, match="(?s)read failed for kind/x.*AWS did not answer"):
        absent("kind/x", unreachable, missing=s3.MISSING)


def test_message_fragments_only_with_their_code() -> None:
    # A generic code is "not there" only together with the message that says so.
    assert not ecs_taskdef.MISSING(client_error("InvalidParameterException", "Unable to describe task definition."))
    assert not Missing()(ValueError("NoSuchEntity"))


# --- over HTTP, against the emulator ---------------------------------------------------

VPC = "vpc-0123456789abcdef0"
MISSING_RESOURCES = [
    Resource("s3.bucket", "nobody-s-bucket-111111111111", {}),
    Resource("iam.role", "nobody-role", {}),
    Resource("iam.policy", "nobody-policy", {}, ident={"arn": "arn:aws:iam::222222222222:policy/nobody-policy"}),
    Resource("iam.oidc_provider", "oidc.circleci.com/org/nobody", {}, ident={"audience": "nobody"}),
    Resource("ecr.repository", "nobody-repo", {}),
    Resource("ecs.cluster", "nobody-cluster", {}),
    Resource("ecs.service", "nobody-service", {}, ident={"cluster": "nobody-cluster"}),
    Resource("ecs.task_definition", "nobody-family", {}),
    Resource("sqs.queue", "nobody-queue", {}),
    Resource("events.rule", "nobody-rule", {}),
    Resource("logs.group", "/ecs/nobody/agent", {}),
    Resource("secretsmanager.secret", "nobody/secret", {}),
    Resource("autoscaling.target", "service/nobody-cluster/nobody-service", {}),
    Resource("autoscaling.policy", "nobody-cpu", {}, ident={"resource_id": "service/nobody-cluster/nobody-service"}),
    Resource("ec2.security_group", "nobody-sg", {}, ident={"vpc_id": VPC}),
]


def test_every_aws_kind_is_covered() -> None:
    assert {r.kind for r in MISSING_RESOURCES} == {k for k in engine.HANDLERS if not k.startswith("prefect.")}


@pytest.mark.parametrize("res", MISSING_RESOURCES, ids=[r.kind for r in MISSING_RESOURCES])
def test_reading_a_missing_resource_is_none(aws_env, res: Resource) -> None:
    from infra_tasks import aws

    assert engine.HANDLERS[res.kind].read(res) is None
    assert aws.CALLS.total > 0 and aws.CALLS.mutating() == []  # asked AWS, over HTTP, and changed nothing


def test_thin_reads_of_missing_things_are_none(aws_env, boto) -> None:
    """The reads below a resource: configurations never set, a cluster-less service, an
    image never pushed, a task-definition family never registered."""
    boto("s3").create_bucket(Bucket="bare-bucket")
    boto("ecr").create_repository(repositoryName="bare-repo")
    assert s3.head_bucket("no-such-bucket-here") is None
    assert s3.head_bucket("bare-bucket") is not None
    for op in ("get_bucket_policy", "get_bucket_lifecycle_configuration", "get_public_access_block",
               "get_bucket_tagging"):
        assert s3.get("bare-bucket", op) == {}, op
    assert s3.get("no-such-bucket-here", "get_bucket_policy") == {}
    assert iam.get_role("nobody") is None and iam.get_oidc_provider(
        "arn:aws:iam::222222222222:oidc-provider/oidc.circleci.com/org/nobody") is None
    assert ecr.describe_repository("nobody") is None
    assert ecr.lifecycle_policy_text("bare-repo") is None
    assert ecr.image_exists("bare-repo", "never-pushed") is False
    assert ecr.image_exists("no-such-repo", "never-pushed") is False
    assert ecs.describe_cluster("nobody") is None and ecs.describe_service("nobody", "nobody") is None
    assert ecs_taskdef.describe_task_definition("nobody") is None
    assert sqs.queue_url("nobody") is None
    assert events.describe_rule("nobody") is None
    assert logs.describe_log_group("/ecs/nobody") is None
    assert secrets.describe_secret("nobody") is None
    assert autoscaling.describe_scalable_target("service/c/s") is None
    assert ec2.describe_security_group("nobody", VPC) is None


def test_other_errors_are_raised_translated_over_http(aws_env) -> None:
    from .faults import Injector, aws_error

    denied = aws_error("iam", "AccessDenied", "User x is not authorized to perform: iam:GetRole")
    with Injector("before-send.iam.GetRole", denied, times=None), pytest.raises(InfraError) as err:
        iam.get_role("nobody")
    msg = str(err.value)
    assert msg.startswith("GetRole failed for iam.role/nobody: AccessDenied")
    assert "the credentials in use lack this permission" in msg
