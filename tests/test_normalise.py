"""Pure normalisers and the diff: AWS's answers that mean the same as what we sent
compare equal; real differences are reported with their path."""

from __future__ import annotations

import copy

import pytest

from infra_tasks import ecr, ecs_taskdef, events, s3, sqs
from infra_tasks.diff import diff
from infra_tasks.ec2 import flatten_rules, to_permission
from infra_tasks.model import UNKNOWN, Diff, Ref, Sensitive, Within

TD = ecs_taskdef.agent_taskdef(
    family="p-main-agent", cpu=1024, memory=2048, image="1.dkr.ecr.us-east-1.amazonaws.com/p:t", pool="p-main",
    exec_role_arn="arn:aws:iam::1:role/e", task_role_arn="arn:aws:iam::1:role/t",
    secret_arn="arn:aws:secretsmanager:us-east-1:1:secret:s-AbCdEf", log_group="/ecs/p-main/agent",
    region="us-east-1", queue_name="p-main-ecs-events")


def aws_view(td: dict) -> dict:
    """What DescribeTaskDefinition returns for `td`: server fields, defaults, reordering."""
    out = copy.deepcopy(td)
    out.update(taskDefinitionArn="arn:aws:ecs:us-east-1:1:task-definition/p-main-agent:3", revision=3,
               status="ACTIVE", requiresAttributes=[{"name": "ecs.capability.secrets.asm.environment-variables"}],
               compatibilities=["EC2", "FARGATE"], registeredAt="2026-01-01", registeredBy="arn", volumes=[],
               placementConstraints=[], cpu=1024, memory=2048)
    c = out["containerDefinitions"][0]
    c.update(cpu=0, portMappings=[], mountPoints=[], volumesFrom=[], systemControls=[])
    c["environment"] = list(reversed(c["environment"]))
    c["secrets"] = list(reversed(c["secrets"]))
    c["logConfiguration"]["secretOptions"] = []
    c.pop("essential")
    return out


def test_taskdef_with_aws_defaults_is_equivalent() -> None:
    assert ecs_taskdef.normalise_taskdef(aws_view(TD)) == TD


@pytest.mark.parametrize("mutate,path", [
    (lambda td: td["containerDefinitions"][0].update(image="other:tag"), "containerDefinitions"),
    (lambda td: td.update(cpu="2048"), "cpu"),
    (lambda td: td["containerDefinitions"][0]["environment"].append({"name": "X", "value": "1"}),
     "containerDefinitions"),
    (lambda td: td["containerDefinitions"][0].update(privileged=True), "containerDefinitions"),
    (lambda td: td.update(taskRoleArn="arn:aws:iam::1:role/other"), "taskRoleArn"),
])
def test_taskdef_real_changes_are_diffs(mutate, path: str) -> None:
    actual = aws_view(TD)
    mutate(actual)
    diffs = diff(TD, ecs_taskdef.normalise_taskdef(actual))
    assert [d.path for d in diffs] == [path]


def test_port_mappings_defaults() -> None:
    a = ecs_taskdef.normalise_container({"name": "c", "portMappings": [{"containerPort": 8080}]})
    b = ecs_taskdef.normalise_container({"name": "c", "essential": True, "portMappings": [
        {"containerPort": 8080, "hostPort": 8080, "protocol": "tcp"}]})
    assert a == b


def test_worker_command_and_secrets() -> None:
    c = TD["containerDefinitions"][0]
    assert c["command"] == ["prefect", "worker", "start", "--pool", "p-main", "--type", "ecs", "--with-healthcheck", "--install-policy", "never"]
    assert {s["name"]: s["valueFrom"] for s in c["secrets"]} == {
        "PREFECT_API_KEY": "arn:aws:secretsmanager:us-east-1:1:secret:s-AbCdEf:PREFECT_API_KEY::",
        "PREFECT_API_URL": "arn:aws:secretsmanager:us-east-1:1:secret:s-AbCdEf:PREFECT_API_URL::"}
    assert not any(e["name"].startswith("PREFECT_API_") for e in c["environment"])
    assert "8080/health" in c["healthCheck"]["command"][1]


def test_secret_ref_formats_json_key() -> None:
    td = ecs_taskdef.agent_taskdef(
        family="f", cpu=256, memory=512, image="i", pool="p", exec_role_arn="e", task_role_arn="t",
        secret_arn=Ref("secretsmanager.secret/s", "arn"), log_group="g", region="r", queue_name="q")
    ref = td["containerDefinitions"][0]["secrets"][0]["valueFrom"]
    assert isinstance(ref, Ref) and ref.resolve("ARN") == "ARN:PREFECT_API_KEY::"


S3_RULES = s3.lifecycle_rules(30)


@pytest.mark.parametrize("aws_rules", [
    [{**S3_RULES[0], "Filter": {"Prefix": ""}}],
    [{**{k: v for k, v in S3_RULES[0].items() if k != "Filter"}, "Prefix": ""}],
    [{**{k: v for k, v in S3_RULES[0].items() if k != "Filter"}}],
    [{**S3_RULES[0], "Filter": {}}],
])
def test_s3_lifecycle_equivalent_forms(aws_rules) -> None:
    assert s3.normalise_rules(aws_rules) == s3.normalise_rules(S3_RULES)


def test_s3_lifecycle_prefix_matters() -> None:
    assert s3.normalise_rules([{**S3_RULES[0], "Filter": {"Prefix": "logs/"}}]) != s3.normalise_rules(S3_RULES)


def test_sqs_attributes_normalised() -> None:
    desired = sqs.queue_props(345600, 30, {}, redrive_to="arn:dlq",
                              queue_policy=sqs.observer_queue_policy("arn:q", "arn:rule"))["attributes"]
    import json
    aws = {"MessageRetentionPeriod": "345600", "VisibilityTimeout": "30", "SqsManagedSseEnabled": "true",
           "RedrivePolicy": json.dumps({"maxReceiveCount": "5", "deadLetterTargetArn": "arn:dlq"}),
           "Policy": json.dumps(sqs.observer_queue_policy("arn:q", "arn:rule")),
           "QueueArn": "arn:q", "ApproximateNumberOfMessages": "3", "CreatedTimestamp": "1"}
    assert sqs.normalise_attributes(aws) == desired


def test_event_pattern_order_insensitive() -> None:
    a = events.normalise_pattern('{"detail-type": ["ECS Task State Change"], "source": ["aws.ecs"], '
                                 '"detail": {"clusterArn": ["arn:c"]}}')
    assert a == events.normalise_pattern(events.task_state_pattern("arn:c"))
    assert a != events.normalise_pattern(events.task_state_pattern("arn:other"))


def test_ecr_lifecycle_defaults() -> None:
    sent = ecr.lifecycle_policy(5)
    aws = copy.deepcopy(sent)
    del aws["rules"][0]["selection"]["tagStatus"]
    assert ecr.normalise_lifecycle(aws) == ecr.normalise_lifecycle(sent)
    assert ecr.normalise_lifecycle(ecr.lifecycle_policy(6)) != ecr.normalise_lifecycle(sent)


def test_security_group_rules_roundtrip() -> None:
    perms = [{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.0.0.0/8"}],
              "Ipv6Ranges": [{"CidrIpv6": "::/0"}], "UserIdGroupPairs": [{"GroupId": "sg-1"}]},
             {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    flat = flatten_rules(perms)
    assert len(flat) == 4
    assert flatten_rules([to_permission(r) for r in flat]) == flat


# --- the diff ---------------------------------------------------------------------

DIFF_CASES = [
    ("equal", {"a": 1}, {"a": 1}, []),
    ("scalar differs", {"a": 1}, {"a": 2}, [Diff("a", 2, 1)]),
    ("None is unmanaged", {"a": None, "b": 1}, {"a": 5, "b": 1}, []),
    ("missing actual", {"a": 1}, {}, [Diff("a", None, 1)]),
    ("extra actual key reported", {"a": 1}, {"a": 1, "z": 3}, [Diff("z", 3, None)]),
    ("extra empty actual ignored", {"a": 1}, {"a": 1, "z": []}, []),
    ("nested path", {"a": {"b": {"c": 1}}}, {"a": {"b": {"c": 2}}}, [Diff("a.b.c", 2, 1)]),
    ("lists whole", {"a": [1, 2]}, {"a": [2, 1]}, [Diff("a", [2, 1], [1, 2])]),
    ("within range", {"n": Within(1, 3, 2)}, {"n": 3}, []),
    ("outside range", {"n": Within(1, 3, 2)}, {"n": 5}, [Diff("n", 5, Within(1, 3, 2))]),
    ("unknown differs", {"id": UNKNOWN}, {"id": "sg-1"}, [Diff("id", "sg-1", UNKNOWN)]),
    ("sensitive equal", {"v": Sensitive({"k": 1})}, {"v": Sensitive({"k": 1})}, []),
    ("sensitive differs", {"v": Sensitive({"k": 1})}, {"v": Sensitive({"k": 2})},
     [Diff("v", Sensitive({"k": 2}), Sensitive({"k": 1}))]),
]


@pytest.mark.parametrize("name,desired,actual,expected", DIFF_CASES, ids=[c[0] for c in DIFF_CASES])
def test_diff(name, desired, actual, expected) -> None:
    assert diff(desired, actual) == expected


def test_sensitive_never_rendered() -> None:
    d = Diff("value", Sensitive({"PREFECT_API_KEY": "pnu_secret"}), Sensitive({"PREFECT_API_KEY": "pnu_new"}))
    assert "pnu_" not in " ".join(d.render())
    assert "pnu_" not in repr(Sensitive("pnu_secret"))


# --- each kind's public normaliser: AWS's answer -> the desired properties' shape ---------

def test_s3_bucket_answers_normalised() -> None:
    from infra_tasks.names import bucket_arn

    desired = s3.desired_props("us-east-1", bucket_arn("aws", "b"), 30, {})
    answers = dict(
        location={"LocationConstraint": None}, versioning={"Status": "Enabled"},
        public_access_block={"PublicAccessBlockConfiguration": dict(s3.PUBLIC_ACCESS_BLOCK)},
        encryption={"ServerSideEncryptionConfiguration": {"Rules": [{
            "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256", "KMSMasterKeyID": ""},
            "BucketKeyEnabled": True}]}},
        bucket_policy={"Policy": __import__("json").dumps(s3.tls_only_policy(bucket_arn("aws", "b")))},
        lifecycle={"Rules": [{**S3_RULES[0], "Filter": {}}]})
    assert s3.normalise_bucket(**answers) == {k: v for k, v in desired.items() if k != "tags"}
    # Nothing set (every configuration read answered "not there", i.e. {}):
    assert s3.normalise_bucket({}, {}, {}, {}, {}, {}) == {
        "region": "us-east-1", "versioning": None, "public_access_block": None, "encryption": None,
        "policy": None, "lifecycle": None}
    assert s3.normalise_bucket({"LocationConstraint": "eu-west-1"}, {}, {}, {}, {}, {})["region"] == "eu-west-1"


def test_iam_role_answer_normalised() -> None:
    from infra_tasks import iam

    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "ecs-tasks.amazonaws.com"}}]}
    desired = iam.role_props(trust, "d", {"p": trust}, ["arn:aws:iam::1:policy/b", "arn:aws:iam::1:policy/a"], {})
    # AWS's equivalent form: a single statement, a one-item action list.
    role = {"AssumeRolePolicyDocument": {"Version": "2012-10-17",
                                         "Statement": {**trust["Statement"][0], "Action": ["sts:AssumeRole"]}},
            "Description": "d", "MaxSessionDuration": 3600}
    got = iam.normalise_role(role, {"p": trust}, ["arn:aws:iam::1:policy/a", "arn:aws:iam::1:policy/b"])
    assert got == {k: v for k, v in desired.items() if k != "tags"}
    assert iam.normalise_role({**role, "PermissionsBoundary": {"PermissionsBoundaryArn": "arn:b"}}, {}, [])[
        "permissions_boundary"] == "arn:b"


@pytest.mark.parametrize("versions,spare", [
    ([{"VersionId": "v1", "IsDefaultVersion": True, "CreateDate": 1}], None),
    ([{"VersionId": f"v{i}", "IsDefaultVersion": i == 5, "CreateDate": i} for i in (3, 1, 2, 4, 5)], "v1"),
])
def test_iam_policy_room_for_a_new_version(versions, spare) -> None:
    from infra_tasks import iam

    assert iam.spare_version(versions) == spare


def test_iam_oidc_provider_found_by_host() -> None:
    from infra_tasks import iam

    arns = ["arn:aws:iam::1:oidc-provider/token.actions.githubusercontent.com",
            "arn:aws-cn:iam::1:oidc-provider/oidc.circleci.com/org/o"]
    assert iam.oidc_provider_for(arns, "oidc.circleci.com/org/o") == arns[1]
    assert iam.oidc_provider_for(arns, "oidc.circleci.com/org/other") is None


def test_ecs_cluster_and_service_answers_normalised() -> None:
    from infra_tasks import ecs

    cluster = {"status": "ACTIVE", "settings": [{"name": "containerInsights", "value": "enabled"}],
               "capacityProviders": ["FARGATE_SPOT", "FARGATE"],
               "defaultCapacityProviderStrategy": [{"capacityProvider": "FARGATE", "weight": 1}]}
    assert ecs.normalise_cluster(cluster) == {k: v for k, v in ecs.cluster_props({}).items() if k != "tags"}
    assert ecs.active([{**cluster, "status": "INACTIVE"}]) is None and ecs.active([cluster]) is cluster
    desired = ecs.service_props(task_definition="arn:td:1", desired=1, low=1, high=3, subnets=["s2", "s1"],
                                security_group="sg-1", public_ip=False, tags={})
    service = {"taskDefinition": "arn:td:1", "desiredCount": 2, "launchType": "FARGATE", "platformVersion": "LATEST",
               "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["s1", "s2"], "securityGroups": ["sg-1"]}},
               "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": True, "rollback": True},
                                           "maximumPercent": 200, "minimumHealthyPercent": 100},
               "propagateTags": "SERVICE", "enableECSManagedTags": True}
    assert diff({k: v for k, v in desired.items() if k != "tags"}, ecs.normalise_service(service)) == []


def test_autoscaling_answers_normalised() -> None:
    from infra_tasks import autoscaling

    assert autoscaling.normalise_scalable_target({"MinCapacity": 1, "MaxCapacity": 3}) == \
        autoscaling.target_props(1, 3)
    desired = autoscaling.policy_props(70, 300, 60)
    answer = {"PolicyType": "TargetTrackingScaling", "TargetTrackingScalingPolicyConfiguration": {
        "TargetValue": 70, "ScaleInCooldown": 300, "ScaleOutCooldown": 60, "CustomizedMetricSpecification": None,
        "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}}}
    assert autoscaling.normalise_scaling_policy(answer) == desired


def test_events_logs_secrets_ecr_answers_normalised() -> None:
    from infra_tasks import logs, secrets

    rule = {"EventPattern": '{"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"], '
                            '"detail": {"clusterArn": ["arn:c"]}}', "State": "ENABLED",
            "Description": events.rule_props("arn:c", "arn:q", {})["description"]}
    assert events.normalise_rule(rule, [{"Id": "observer-queue", "Arn": "arn:q"}]) == \
        {k: v for k, v in events.rule_props("arn:c", "arn:q", {}).items() if k != "tags"}
    group = {"logGroupName": "/g", "arn": "arn:aws:logs:r:1:log-group:/g:*", "retentionInDays": 30}
    assert logs.log_group_arn(group) == "arn:aws:logs:r:1:log-group:/g"
    assert logs.normalise_log_group(group) == {"retention_days": 30}
    assert secrets.parse_secret('{"PREFECT_API_KEY": "k"}') == {"PREFECT_API_KEY": "k"}
    assert secrets.parse_secret("plain") == "plain" and secrets.parse_secret(None) is None
    repo = {"imageScanningConfiguration": {"scanOnPush": True}, "imageTagMutability": "IMMUTABLE"}
    import json
    assert ecr.normalise_repository(repo, json.dumps(ecr.lifecycle_policy(5))) == \
        {k: v for k, v in ecr.desired_props(5, "IMMUTABLE", {}).items() if k != "tags"}


def test_security_group_answer_normalised() -> None:
    from infra_tasks.ec2 import normalise_security_group, sg_props

    g = {"Description": "d", "VpcId": "vpc-1", "IpPermissions": [],
         "IpPermissionsEgress": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}
    assert normalise_security_group(g) == {k: v for k, v in sg_props("d", "vpc-1", {}).items() if k != "tags"}
