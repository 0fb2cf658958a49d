"""Account guard, ownership conflicts and --adopt."""

from __future__ import annotations

import os


from infra_tasks import aws, emulator

from .conftest import DEV_ACCOUNT, P, REGION, run_cli



def test_wrong_account_exits_1_before_any_change(moto_url, prefect_clean, capsys) -> None:
    emulator.reset(moto_url)
    with emulator.sandbox_env(moto_url, DEV_ACCOUNT, REGION):  # credentials of the dev account
        aws.CALLS.reset()
        assert run_cli("--env", "production", "--yes") == 1
        err = capsys.readouterr().err
        assert "configured for account 222222222222" in err and "belong to account 111111111111" in err
        assert aws.CALLS.mutating() == []
        assert [op for _, op in aws.CALLS.snapshot()] == ["GetCallerIdentity"]


def test_unowned_resource_is_a_conflict_until_adopted(bootstrap, boto, capsys) -> None:
    logs = boto("logs")
    logs.create_log_group(logGroupName=f"/ecs/{P}-main/agent", tags={"team": "legacy"})
    aws.CALLS.reset()
    assert bootstrap("--plan") == 1
    out = capsys.readouterr()
    assert f"conflict  logs.group//ecs/{P}-main/agent" in out.out
    assert "--adopt" in out.out
    # Apply stops before changing anything at all.
    assert bootstrap("--yes") == 1
    err = capsys.readouterr().err
    assert "nothing was changed" in err
    assert aws.CALLS.mutating() == []
    # --adopt: the plan shows the takeover (ownership tag) and apply performs it.
    assert bootstrap("--plan", "--adopt") == 2
    out = capsys.readouterr().out
    assert "adopting (adds ownership tag)" in out and "tags.managed-by: (absent) -> prefect-aws-stack/data-flows" in out
    assert bootstrap("--yes", "--adopt") == 0
    arn = logs.describe_log_groups(logGroupNamePrefix=f"/ecs/{P}-main/agent")["logGroups"][0]["arn"].rstrip(":*")
    tags = logs.list_tags_for_resource(resourceArn=arn)["tags"]
    assert tags["managed-by"] == "prefect-aws-stack/data-flows" and tags["team"] == "data-platform"
    assert bootstrap("--plan") == 0


def test_resource_of_another_stack_is_a_conflict(bootstrap, boto, capsys) -> None:
    boto("sqs").create_queue(QueueName=f"{P}-main-ecs-events-dlq", tags={"managed-by": "someone-else"})
    assert bootstrap("--plan") == 1
    assert "owned by another stack (managed-by=someone-else)" in capsys.readouterr().out


def test_existing_oidc_provider_and_secret_are_adopted(bootstrap, boto, capsys) -> None:
    org = "a1b2c3d4-0000-4000-8000-000000000001"
    iam = boto("iam")
    iam.create_open_id_connect_provider(Url=f"https://oidc.circleci.com/org/{org}", ClientIDList=[org],
                                        ThumbprintList=["9e99a48a9960b14926bb7f3b02e22da2b0ab7280"])
    boto("secretsmanager").create_secret(Name=f"{P}/prefect-credentials",
                                         SecretString='{"PREFECT_API_URL": "u", "PREFECT_API_KEY": "k"}')
    assert bootstrap("--plan") == 2
    out = capsys.readouterr().out
    assert "conflict" not in out.split("\n", 1)[1]
    assert bootstrap("--yes") == 0
    assert len(iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]) == 1
    # The adopted secret keeps its value and its (absent) tags.
    sm = boto("secretsmanager")
    assert sm.get_secret_value(SecretId=f"{P}/prefect-credentials")["SecretString"].endswith('"k"}')
    assert bootstrap("--plan") == 0


def test_missing_secret_without_credentials_blocks_apply(aws_env, prefect_clean, monkeypatch, capsys) -> None:
    """Against real AWS (no sandbox placeholder) a missing secret needs PREFECT_API_URL/KEY."""
    monkeypatch.delenv("INFRA_SANDBOX_ACCOUNT")
    monkeypatch.delenv("PREFECT_API_KEY", raising=False)
    aws.reset_clients()
    # Without the sandbox header the emulator acts as its default account: point the
    # config at it so the account guard passes.
    acct = "123456789012"
    assert run_cli("--env", "production", "--set", f'environments.production.account_id="{acct}"', "--yes") == 1
    err = capsys.readouterr().err
    assert "set PREFECT_API_URL and PREFECT_API_KEY" in err and "nothing was changed" in err
    assert aws.CALLS.mutating() == []


def test_missing_agent_image_defers_the_agent_and_says_how_to_push(aws_env, prefect_clean, boto, monkeypatch,
                                                                   capsys) -> None:
    """Against AWS (not the sandbox, which cannot hold images) the agent waits for its image."""
    import json

    monkeypatch.delenv("INFRA_SANDBOX_ACCOUNT")
    monkeypatch.setenv("PREFECT_API_KEY", "pnu_test")
    monkeypatch.setenv("PREFECT_API_URL", os.environ.get("PREFECT_API_URL", "http://127.0.0.1:1/api"))
    aws.reset_clients()
    acct = "123456789012"  # the emulator's own account when no account header is sent
    args = ("--env", "production", "--no-prefect", "--set", f'environments.production.account_id="{acct}"')
    assert run_cli(*args, "--plan") == 2
    out = capsys.readouterr().out
    assert "is not in ECR" in out and f"docker push {acct}.dkr.ecr.us-east-1.amazonaws.com/{P}:prefect-agent-0.1.0" in out
    assert f"create    ecs.task_definition/{P}-main-agent" in out and "deferred: waits for the agent image" in out
    assert run_cli(*args, "--yes") == 0
    out = capsys.readouterr().out
    assert "Waiting, not applied" in out
    import boto3
    ecs = boto3.client("ecs", region_name=REGION, endpoint_url=aws_env)
    assert ecs.describe_clusters(clusters=[f"{P}-main"])["clusters"][0]["status"] == "ACTIVE"
    assert ecs.list_task_definitions(familyPrefix=f"{P}-main-agent")["taskDefinitionArns"] == []
    # CI pushes the image; the next plan creates the agent.
    ecr = boto3.client("ecr", region_name=REGION, endpoint_url=aws_env)
    ecr.put_image(repositoryName=P, imageTag="prefect-agent-0.1.0", imageManifest=json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"digest": "sha256:" + "a" * 64, "size": 1, "mediaType": "application/vnd.docker.container.image.v1+json"},
        "layers": []}))
    assert run_cli(*args, "--plan") == 2
    out = capsys.readouterr().out
    assert "is not in ECR" not in out and "deferred" not in out
    assert f"create    ecs.service/{P}-main-agent" in out
