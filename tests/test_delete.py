"""The teardown's part of every AWS handler: `delete` (and `delete_blocker`), against the
emulator over HTTP.

For each kind: made, read, deleted, read again as absent, deleted again as a no-op. Then
what AWS requires first (a bucket's versions and delete markers, a role's policies and
instance profiles), what must not be deleted (a policy someone else's role uses, a
cluster still running flow runs), the bounded waits (a service draining, a security group
whose network interfaces AWS releases late, a cluster whose services drain) and a delete
killed half-way finishing on the next call.

The emulator differs from AWS in a few places; those are patched here, in the harness
(the emulator runs in this process), never in the product: see `aws_like_emulator`."""

from __future__ import annotations

import functools
import io
import json
from typing import Any, Callable, Iterator

import pytest
from botocore.awsrequest import AWSResponse

from infra_tasks import autoscaling, aws, ec2, ecr, ecs, engine, events, logs, progress, s3, secrets, sqs
from infra_tasks.aws import InfraError
from infra_tasks.handler import Handler
from infra_tasks.model import OWNER_TAG, Observed, Resource, Sensitive

from .conftest import PROD_ACCOUNT
from .faults import Injector, _Raw, aws_error, json_error

OWNER = "prefect-aws-stack/data-flows"
TAGS = {OWNER_TAG: OWNER, "environment": "production"}
FOREIGN_TAGS = {OWNER_TAG: "someone-else"}
TRUST = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                                                 "Action": "sts:AssumeRole"}]}
DOC = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
H = engine.HANDLERS


def handler(res: Resource) -> Handler:
    return H[res.kind]


def read(res: Resource) -> Observed:
    observed = handler(res).read(res)
    assert observed is not None, f"{res.key} should exist"
    return observed


def delete_twice(res: Resource) -> Observed:
    """Read, delete (mutating calls counted), read as absent, delete again as a no-op."""
    observed = read(res)
    aws.CALLS.reset()
    handler(res).delete(res, observed)
    assert aws.CALLS.mutating(), "a delete is counted as mutating"
    assert handler(res).read(res) is None
    handler(res).delete(res, observed)  # already gone: not an error
    return observed


def aws_tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


@pytest.fixture
def boto(boto: Callable[[str], Any]) -> Callable[[str], Any]:
    """conftest's raw clients, one per service (making a client costs more than most calls)."""
    return functools.lru_cache(maxsize=None)(boto)


@pytest.fixture
def reporter() -> Iterator[io.StringIO]:
    """What the waits report (the teardown's progress in plain lines)."""
    out = io.StringIO()
    progress.use(progress.Reporter(1, live=False, stream=out))
    yield out
    progress.use(None)


class FailOn:
    """Answer the `nth` request of one operation (1-based) with `response`: a run killed,
    or refused, half-way through."""

    def __init__(self, event: str, nth: int, response: AWSResponse) -> None:
        self.event, self.nth, self.response, self.seen = event, nth, response, 0

    def __call__(self, **_: Any) -> AWSResponse | None:
        self.seen += 1
        return self.response if self.seen == self.nth else None

    def __enter__(self) -> "FailOn":
        aws.add_handler(self.event, self)
        return self

    def __exit__(self, *exc: Any) -> None:
        aws.remove_handler(self)


# --- the emulator as AWS answers ---------------------------------------------------------


@pytest.fixture(autouse=True)
def aws_like_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where moto 5.2.5 answers unlike AWS, for what these tests exercise:
    - ListEntitiesForPolicy ignores PolicyUsageFilter and never lists permissions-boundary
      use; AWS lists attachments (PermissionsPolicy) and boundaries (PermissionsBoundary).
    - DeregisterScalableTarget keeps the target's scaling policies; AWS deletes them.
    - Deregistering a missing target or deleting a missing scaling policy answers
      ValidationException; AWS answers ObjectNotFoundException.
    - ListTaskDefinitions matches familyPrefix exactly; AWS matches it as a prefix."""
    from moto.applicationautoscaling.models import ApplicationAutoscalingBackend
    from moto.core.exceptions import JsonRESTError
    from moto.ecs.models import EC2ContainerServiceBackend
    from moto.iam.responses import IamResponse

    original_entities = IamResponse.list_entities_for_policy

    def list_entities_for_policy(self: Any) -> Any:
        usage = self._get_param("PolicyUsageFilter")
        arn = self._get_param("PolicyArn")
        result = original_entities(self)
        if usage == "PermissionsBoundary":
            roles, _ = self.backend.list_roles(None, None, None)
            result.result.update(PolicyUsers=[], PolicyGroups=[],
                                 PolicyRoles=[r for r in roles if r.permissions_boundary_arn == arn])
        return result

    def deregister_scalable_target(self: Any, namespace: str, r_id: str, dimension: str) -> None:
        if not self._scalable_target_exists(r_id, dimension):
            raise JsonRESTError("ObjectNotFoundException", f"No scalable target registered for service namespace: "
                                f"{namespace}, resource ID: {r_id}, scalable dimension: {dimension}")
        del self.targets[dimension][r_id]
        for key, p in list(self.policies.items()):
            if (p.service_namespace, p.resource_id, p.scalable_dimension) == (namespace, r_id, dimension):
                p.delete_alarms(self.account_id, self.region_name)
                del self.policies[key]

    original_delete_policy = ApplicationAutoscalingBackend.delete_scaling_policy

    def delete_scaling_policy(self: Any, **kwargs: Any) -> None:
        try:
            original_delete_policy(self, **kwargs)
        except JsonRESTError as exc:
            if exc.error_type != "ValidationException":
                raise
            raise JsonRESTError("ObjectNotFoundException", f"No scaling policy found: {kwargs}") from None

    def list_task_definitions(self: Any, family_prefix: str | None, status: str = "ACTIVE") -> list[str]:
        return [td.arn for revisions in self.task_definitions.values() for td in revisions.values()
                if (family_prefix is None or td.family.startswith(family_prefix)) and td.status == status]

    monkeypatch.setattr(EC2ContainerServiceBackend, "list_task_definitions", list_task_definitions)
    monkeypatch.setattr(IamResponse, "list_entities_for_policy", list_entities_for_policy)
    monkeypatch.setattr(ApplicationAutoscalingBackend, "deregister_scalable_target", deregister_scalable_target)
    monkeypatch.setattr(ApplicationAutoscalingBackend, "delete_scaling_policy", delete_scaling_policy)


# --- the interface ----------------------------------------------------------------------

AWS_KINDS = sorted(k for k in H if not k.startswith("prefect."))
DATA_KINDS = {"s3.bucket", "ecr.repository", "logs.group", "secretsmanager.secret"}


@pytest.mark.parametrize("kind", AWS_KINDS)
def test_every_aws_kind_can_be_deleted_and_says_whether_it_holds_data(kind: str) -> None:
    h = H[kind]
    assert type(h).delete is not Handler.delete, f"{kind} has no delete"
    assert h.holds_data is (kind in DATA_KINDS)


DELETE_OPERATIONS = [
    "DeleteBucket", "DeleteObjects", "AbortMultipartUpload", "DeleteRepository", "DeleteLogGroup", "DeleteSecret",
    "RestoreSecret", "DetachRolePolicy", "DeleteRolePolicy", "RemoveRoleFromInstanceProfile", "DeleteRole",
    "DeletePolicyVersion", "DeletePolicy", "DeleteOpenIDConnectProvider", "DeleteSecurityGroup", "DeleteQueue",
    "RemoveTargets", "DeleteRule", "UpdateService", "DeleteService", "DeleteCluster", "DeregisterTaskDefinition",
    "DeregisterScalableTarget", "DeleteScalingPolicy",
]
READS = ["ListObjectVersions", "ListMultipartUploads", "ListEntitiesForPolicy", "ListInstanceProfilesForRole",
         "ListRoles", "ListTargetsByRule", "ListTasks", "DescribeTasks", "ListServices", "DescribeNetworkInterfaces",
         "ListTaskDefinitions", "ListPolicyVersions"]


def test_delete_calls_count_as_mutating_and_their_reads_do_not() -> None:
    assert [op for op in DELETE_OPERATIONS if not aws.is_mutating(op)] == []
    assert [op for op in READS if aws.is_mutating(op)] == []


# --- data: bucket, repository, log group, secret -------------------------------------------

BUCKET = "data-flows-main-flows-222222222222"


def bucket() -> Resource:
    res = Resource("s3.bucket", BUCKET, s3.desired_props("us-east-1", s3.arn_of(BUCKET), 30, TAGS))
    handler(res).create(res, res.props)  # versioned, TLS-only policy, lifecycle: as bootstrap makes it
    return res


def versions(boto: Callable[[str], Any]) -> list[tuple[str, str]]:
    out = boto("s3").list_object_versions(Bucket=BUCKET)
    return sorted((v["Key"], v["VersionId"]) for v in out.get("Versions", []) + out.get("DeleteMarkers", []))


def fill(boto: Callable[[str], Any]) -> None:
    """Several versions of two keys, delete markers, and an unfinished multipart upload."""
    c = boto("s3")
    for i in range(3):
        c.put_object(Bucket=BUCKET, Key="results/a.json", Body=f"{i}".encode())
        c.put_object(Bucket=BUCKET, Key="results/b.json", Body=f"{i}".encode())
    c.delete_object(Bucket=BUCKET, Key="results/a.json")  # a delete marker
    c.delete_object(Bucket=BUCKET, Key="results/b.json")
    c.put_object(Bucket=BUCKET, Key="results/b.json", Body=b"again")
    c.create_multipart_upload(Bucket=BUCKET, Key="big.parquet")


def test_versioned_bucket_is_emptied_of_every_version_and_marker_then_deleted(aws_env, boto, monkeypatch,
                                                                               reporter) -> None:
    res = bucket()
    fill(boto)
    assert len(versions(boto)) == 9  # 7 versions, 2 delete markers
    monkeypatch.setattr(s3, "DELETE_BATCH", 2)  # several pages, as a bucket of more than 1000 versions has
    delete_twice(res)
    assert boto("s3").list_buckets()["Buckets"] == []
    assert "emptying, 9 object versions deleted" in reporter.getvalue()


def test_a_bucket_emptied_half_way_is_finished_by_the_next_delete(aws_env, boto, monkeypatch) -> None:
    res = bucket()
    fill(boto)
    monkeypatch.setattr(s3, "DELETE_BATCH", 3)
    observed = read(res)
    denied = aws_error("s3", "AccessDenied", "Access Denied", 403)
    with FailOn("before-send.s3.DeleteObjects", 2, denied), pytest.raises(InfraError) as err:
        handler(res).delete(res, observed)  # the first page went, then the run stopped
    assert f"DeleteObjects failed for s3.bucket/{BUCKET}: AccessDenied" in str(err.value)
    assert len(versions(boto)) == 6
    handler(res).delete(res, observed)
    assert handler(res).read(res) is None


def test_objects_delete_objects_could_not_delete_are_named(aws_env, boto) -> None:
    res = bucket()
    boto("s3").put_object(Bucket=BUCKET, Key="locked.json", Body=b"{}")
    body = (b'<?xml version="1.0" encoding="UTF-8"?><DeleteResult><Error><Key>locked.json</Key>'
            b'<VersionId>v1</VersionId><Code>AccessDenied</Code><Message>Access Denied</Message></Error></DeleteResult>')
    partial = AWSResponse(f"https://{BUCKET}.s3.amazonaws.com/", 200, {"content-type": "application/xml"}, _Raw(body))
    with Injector("before-send.s3.DeleteObjects", partial, times=1), pytest.raises(InfraError) as err:
        handler(res).delete(res, read(res))
    msg = str(err.value)
    assert "1 object version(s) were not deleted" in msg and "locked.json (v1): AccessDenied" in msg
    assert read(res)  # the bucket stays until it is empty


def test_repository_goes_with_its_images(aws_env, boto) -> None:
    res = Resource("ecr.repository", "data-flows", ecr.desired_props(10, "IMMUTABLE", TAGS))
    handler(res).create(res, res.props)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                           "config": {"digest": "sha256:" + "a" * 64, "size": 1, "mediaType": "x"}, "layers": []})
    boto("ecr").put_image(repositoryName="data-flows", imageManifest=manifest, imageTag="prefect-agent-0.1.0")
    delete_twice(res)


def test_log_group(aws_env) -> None:
    res = Resource("logs.group", "/ecs/data-flows-main/flows", logs.desired_props(30, TAGS))
    handler(res).create(res, res.props)
    delete_twice(res)


SECRET = "data-flows/prefect-credentials"
CREDENTIALS = {"PREFECT_API_URL": "https://api.prefect.cloud/api/accounts/a/workspaces/w", "PREFECT_API_KEY": "pnu_1"}


def secret(initial: dict[str, str] | None = None) -> Resource:
    return Resource("secretsmanager.secret", SECRET, secrets.desired_props(TAGS, None),
                    ident={"initial": Sensitive(initial) if initial else None})


def test_secret_is_scheduled_for_deletion_for_a_week_and_bootstrap_restores_it(aws_env, boto) -> None:
    res = secret(CREDENTIALS)
    handler(res).create(res, res.props)
    handler(res).delete(res, read(res))
    sm = boto("secretsmanager")
    assert sm.describe_secret(SecretId=SECRET).get("DeletedDate")  # recoverable, not gone
    assert [op for _, op in aws.CALLS.snapshot() if op == "DeleteSecret"] == ["DeleteSecret"]

    # Read again, it is not absent: AWS keeps the name for the recovery window.
    observed = read(res)
    assert secrets.scheduled_for_deletion(observed) and observed.tags[OWNER_TAG] == OWNER
    aws.CALLS.reset()
    handler(res).delete(res, observed)  # a second teardown leaves it as it is
    assert aws.CALLS.mutating() == []

    # The next bootstrap's plan says so, and restores it with the credentials given to it.
    diffs = engine.property_diffs(res.props, observed)
    assert [d.path for d in diffs] == ["scheduled_for_deletion"]
    new = {**CREDENTIALS, "PREFECT_API_KEY": "pnu_2"}
    again = secret(new)
    handler(again).update(again, again.props, observed, diffs)
    observed = read(again)
    assert secrets.scheduled_for_deletion(observed) is None
    assert engine.property_diffs(again.props, observed) == []
    assert json.loads(sm.get_secret_value(SecretId=SECRET)["SecretString"]) == new


def test_secret_restored_without_credentials_keeps_its_value(aws_env, boto) -> None:
    res = secret(CREDENTIALS)
    handler(res).create(res, res.props)
    handler(res).delete(res, read(res))
    bare = secret(None)
    observed = read(bare)
    handler(bare).update(bare, bare.props, observed, engine.property_diffs(bare.props, observed))
    assert json.loads(boto("secretsmanager").get_secret_value(SecretId=SECRET)["SecretString"]) == CREDENTIALS


def test_secret_answers_as_aws_gives_them(aws_env) -> None:
    """AWS's own answers, which the emulator words differently: a second DeleteSecret on a
    secret scheduled for deletion, and CreateSecret on a name AWS still holds."""
    res = secret(CREDENTIALS)
    handler(res).create(res, res.props)
    observed = read(res)
    scheduled = aws_error("secretsmanager", "InvalidRequestException", "You can't perform this operation on the "
                          "secret because it was marked for deletion.")
    with Injector("before-send.secretsmanager.DeleteSecret", scheduled, times=1):
        handler(res).delete(res, observed)  # deleted meanwhile by another run: not an error
    held = aws_error("secretsmanager", "InvalidRequestException", "You can't create this secret because a secret "
                     "with this name is already scheduled for deletion.")
    with Injector("before-send.secretsmanager.CreateSecret", held, times=1), pytest.raises(InfraError) as err:
        handler(res).create(res, res.props)
    assert "still being deleted; re-run in a minute" in str(err.value) and "restore-secret" in str(err.value)


def test_secret_deleted_by_someone_else_meanwhile(aws_env) -> None:
    res = secret(CREDENTIALS)
    handler(res).create(res, res.props)
    observed = read(res)
    gone = aws_error("secretsmanager", "ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
    with Injector("before-send.secretsmanager.DeleteSecret", gone, times=1):
        handler(res).delete(res, observed)


# --- IAM -------------------------------------------------------------------------------------

ROLE = "data-flows-main-flow-task"


def make_role(boto: Callable[[str], Any], name: str = ROLE, tags: dict[str, str] = TAGS, **extra: Any) -> None:
    boto("iam").create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST), Tags=aws_tags(tags), **extra)


def make_policy(boto: Callable[[str], Any], name: str = "data-flows-main-boundary") -> str:
    return boto("iam").create_policy(PolicyName=name, PolicyDocument=json.dumps(DOC), Tags=aws_tags(TAGS))[
        "Policy"]["Arn"]


def role_with_everything(boto: Callable[[str], Any]) -> Resource:
    iam_ = boto("iam")
    make_role(boto)
    for name in ("extra-a", "extra-b"):
        iam_.attach_role_policy(RoleName=ROLE, PolicyArn=make_policy(boto, name))
    iam_.put_role_policy(RoleName=ROLE, PolicyName="flow-task", PolicyDocument=json.dumps(DOC))
    iam_.put_role_policy(RoleName=ROLE, PolicyName="added-by-hand", PolicyDocument=json.dumps(DOC))
    iam_.create_instance_profile(InstanceProfileName="flow-task-profile")
    iam_.add_role_to_instance_profile(InstanceProfileName="flow-task-profile", RoleName=ROLE)
    return Resource("iam.role", ROLE, {})


def test_role_goes_with_its_policies_and_instance_profiles(aws_env, boto) -> None:
    res = role_with_everything(boto)
    delete_twice(res)
    ops = [op for _, op in aws.CALLS.snapshot()]
    assert ops.count("DetachRolePolicy") == 2 and ops.count("DeleteRolePolicy") == 2
    assert "RemoveRoleFromInstanceProfile" in ops and ops.index("DeleteRole") > ops.index("RemoveRoleFromInstanceProfile")
    assert boto("iam").get_instance_profile(InstanceProfileName="flow-task-profile")["InstanceProfile"]["Roles"] == []
    # The managed policies themselves are not the role's: they stay.
    assert {p["PolicyName"] for p in boto("iam").list_policies(Scope="Local")["Policies"]} == {"extra-a", "extra-b"}


def test_a_role_delete_stopped_after_its_policies_were_detached_finishes_next_time(aws_env, boto) -> None:
    res = role_with_everything(boto)
    observed = read(res)
    failing = aws_error("iam", "ServiceFailure", "Request processing has failed due to an unknown error", 400)
    with Injector("before-send.iam.RemoveRoleFromInstanceProfile", failing, times=None), pytest.raises(InfraError):
        handler(res).delete(res, observed)
    iam_ = boto("iam")
    assert iam_.list_attached_role_policies(RoleName=ROLE)["AttachedPolicies"] == []
    assert iam_.list_role_policies(RoleName=ROLE)["PolicyNames"] == []
    handler(res).delete(res, observed)  # the same (stale) observation: it reads afresh what is left
    assert handler(res).read(res) is None


def boundary(boto: Callable[[str], Any]) -> Resource:
    arn = make_policy(boto)
    boto("iam").create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(DOC), SetAsDefault=True)
    return Resource("iam.policy", "data-flows-main-boundary", {}, ident={"arn": arn})


def test_policy_attached_to_our_roles_is_detached_and_deleted_with_its_versions(aws_env, boto) -> None:
    res = boundary(boto)
    make_role(boto)
    boto("iam").attach_role_policy(RoleName=ROLE, PolicyArn=res.ident["arn"])
    observed = read(res)
    assert handler(res).delete_blocker(res, observed) is None
    delete_twice(res)
    assert [op for _, op in aws.CALLS.snapshot()].count("DeletePolicyVersion") == 1  # v1; v2 (default) goes with it
    assert boto("iam").list_attached_role_policies(RoleName=ROLE)["AttachedPolicies"] == []


def test_policy_used_by_someone_elses_role_user_or_boundary_is_not_deleted(aws_env, boto) -> None:
    res = boundary(boto)
    arn = res.ident["arn"]
    iam_ = boto("iam")
    make_role(boto)
    iam_.attach_role_policy(RoleName=ROLE, PolicyArn=arn)  # ours: no obstacle
    make_role(boto, "analytics-etl", FOREIGN_TAGS)
    iam_.attach_role_policy(RoleName="analytics-etl", PolicyArn=arn)
    make_role(boto, "untagged-by-hand", {}, PermissionsBoundary=arn)
    make_role(boto, "data-flows-dev-flow-task", {**TAGS, "environment": "dev"}, PermissionsBoundary=arn)
    iam_.create_user(UserName="alice")
    iam_.attach_user_policy(UserName="alice", PolicyArn=arn)
    observed = read(res)
    blocker = handler(res).delete_blocker(res, observed)
    assert blocker == ("iam.policy/data-flows-main-boundary is used by role analytics-etl (attached), "
                       "role data-flows-dev-flow-task (permissions boundary), role untagged-by-hand (permissions "
                       "boundary), user alice (attached), not of this "
                       "environment; a teardown never changes others' resources: detach it from them (or have "
                       "their owner do so) and re-run")
    aws.CALLS.reset()
    with pytest.raises(InfraError, match="analytics-etl"):
        handler(res).delete(res, observed)
    assert aws.CALLS.mutating() == []  # not even our own role was detached
    assert read(res)


def test_policy_still_bounding_our_role_waits_for_that_role(aws_env, boto) -> None:
    """Removing the boundary of a role that is still there would widen it: the role's
    deletion comes first (the teardown's order), and the policy after it."""
    res = boundary(boto)
    make_role(boto, PermissionsBoundary=res.ident["arn"])
    observed = read(res)
    assert handler(res).delete_blocker(res, observed) is None  # ours: deleted before it
    with pytest.raises(InfraError, match=f"still the permissions boundary of role.* {ROLE}"):
        handler(res).delete(res, observed)
    role = Resource("iam.role", ROLE, {})
    handler(role).delete(role, read(role))
    delete_twice(res)


OIDC_HOST = "oidc.circleci.com/org/0c2e0b7c"


def oidc(boto: Callable[[str], Any]) -> Resource:
    boto("iam").create_open_id_connect_provider(Url=f"https://{OIDC_HOST}", ClientIDList=["0c2e0b7c"],
                                                ThumbprintList=["a" * 40], Tags=aws_tags(TAGS))
    return Resource("iam.oidc_provider", OIDC_HOST, {}, ident={"audience": "0c2e0b7c"})


def ci_trust(provider_arn: str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Federated": provider_arn},
                                                    "Action": "sts:AssumeRoleWithWebIdentity"}]}


def test_oidc_provider_trusted_by_another_stack_is_kept(aws_env, boto) -> None:
    res = oidc(boto)
    observed = read(res)
    arn = observed.outputs["arn"]
    iam_ = boto("iam")
    iam_.create_role(RoleName="data-flows-ci-deploy", AssumeRolePolicyDocument=json.dumps(ci_trust(arn)),
                     Tags=aws_tags(TAGS))
    assert handler(res).delete_blocker(res, observed) is None  # our CI roles go before it
    iam_.create_role(RoleName="web-ci-deploy", AssumeRolePolicyDocument=json.dumps(ci_trust(arn)))
    assert "trusted by role(s) web-ci-deploy, not of this environment" in handler(res).delete_blocker(res, observed)
    iam_.delete_role(RoleName="web-ci-deploy")
    delete_twice(res)


def test_oidc_provider_already_gone_on_aws(aws_env, boto) -> None:
    res = oidc(boto)
    observed = read(res)
    gone = aws_error("iam", "NoSuchEntity", f"OpenIDConnect Provider not found for arn {observed.outputs['arn']}",
                     404)
    with Injector("before-send.iam.DeleteOpenIDConnectProvider", gone, times=1):
        handler(res).delete(res, observed)  # the emulator accepts a second delete; AWS answers NoSuchEntity


# --- network, queues, events ----------------------------------------------------------------

SG = "data-flows-main-flows"


def security_group(boto: Callable[[str], Any]) -> tuple[Resource, str]:
    vpc = boto("ec2").describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    res = Resource("ec2.security_group", SG, ec2.sg_props("Prefect flow runs main: egress only", vpc, TAGS),
                   ident={"vpc_id": vpc})
    return res, handler(res).create(res, res.props)["id"]


def in_use(gid: str) -> AWSResponse:
    return aws_error("ec2", "DependencyViolation", f"resource {gid} has a dependent object")


def test_security_group_in_use_is_retried_until_aws_releases_it(aws_env, boto, monkeypatch, reporter) -> None:
    res, gid = security_group(boto)
    monkeypatch.setattr(ec2, "SG_DELETE_INTERVAL", 0.01)
    with Injector("before-send.ec2.DeleteSecurityGroup", in_use(gid), times=2) as inj:
        delete_twice(res)
    assert inj.hits == 2
    assert reporter.getvalue().count(f"waiting: {res.key}: still in use") == 2


def test_security_group_still_in_use_names_what_uses_it(aws_env, boto, monkeypatch) -> None:
    res, gid = security_group(boto)
    c = boto("ec2")
    subnet = c.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [res.ident["vpc_id"]]}])["Subnets"][0]
    eni = c.create_network_interface(SubnetId=subnet["SubnetId"], Groups=[gid],
                                     Description="arn:aws:ecs:us-east-1:222222222222:attachment/0b5d")[
        "NetworkInterface"]["NetworkInterfaceId"]
    other = c.create_security_group(GroupName="web-db", Description="db", VpcId=res.ident["vpc_id"])["GroupId"]
    c.authorize_security_group_ingress(GroupId=other, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": gid}]}])
    monkeypatch.setattr(ec2, "SG_DELETE_TIMEOUT", 0.05)
    monkeypatch.setattr(ec2, "SG_DELETE_INTERVAL", 0.01)
    with Injector("before-send.ec2.DeleteSecurityGroup", in_use(gid), times=None), pytest.raises(InfraError) as err:
        handler(res).delete(res, read(res))
    msg = str(err.value)
    assert msg.startswith(f"DeleteSecurityGroup failed for {res.key} ({gid}): still in use after 0s by ")
    assert f"network interface {eni} (arn:aws:ecs:us-east-1:222222222222:attachment/0b5d, available)" in msg
    assert f"rules of {other} (web-db)" in msg and "re-run the teardown later" in msg


QUEUE = "data-flows-main-ecs-events"


def queue() -> Resource:
    return Resource("sqs.queue", QUEUE, sqs.queue_props(345600, 30, TAGS))


def test_queue_and_its_name_taken_again_after_aws_frees_it(aws_env, monkeypatch, reporter) -> None:
    res = queue()
    handler(res).create(res, res.props)
    delete_twice(res)
    # AWS holds a deleted queue's name for 60 s: a bootstrap right after a teardown waits.
    monkeypatch.setattr(sqs, "RECREATE_INTERVAL", 0.01)
    recently = aws_error("sqs", "AWS.SimpleQueueService.QueueDeletedRecently", "You must wait 60 seconds after "
                         "deleting a queue before you can create another with the same name.")
    with Injector("before-send.sqs.CreateQueue", recently, times=2):
        handler(res).create(res, res.props)
    assert read(res) and "AWS keeps a deleted queue's name" in reporter.getvalue()


def test_rule_loses_its_targets_then_goes(aws_env) -> None:
    q = queue()
    qarn = handler(q).create(q, q.props)["arn"]
    res = Resource("events.rule", "data-flows-main-ecs-task-state",
                   events.rule_props("arn:aws:ecs:us-east-1:222222222222:cluster/data-flows-main", qarn, TAGS))
    handler(res).create(res, res.props)
    client = aws.client("events")
    client.put_targets(Rule=res.name, Targets=[{"Id": f"added-{i}", "Arn": qarn} for i in range(3)])
    delete_twice(res)
    assert [op for _, op in aws.CALLS.snapshot()].index("RemoveTargets") < [
        op for _, op in aws.CALLS.snapshot()].index("DeleteRule")


# --- ECS ------------------------------------------------------------------------------------

CLUSTER = "data-flows-main"
SERVICE = "data-flows-main-agent"
FAMILY = "data-flows-main-agent"


def cluster(boto: Callable[[str], Any], tags: dict[str, str] = TAGS) -> Resource:
    res = Resource("ecs.cluster", CLUSTER, ecs.cluster_props(tags))
    boto("ecs").create_cluster(clusterName=CLUSTER, tags=[{"key": k, "value": v} for k, v in tags.items()])
    return res


def taskdef(boto: Callable[[str], Any], family: str = FAMILY, network_mode: str = "awsvpc") -> str:
    # Container-level memory: the emulator's RunTask needs it (see the platform notes).
    return boto("ecs").register_task_definition(
        family=family, networkMode=network_mode, cpu="256", memory="512",
        requiresCompatibilities=["FARGATE" if network_mode == "awsvpc" else "EC2"],
        containerDefinitions=[{"name": "x", "image": "prefecthq/prefect:3-latest", "memory": 512}])[
        "taskDefinition"]["taskDefinitionArn"]


def service(boto: Callable[[str], Any], desired: int = 2, name: str = SERVICE,
            tags: dict[str, str] = TAGS) -> Resource:
    boto("ecs").create_service(cluster=CLUSTER, serviceName=name, taskDefinition=taskdef(boto), desiredCount=desired,
                               launchType="FARGATE", tags=[{"key": k, "value": v} for k, v in tags.items()])
    return Resource("ecs.service", name, {}, ident={"cluster": CLUSTER})


class StillRunning:
    """DescribeServices and UpdateService reporting `running` tasks for the next `times`
    answers (AWS's tasks take their stop timeout to exit; the emulator's stop at once)."""

    def __init__(self, running: int, times: int | None) -> None:
        self.running, self.times, self.answers = running, times, 0

    def __call__(self, parsed: dict[str, Any] | None = None, **_: Any) -> None:
        if parsed and (self.times is None or self.answers < self.times):
            self.answers += 1
            for s in parsed.get("services", []) + ([parsed["service"]] if "service" in parsed else []):
                s.update(runningCount=self.running, pendingCount=0)

    def __enter__(self) -> "StillRunning":
        aws.add_handler("after-call.ecs.DescribeServices", self)
        aws.add_handler("after-call.ecs.UpdateService", self)
        return self

    def __exit__(self, *exc: Any) -> None:
        aws.remove_handler(self)


def test_service_is_scaled_to_zero_drained_then_deleted(aws_env, boto, monkeypatch, reporter) -> None:
    cluster(boto)
    res = service(boto, desired=2)
    monkeypatch.setattr(ecs, "POLL_INTERVAL", 0.01)
    # Running: as the plan read it, as the delete reads it, as scaling to 0 answers, and at the first poll.
    with StillRunning(2, times=4):
        delete_twice(res)
    calls = [op for _, op in aws.CALLS.snapshot()]
    assert calls.index("UpdateService") < calls.index("DeleteService")
    assert calls[calls.index("UpdateService"):calls.index("DeleteService")].count("DescribeServices") == 2
    assert reporter.getvalue().count(f"waiting: {res.key}: scaled to 0, 2 task(s) stopping") == 2
    assert boto("ecs").describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]["status"] == "INACTIVE"


def test_service_whose_tasks_do_not_stop_is_named_after_the_wait(aws_env, boto, monkeypatch) -> None:
    cluster(boto)
    res = service(boto)
    monkeypatch.setattr(ecs, "POLL_INTERVAL", 0.01)
    monkeypatch.setattr(ecs, "DRAIN_TIMEOUT", 0.05)
    with StillRunning(1, times=None), pytest.raises(InfraError) as err:
        handler(res).delete(res, read(res))
    assert str(err.value).startswith(f"{res.key}: 1 task(s) still running 0s after scaling it to 0")
    assert "describe-services --cluster data-flows-main" in str(err.value)
    # Scaled to 0 already: the next run only waits and deletes.
    assert boto("ecs").describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]["desiredCount"] == 0
    aws.CALLS.reset()
    handler(res).delete(res, read(res))
    assert "UpdateService" not in [op for _, op in aws.CALLS.snapshot()] and handler(res).read(res) is None


def test_service_being_deleted_already_is_gone(aws_env, boto) -> None:
    cluster(boto)
    res = service(boto, desired=0)
    observed = read(res)
    boto("ecs").delete_service(cluster=CLUSTER, service=SERVICE)
    aws.CALLS.reset()
    handler(res).delete(res, observed)
    assert aws.CALLS.mutating() == []
    draining = json_error("ServiceNotActiveException", "Service was not ACTIVE.")
    res2 = service(boto, desired=1, name="data-flows-main-agent-2")
    with Injector("before-send.ecs.UpdateService", draining, times=1):
        handler(res2).delete(res2, read(res2))  # deleted by someone meanwhile


def run_flow(boto: Callable[[str], Any], count: int = 1) -> list[str]:
    """A flow run as the ECS worker starts one: a task of its own family, no service. (Not
    awsvpc: the emulator would build a whole default VPC for its network interface.)"""
    family = taskdef(boto, "prefect_data-flows-main_0f3a", network_mode="bridge")
    tasks = boto("ecs").run_task(cluster=CLUSTER, taskDefinition=family, count=count, launchType="FARGATE")["tasks"]
    return [t["taskArn"] for t in tasks]


def test_cluster_running_flow_runs_is_not_deleted(aws_env, boto) -> None:
    res = cluster(boto)
    service(boto, desired=0)  # its tasks would not count: the service is deleted before the cluster
    arns = run_flow(boto, count=2)
    observed = read(res)
    blocker = handler(res).delete_blocker(res, observed)
    ids = [a.rsplit("/", 1)[-1] for a in arns]
    assert blocker is not None and blocker.startswith(
        f"ecs.cluster/{CLUSTER}: 2 task(s) not started by a service still run in it (flow runs): ")
    assert all(i in blocker for i in ids) and f"aws ecs stop-task --cluster {CLUSTER} --task ID" in blocker
    for a in arns:
        boto("ecs").stop_task(cluster=CLUSTER, task=a)
    assert handler(res).delete_blocker(res, observed) is None


def test_cluster_with_someone_elses_service_is_not_deleted(aws_env, boto) -> None:
    res = cluster(boto)
    service(boto, desired=0)
    service(boto, desired=0, name="web-api", tags=FOREIGN_TAGS)
    assert handler(res).delete_blocker(res, read(res)) == (
        f"ecs.cluster/{CLUSTER}: service(s) web-api of another owner run in it; a teardown never deletes others' "
        f"resources: have them deleted or moved first")


def test_cluster(aws_env, boto) -> None:
    res = cluster(boto)
    assert handler(res).delete_blocker(res, read(res)) is None
    delete_twice(res)


def test_cluster_delete_waits_for_deleted_services_to_drain(aws_env, boto, monkeypatch, reporter) -> None:
    res = cluster(boto)
    monkeypatch.setattr(ecs, "POLL_INTERVAL", 0.01)
    draining = json_error("ClusterContainsServicesException", "The Cluster cannot be deleted while Services are "
                          "active.")
    with Injector("before-send.ecs.DeleteCluster", draining, times=2):
        handler(res).delete(res, read(res))
    assert handler(res).read(res) is None
    assert reporter.getvalue().count(f"waiting: {res.key}: services and tasks draining") == 2


def test_cluster_that_never_empties_names_what_is_left(aws_env, boto, monkeypatch) -> None:
    res = cluster(boto)
    service(boto, desired=0)
    arns = run_flow(boto)
    monkeypatch.setattr(ecs, "POLL_INTERVAL", 0.01)
    monkeypatch.setattr(ecs, "CLUSTER_DELETE_TIMEOUT", 0.05)
    busy = json_error("ClusterContainsTasksException", "The Cluster cannot be deleted while Tasks are active.")
    with Injector("before-send.ecs.DeleteCluster", busy, times=None), pytest.raises(InfraError) as err:
        handler(res).delete(res, read(res))
    msg = str(err.value)
    assert msg.startswith(f"DeleteCluster failed for {res.key}: it still holds service {SERVICE} (ACTIVE), "
                          f"1 running task(s): {arns[0].rsplit('/', 1)[-1]} after 0s")
    assert "cancel their flow runs in Prefect" in msg


def test_task_definition_family_is_deregistered_and_only_that_family(aws_env, boto) -> None:
    for _ in range(3):
        taskdef(boto)
    other = taskdef(boto, f"{FAMILY}-canary")  # same prefix, another family
    res = Resource("ecs.task_definition", FAMILY, {})
    delete_twice(res)
    c = boto("ecs")
    assert c.list_task_definitions(status="ACTIVE")["taskDefinitionArns"] == [other]
    assert len(c.list_task_definitions(familyPrefix=FAMILY, status="INACTIVE")["taskDefinitionArns"]) == 3


# --- Application Auto Scaling -------------------------------------------------------------

RESOURCE_ID = f"service/{CLUSTER}/{SERVICE}"


def scaling(boto: Callable[[str], Any]) -> tuple[Resource, Resource]:
    cluster(boto)
    service(boto, desired=1)
    target = Resource("autoscaling.target", RESOURCE_ID, autoscaling.target_props(1, 2))
    policy = Resource("autoscaling.policy", f"{SERVICE}-cpu", autoscaling.policy_props(45.0, 60, 60),
                      ident={"resource_id": RESOURCE_ID})
    handler(target).create(target, target.props)
    handler(policy).create(policy, policy.props)
    return target, policy


def test_scaling_policy_then_target(aws_env, boto) -> None:
    target, policy = scaling(boto)
    delete_twice(policy)
    delete_twice(target)


def test_scaling_policy_gone_with_its_target_is_not_an_error(aws_env, boto) -> None:
    target, policy = scaling(boto)
    observed = read(policy)
    delete_twice(target)  # AWS deletes the target's policies with it
    assert handler(policy).read(policy) is None
    handler(policy).delete(policy, observed)


def test_each_kind_answers_an_unexpected_error_translated(aws_env) -> None:
    """Not every error is "already gone": the rest name the operation and the resource."""
    res = queue()
    observed = Observed({}, outputs={"url": f"{aws_env}/{PROD_ACCOUNT}/{QUEUE}"})
    denied = aws_error("sqs", "AccessDenied", "not authorized to perform: sqs:DeleteQueue", 403)
    with Injector("before-send.sqs.DeleteQueue", denied, times=None), pytest.raises(InfraError) as err:
        handler(res).delete(res, observed)
    assert str(err.value).startswith(f"DeleteQueue failed for sqs.queue/{QUEUE}: AccessDenied")
    assert "lack this permission" in str(err.value)
