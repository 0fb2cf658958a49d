"""A full production bootstrap against the emulator, then every setting asserted on
the emulator's state (read with plain boto3, not our code)."""

from __future__ import annotations

import json

import pytest

from infra_tasks import aws

from .conftest import P, PROD_ACCOUNT, policy_doc

TYPES = ("staging", "main")
ORG = "a1b2c3d4-0000-4000-8000-000000000001"
PROJECT = "a1b2c3d4-0000-4000-8000-000000000002"


@pytest.fixture
def stack(warm_stack):
    return warm_stack


def owner_tags(tags: dict[str, str], t: str) -> None:
    assert tags["managed-by"] == f"prefect-aws-stack/{P}"
    assert tags["deployment-type"] == t
    assert tags["environment"] == "production"
    assert tags["service"] == "prefect-flows" and tags["team"] == "data-platform"


def test_bucket(stack) -> None:
    s3 = stack("s3")
    for t in TYPES:
        b = f"{P}-{t}-flows-{PROD_ACCOUNT}"
        assert s3.get_bucket_versioning(Bucket=b)["Status"] == "Enabled"
        pab = s3.get_public_access_block(Bucket=b)["PublicAccessBlockConfiguration"]
        assert all(pab[k] for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                                    "RestrictPublicBuckets"))
        enc = s3.get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert enc["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        pol = policy_doc(s3.get_bucket_policy(Bucket=b)["Policy"])["Statement"][0]
        assert pol["Effect"] == "Deny" and pol["Condition"]["Bool"]["aws:SecureTransport"] in ("false", ["false"])
        rule = s3.get_bucket_lifecycle_configuration(Bucket=b)["Rules"][0]
        assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30 and rule["Status"] == "Enabled"
        owner_tags({x["Key"]: x["Value"] for x in s3.get_bucket_tagging(Bucket=b)["TagSet"]}, t)


def test_registry(stack) -> None:
    ecr = stack("ecr")
    repo = ecr.describe_repositories(repositoryNames=[P])["repositories"][0]
    assert repo["imageScanningConfiguration"]["scanOnPush"] is True
    assert repo["imageTagMutability"] == "IMMUTABLE"
    lc = json.loads(ecr.get_lifecycle_policy(repositoryName=P)["lifecyclePolicyText"])
    assert lc["rules"][0]["selection"]["countNumber"] == 500
    tags = {x["Key"]: x["Value"] for x in ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]}
    owner_tags(tags, "account")


def test_log_groups(stack) -> None:
    logs = stack("logs")
    groups = {g["logGroupName"]: g for g in logs.describe_log_groups(logGroupNamePrefix=f"/ecs/{P}-")["logGroups"]}
    for t in TYPES:
        for kind in ("agent", "flows"):
            assert groups[f"/ecs/{P}-{t}/{kind}"]["retentionInDays"] == 30


def test_secret_created_and_not_printed(bootstrap, boto, capfd, monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "https://api.prefect.cloud/api/accounts/a/workspaces/w")
    monkeypatch.setenv("PREFECT_API_KEY", "pnu_TOPSECRETVALUE123")
    assert bootstrap("--yes", "--plan-out", "/tmp/plan-secret.json", prefect=True) == 0
    sm = boto("secretsmanager")
    value = json.loads(sm.get_secret_value(SecretId=f"{P}/prefect-credentials")["SecretString"])
    assert value["PREFECT_API_KEY"] == "pnu_TOPSECRETVALUE123"
    # Rotate the key: the plan shows a masked change, never the value.
    monkeypatch.setenv("PREFECT_API_KEY", "pnu_ROTATEDVALUE456")
    assert bootstrap("--plan") == 0  # without --rotate-credentials the stored value is left alone
    assert bootstrap("--plan", "--rotate-credentials", "--plan-out", "/tmp/plan-secret.json") == 2
    out = capfd.readouterr()
    text = out.out + out.err + open("/tmp/plan-secret.json").read()
    assert "value: (sensitive) -> (sensitive)" in text
    assert "TOPSECRET" not in text and "ROTATED" not in text
    # Nor did the Prefect API (flow and task runs, logs, artifacts, events) receive it.
    assert prefect_db_contains(b"data-flows-main")  # the scan reads the database the runs wrote to
    assert not prefect_db_contains(b"TOPSECRETVALUE")


def prefect_db_contains(needle: bytes) -> bool:
    import glob

    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url.get_secret_value()
    path = url.split("///", 1)[1]
    files = glob.glob(path + "*")
    assert files, f"no Prefect database at {path}"
    return any(needle in open(f, "rb").read() for f in files)


def role(iam, name: str) -> dict:
    r = iam.get_role(RoleName=name)["Role"]
    names = iam.list_role_policies(RoleName=name)["PolicyNames"]
    r["inline"] = {n: policy_doc(iam.get_role_policy(RoleName=name, PolicyName=n)["PolicyDocument"]) for n in names}
    r["managed"] = [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]]
    return r


def actions(doc: dict) -> dict[str, dict]:
    out = {}
    for st in doc["Statement"]:
        acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        for a in acts:
            out[a] = st
    return out


def test_roles_least_privilege(stack) -> None:
    iam = stack("iam")
    acct = PROD_ACCOUNT
    for t in TYPES:
        base = f"{P}-{t}"
        boundary = f"arn:aws:iam::{acct}:policy/{base}-runtime-boundary"
        for name in ("agent-exec", "agent-task", "flow-exec", "flow-task"):
            r = role(iam, f"{base}-{name}")
            trust = policy_doc(r["AssumeRolePolicyDocument"])["Statement"][0]
            assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
            assert trust["Condition"]["StringEquals"]["aws:SourceAccount"] == acct
            assert r["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary
            assert r["managed"] == []  # no AWS managed policy: each grant is scoped inline
        ex = actions(role(iam, f"{base}-agent-exec")["inline"]["agent-execution"])
        assert ex["secretsmanager:GetSecretValue"]["Resource"].endswith(f":secret:{P}/prefect-credentials-??????")
        assert ex["ecr:BatchGetImage"]["Resource"] == f"arn:aws:ecr:us-east-1:{acct}:repository/{P}"
        task = actions(role(iam, f"{base}-agent-task")["inline"]["prefect-worker"])
        assert task["ecs:RunTask"]["Condition"]["ArnEquals"]["ecs:cluster"] == \
            f"arn:aws:ecs:us-east-1:{acct}:cluster/{base}"
        assert task["ecs:StopTask"]["Resource"] == f"arn:aws:ecs:us-east-1:{acct}:task/{base}/*"
        assert "ecs:TagResource" in task
        passed = [f"arn:aws:iam::{acct}:role/{base}-flow-exec", f"arn:aws:iam::{acct}:role/{base}-flow-task"]
        if t == "main":  # the management deployments run on main's agent with their own roles
            passed += [f"arn:aws:iam::{acct}:role/{P}-infra-{r}" for r in ("read", "write", "prune")]
        assert sorted(task["iam:PassRole"]["Resource"]) == sorted(passed)
        assert task["sqs:ReceiveMessage"]["Resource"] == f"arn:aws:sqs:us-east-1:{acct}:{base}-ecs-events"
        flow_exec = actions(role(iam, f"{base}-flow-exec")["inline"]["flow-execution"])
        assert f"arn:aws:logs:us-east-1:{acct}:log-group:/ecs/{base}/flows" in \
            flow_exec["logs:CreateLogGroup"]["Resource"]  # prefect-aws sets awslogs-create-group
        flow_task = actions(role(iam, f"{base}-flow-task")["inline"]["flow-task"])
        assert flow_task["s3:PutObject"]["Resource"] == f"arn:aws:s3:::{base}-flows-{acct}/*"
        assert all(st["Resource"] != "*" for st in flow_task.values())
        # The boundary is the union of the four roles' statements.
        pol = iam.get_policy(PolicyArn=boundary)["Policy"]
        doc = policy_doc(iam.get_policy_version(PolicyArn=boundary, VersionId=pol["DefaultVersionId"])[
            "PolicyVersion"]["Document"])
        bound = actions(doc)
        assert set(task) | set(flow_task) | set(flow_exec) | set(ex) == set(bound)


def test_management_and_ci_roles(stack) -> None:
    iam = stack("iam")
    read = actions(role(iam, f"{P}-infra-read")["inline"]["infra-read"])
    assert not [a for a in read if not a.split(":")[1].startswith(("Get", "List", "Describe"))]
    write = actions(role(iam, f"{P}-infra-write")["inline"]["infra-write"])
    assert not [a for a in write if ":Delete" in a and a not in ("iam:DeleteRolePolicy", "cloudwatch:DeleteAlarms")]
    put = [st for st in role(iam, f"{P}-infra-write")["inline"]["infra-write"]["Statement"]
           if "iam:PutRolePolicy" in st["Action"]]
    # T's runtime roles (types are dev/staging/main only, so never a ci-* or infra-* role).
    assert sorted(st["Resource"] for st in put) == [f"arn:aws:iam::{PROD_ACCOUNT}:role/{P}-{t}-*"
                                                    for t in ("main", "staging")]
    for st in put:  # only while the role keeps its boundary
        assert list(st["Condition"]["StringEquals"]) == ["iam:PermissionsBoundary"]
    assert not {"iam:AttachRolePolicy", "iam:CreatePolicyVersion", "iam:DeleteRolePermissionsBoundary",
                "iam:UpdateAssumeRolePolicy", "secretsmanager:PutSecretValue"} & set(write)
    host = f"oidc.circleci.com/org/{ORG}"
    origin = "github.com/example-org/data-flows"
    uid = "????????-????-????-????-????????????"
    for name, branches in (("ci-deploy", ["main-v2"]), ("ci-push", ["staging-v2", "main-v2"])):
        trust = policy_doc(role(iam, f"{P}-{name}")["AssumeRolePolicyDocument"])["Statement"][0]
        assert trust["Principal"]["Federated"] == f"arn:aws:iam::{PROD_ACCOUNT}:oidc-provider/{host}"
        assert trust["Condition"]["StringEquals"][f"{host}:aud"] == ORG
        subs = trust["Condition"]["StringLike"][f"{host}:sub"]
        assert sorted(subs if isinstance(subs, list) else [subs]) == sorted(
            f"org/{ORG}/project/{PROJECT}/user/{uid}/vcs-origin/{origin}/vcs-ref/refs/heads/{b}" for b in branches)
    push = actions(role(iam, f"{P}-ci-push")["inline"]["ci-push"])
    assert push["ecr:PutImage"]["Resource"] == f"arn:aws:ecr:us-east-1:{PROD_ACCOUNT}:repository/{P}"
    assert {a.split(":")[0] for a in push} == {"ecr"}
    plan = policy_doc(role(iam, f"{P}-ci-plan")["AssumeRolePolicyDocument"])["Statement"][0]
    assert plan["Condition"]["StringLike"][f"{host}:sub"] == f"org/{ORG}/project/{PROJECT}/user/*"
    assert list(role(iam, f"{P}-ci-plan")["inline"]) == ["infra-read"]
    providers = iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
    assert [p["Arn"] for p in providers] == [f"arn:aws:iam::{PROD_ACCOUNT}:oidc-provider/{host}"]
    got = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=providers[0]["Arn"])
    assert got["ClientIDList"] == [ORG]


def test_network_and_security_groups(stack) -> None:
    ec2 = stack("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    for t in TYPES:
        for name in ("agent", "flows"):
            g = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"{P}-{t}-{name}"]}])[
                "SecurityGroups"][0]
            assert g["VpcId"] == vpc
            assert g["IpPermissions"] == []
            assert [(p["IpProtocol"], p["IpRanges"][0]["CidrIp"]) for p in g["IpPermissionsEgress"]] == \
                [("-1", "0.0.0.0/0")]


def test_cluster_taskdef_service_scaling(stack) -> None:
    ecs = stack("ecs")
    aas = stack("application-autoscaling")
    subnets = sorted(s["SubnetId"] for s in stack("ec2").describe_subnets()["Subnets"])
    for t in TYPES:
        base = f"{P}-{t}"
        c = ecs.describe_clusters(clusters=[base], include=["SETTINGS"])["clusters"][0]
        assert {s["name"]: s["value"] for s in c["settings"]} == {"containerInsights": "enabled"}
        assert sorted(c["capacityProviders"]) == ["FARGATE", "FARGATE_SPOT"]
        td = ecs.describe_task_definition(taskDefinition=f"{base}-agent")["taskDefinition"]
        assert (td["cpu"], td["memory"], td["networkMode"]) == ("1024", "2048", "awsvpc")
        assert td["requiresCompatibilities"] == ["FARGATE"]
        assert td["executionRoleArn"].endswith(f"role/{base}-agent-exec")
        assert td["taskRoleArn"].endswith(f"role/{base}-agent-task")
        cd = td["containerDefinitions"][0]
        assert cd["image"] == f"{PROD_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{P}:prefect-agent-0.1.0"
        assert cd["command"] == ["prefect", "worker", "start", "--pool", base, "--type", "ecs",
                                 "--with-healthcheck", "--install-policy", "never"]
        assert {s["name"] for s in cd["secrets"]} == {"PREFECT_API_KEY", "PREFECT_API_URL"}
        assert all(":secret:" in s["valueFrom"] for s in cd["secrets"])
        env = {e["name"]: e["value"] for e in cd["environment"]}
        assert env["PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_NAME"] == f"{base}-ecs-events"
        assert "PREFECT_API_KEY" not in env
        assert "http://127.0.0.1:8080/health" in cd["healthCheck"]["command"][1]
        assert cd["logConfiguration"]["options"]["awslogs-group"] == f"/ecs/{base}/agent"
        svc = ecs.describe_services(cluster=base, services=[f"{base}-agent"])["services"][0]
        assert svc["launchType"] == "FARGATE" and svc["desiredCount"] == 2
        assert svc["taskDefinition"] == td["taskDefinitionArn"]
        net = svc["networkConfiguration"]["awsvpcConfiguration"]
        assert net["assignPublicIp"] == "DISABLED" and sorted(net["subnets"]) == subnets
        sg = stack("ec2").describe_security_groups(GroupIds=net["securityGroups"])["SecurityGroups"][0]
        assert sg["GroupName"] == f"{base}-agent"
        target = aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[f"service/{base}/{base}-agent"])[
            "ScalableTargets"][0]
        assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 2)
        pol = aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=f"service/{base}/{base}-agent")[
            "ScalingPolicies"][0]
        tt = pol["TargetTrackingScalingPolicyConfiguration"]
        assert tt["TargetValue"] == 45.0
        assert tt["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ECSServiceAverageCPUUtilization"


def test_service_request_carries_circuit_breaker(bootstrap, aws_env) -> None:
    """The emulator drops deploymentConfiguration, so assert what we send on the wire."""
    sent: list[dict] = []

    def capture(params=None, model=None, **_):
        if model.name == "CreateService":
            sent.append(params)
    aws.add_handler("provide-client-params.ecs.CreateService", capture)
    try:
        assert bootstrap("--yes") == 0
    finally:
        aws.remove_handler(capture)
    assert len(sent) == 2
    for params in sent:
        assert params["deploymentConfiguration"] == {
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
            "maximumPercent": 200, "minimumHealthyPercent": 100}
        assert params["enableECSManagedTags"] is True and params["propagateTags"] == "SERVICE"
        assert "loadBalancers" not in params


def test_observer_queue_and_rule(stack) -> None:
    sqs, ev = stack("sqs"), stack("events")
    for t in TYPES:
        base = f"{P}-{t}"
        url = sqs.get_queue_url(QueueName=f"{base}-ecs-events")["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        redrive = json.loads(attrs["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"].endswith(f":{base}-ecs-events-dlq")
        st = policy_doc(attrs["Policy"])["Statement"][0]
        assert st["Principal"] == {"Service": "events.amazonaws.com"}
        assert st["Condition"]["ArnEquals"]["aws:SourceArn"].endswith(f":rule/{base}-ecs-task-state")
        rule = ev.describe_rule(Name=f"{base}-ecs-task-state")
        pattern = json.loads(rule["EventPattern"])
        assert pattern["detail-type"] == ["ECS Task State Change"]
        assert pattern["detail"]["clusterArn"] == [f"arn:aws:ecs:us-east-1:{PROD_ACCOUNT}:cluster/{base}"]
        targets = ev.list_targets_by_rule(Rule=f"{base}-ecs-task-state")["Targets"]
        assert [x["Arn"] for x in targets] == [attrs["QueueArn"]]


def test_dev_environment_has_only_dev(moto_url, prefect_clean, boto) -> None:
    from infra_tasks import emulator

    from .conftest import DEV_ACCOUNT, run_cli

    with emulator.sandbox_env(moto_url, DEV_ACCOUNT, "us-east-1"):
        assert run_cli("--env", "dev", "--yes") == 0
        import boto3
        ecs = boto3.client("ecs", region_name="us-east-1", endpoint_url=moto_url)
        ecs.meta.events.register("before-sign", lambda request=None, **_: request.headers.__setitem__(
            "x-moto-account-id", DEV_ACCOUNT))
        assert sorted(a.rsplit("/", 1)[1] for a in ecs.list_clusters()["clusterArns"]) == [f"{P}-dev"]
    # Nothing landed in the production account.
    assert boto("ecs").list_clusters()["clusterArns"] == []
