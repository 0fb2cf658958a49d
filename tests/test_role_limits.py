"""Bootstrap running as one of the project's own roles (CI's apply) refuses, before any
change, what that role may not change, instead of failing half-way with AccessDenied."""

from __future__ import annotations

import json

from infra_tasks import aws

from .iam_world import assume
from .conftest import P


def as_ci_deploy(boto, monkeypatch, capsys) -> None:
    """From here on our clients use ci-deploy's credentials (bootstrap tells the role it
    runs as from the caller's identity); output and call counts start afresh."""
    for k, v in assume(boto, f"{P}-ci-deploy").items():
        monkeypatch.setenv(k, v)
    aws.reset_clients()
    capsys.readouterr()
    aws.CALLS.reset()


def test_ci_deploy_refuses_control_plane_changes_up_front(bootstrap, boto, monkeypatch, capsys) -> None:
    assert bootstrap("--yes") == 0
    iam = boto("iam")
    iam.put_role_policy(RoleName=f"{P}-infra-read", PolicyName="infra-read", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    boto("logs").put_retention_policy(logGroupName=f"/ecs/{P}-main/agent", retentionInDays=7)
    as_ci_deploy(boto, monkeypatch, capsys)
    assert bootstrap("--yes") == 1
    err = capsys.readouterr().err
    assert f"iam.role/{P}-infra-read: needs an administrator's bootstrap" in err
    assert "nothing was changed" in err
    assert aws.CALLS.mutating() == []  # not even the log retention CI could have fixed
    # What CI may change on its own still applies once the control plane is back in shape.
    monkeypatch.undo()
    aws.reset_clients()
    assert bootstrap("--yes") == 0


def test_ci_deploy_refuses_to_restore_a_secret_a_teardown_scheduled_for_deletion(bootstrap, boto, monkeypatch,
                                                                                 capsys) -> None:
    assert bootstrap("--yes") == 0
    boto("secretsmanager").delete_secret(SecretId=f"{P}/prefect-credentials", RecoveryWindowInDays=7)
    as_ci_deploy(boto, monkeypatch, capsys)
    assert bootstrap("--yes") == 1
    err = capsys.readouterr().err
    assert (f"secretsmanager.secret/{P}/prefect-credentials: scheduled for deletion by a teardown; needs an "
            f"administrator's bootstrap") in err
    assert aws.CALLS.mutating() == []
    monkeypatch.undo()
    aws.reset_clients()
    assert bootstrap("--yes") == 0  # an administrator's restores it
    assert "DeletedDate" not in boto("secretsmanager").describe_secret(SecretId=f"{P}/prefect-credentials")


def test_boundary_changes_become_new_versions_within_iams_five(bootstrap, boto) -> None:
    """A boundary change is a new default version; IAM keeps at most five, so the oldest
    spare one is deleted first (six changes in a row must all apply)."""
    assert bootstrap("--yes") == 0
    iam = boto("iam")
    arn = f"arn:aws:iam::222222222222:policy/{P}-main-runtime-boundary"
    for i in range(6):
        extra = (f'[{{Effect = "Allow", Action = ["sqs:SendMessage"], '
                 f'Resource = "arn:aws:sqs:us-east-1:222222222222:queue-{i}"}}]')
        assert bootstrap("--yes", "--set", f"flows.task_role_extra_statements={extra}") == 0
        versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
        assert len(versions) == min(i + 2, 5)
        default = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
        doc = json.dumps(iam.get_policy_version(PolicyArn=arn, VersionId=default)["PolicyVersion"]["Document"])
        assert f"queue-{i}" in doc and f"queue-{i - 1}" not in doc
        assert bootstrap("--plan", "--set", f"flows.task_role_extra_statements={extra}") == 0
