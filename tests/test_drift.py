"""Out-of-band changes: `--plan` exits 2 naming the resource and property; apply
repairs; the next plan is clean."""

from __future__ import annotations

import json

import pytest

from infra_tasks import aws

from .conftest import P, run_cli

BASE = f"{P}-main"


def _retention(b):
    b("logs").put_retention_policy(logGroupName=f"/ecs/{BASE}/agent", retentionInDays=7)


def _delete_log_group(b):
    b("logs").delete_log_group(logGroupName=f"/ecs/{BASE}/flows")


def _versioning(b):
    b("s3").put_bucket_versioning(Bucket=f"{BASE}-flows-222222222222", VersioningConfiguration={"Status": "Suspended"})


def _bucket_policy(b):
    b("s3").delete_bucket_policy(Bucket=f"{BASE}-flows-222222222222")


def _extra_inline_policy(b):
    b("iam").put_role_policy(RoleName=f"{BASE}-flow-task", PolicyName="sneaky", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))


def _widened_policy(b):
    b("iam").put_role_policy(RoleName=f"{BASE}-agent-task", PolicyName="prefect-worker", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecs:*", "Resource": "*"}]}))


def _boundary_removed(b):
    b("iam").delete_role_permissions_boundary(RoleName=f"{BASE}-agent-task")


def _sg_ingress(b):
    ec2 = b("ec2")
    gid = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"{BASE}-agent"]}])[
        "SecurityGroups"][0]["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])


def _queue_attr(b):
    sqs = b("sqs")
    url = sqs.get_queue_url(QueueName=f"{BASE}-ecs-events")["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "300"})


def _desired_count(b):
    b("ecs").update_service(cluster=BASE, service=f"{BASE}-agent", desiredCount=7)


def _taskdef_revision(b):
    ecs = b("ecs")
    td = ecs.describe_task_definition(taskDefinition=f"{BASE}-agent")["taskDefinition"]
    keep = ("family", "cpu", "memory", "networkMode", "requiresCompatibilities", "executionRoleArn", "taskRoleArn",
            "containerDefinitions", "runtimePlatform")
    body = {k: td[k] for k in keep if k in td}
    body["containerDefinitions"][0]["image"] = "attacker/image:latest"
    ecs.register_task_definition(**body)


def _rule_disabled(b):
    b("events").disable_rule(Name=f"{BASE}-ecs-task-state")


def _ecr_scan(b):
    b("ecr").put_image_scanning_configuration(repositoryName=P, imageScanningConfiguration={"scanOnPush": False})


def _tag_removed(b):
    ecs = b("ecs")
    arn = ecs.describe_clusters(clusters=[BASE])["clusters"][0]["clusterArn"]
    ecs.tag_resource(resourceArn=arn, tags=[{"key": "team", "value": "someone-else"}])


def _scaling(b):
    b("application-autoscaling").register_scalable_target(
        ServiceNamespace="ecs", ResourceId=f"service/{BASE}/{BASE}-agent",
        ScalableDimension="ecs:service:DesiredCount", MinCapacity=0, MaxCapacity=9)


CASES = [
    ("log retention", _retention, f"logs.group//ecs/{BASE}/agent", "retention_days: 7 -> 30"),
    ("deleted log group", _delete_log_group, f"logs.group//ecs/{BASE}/flows", "create"),
    ("bucket versioning", _versioning, f"s3.bucket/{BASE}-flows-222222222222", "versioning: Suspended -> Enabled"),
    ("bucket policy removed", _bucket_policy, f"s3.bucket/{BASE}-flows-222222222222", "policy:"),
    ("extra inline policy", _extra_inline_policy, f"iam.role/{BASE}-flow-task", "inline_policies.sneaky"),
    ("widened policy", _widened_policy, f"iam.role/{BASE}-agent-task", "inline_policies.prefect-worker"),
    ("boundary removed", _boundary_removed, f"iam.role/{BASE}-agent-task", "permissions_boundary"),
    ("ssh ingress", _sg_ingress, f"ec2.security_group/{BASE}-agent", "ingress"),
    ("queue attribute", _queue_attr, f"sqs.queue/{BASE}-ecs-events", "attributes.VisibilityTimeout: 300 -> 30"),
    ("desired count out of range", _desired_count, f"ecs.service/{BASE}-agent", "desiredCount: 7 -> 2"),
    # A new revision is registered and the service moved to it.
    ("task definition revision", _taskdef_revision,
     [f"ecs.task_definition/{BASE}-agent", f"ecs.service/{BASE}-agent"], "attacker/image:latest"),
    ("rule disabled", _rule_disabled, f"events.rule/{BASE}-ecs-task-state", "state: DISABLED -> ENABLED"),
    ("ecr scan off", _ecr_scan, f"ecr.repository/{P}", "scan_on_push: False -> True"),
    ("tag changed", _tag_removed, f"ecs.cluster/{BASE}", "tags.team: someone-else -> data-platform"),
    ("scaling bounds", _scaling, f"autoscaling.target/service/{BASE}/{BASE}-agent", "max: 9 -> 2"),
]


@pytest.mark.parametrize("name,mutate,resource,needle", CASES, ids=[c[0] for c in CASES])
def test_out_of_band_change_detected_and_repaired(name, mutate, resource, needle, repaired_stack, capsys):
    """Chained on one stack: each case starts from the repaired stack the last one left
    (the fixture rebuilds it if a case did not repair it)."""
    boto = repaired_stack
    mutate(boto)
    capsys.readouterr()
    aws.CALLS.reset()
    assert run_cli("--env", "production", "--no-prefect", "--plan") == 2
    out = capsys.readouterr().out
    assert aws.CALLS.mutating() == []
    changed_lines = [line for line in out.splitlines() if line.startswith(("create", "update", "replace"))]
    # Exactly the touched resource is reported, nothing else.
    assert [line.split()[1] for line in changed_lines] == ([resource] if isinstance(resource, str) else resource), out
    assert needle in out, out
    assert run_cli("--env", "production", "--no-prefect", "--yes") == 0
    assert run_cli("--env", "production", "--no-prefect", "--plan") == 0


def test_autoscaled_desired_count_is_not_drift(repaired_stack):
    boto = repaired_stack
    boto("ecs").update_service(cluster=BASE, service=f"{BASE}-agent", desiredCount=1)  # within 1..2
    assert run_cli("--env", "production", "--no-prefect", "--plan") == 0


def test_foreign_tags_are_kept(bootstrap, boto):
    assert bootstrap("--yes") == 0
    s3 = boto("s3")
    bucket = f"{BASE}-flows-222222222222"
    tags = s3.get_bucket_tagging(Bucket=bucket)["TagSet"] + [{"Key": "cost-center", "Value": "42"}]
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [t for t in tags if t["Key"] != "team"]})
    assert bootstrap("--plan") == 2
    assert bootstrap("--yes") == 0
    final = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}
    assert final["cost-center"] == "42" and final["team"] == "data-platform"


def test_discovery_finds_exactly_our_tagged_resources(bootstrap, boto, cfg):
    """The drift check's UNMANAGED detection: after a bootstrap every owned resource it
    lists is desired; a tagged leftover (an old task-definition family) is found."""
    from infra_tasks import discovery, engine
    from infra_tasks.facts import gather_facts
    from infra_tasks.desired import owner_value

    assert bootstrap("--yes") == 0
    owner = owner_value(cfg)
    found, failed = discovery.owned(cfg, "production", owner)
    assert failed == {}
    desired = {r.key for r in engine.all_resources(cfg, "production", gather_facts(cfg, "production"), False)}
    kinds = set(discovery.FINDERS)
    assert set(found) == {k for k in desired if k.split("/", 1)[0] in kinds}
    boto("ecs").register_task_definition(
        family=f"{P}-main-old", containerDefinitions=[{"name": "c", "image": "i", "memory": 512}],
        tags=[{"key": "managed-by", "value": owner}, {"key": "environment", "value": "production"}])
    boto("ecs").register_task_definition(family=f"{P}-main-foreign",
                                         containerDefinitions=[{"name": "c", "image": "i", "memory": 512}])
    found, _ = discovery.owned(cfg, "production", owner)
    assert set(found) - desired == {f"ecs.task_definition/{P}-main-old"}
