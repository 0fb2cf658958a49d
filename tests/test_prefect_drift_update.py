"""The drift check and infra-update on a fresh stack each (they change it): drift of
every kind found and remediated, CLI exit codes, an approved update applied and kept by
the next drift check, and an update its role may not make refused before approval."""

from __future__ import annotations

from infra_tasks import aws

from .conftest import PROD_ACCOUNT, P
from .prefect_runs import client, resume, run_drift, run_update_in_thread, wait_paused


def test_drift_check_in_sync_then_each_kind_of_drift(prefect_stack) -> None:
    from prefect.client.schemas.actions import WorkPoolUpdate
    from prefect_aws.s3 import S3Bucket

    from flows.drift_check import Status

    state, report = run_drift()
    assert state.is_completed(), report.text()
    assert {f.status for f in report.findings} == {Status.IN_SYNC}
    assert len(report.findings) == 56
    logs = prefect_stack("logs")
    logs.put_retention_policy(logGroupName=f"/ecs/{P}-main/agent", retentionInDays=7)     # changed property
    logs.delete_log_group(logGroupName=f"/ecs/{P}-staging/flows")                         # deleted resource
    logs.create_log_group(logGroupName=f"/ecs/{P}-main/old", tags={                       # unmanaged, ours
        "managed-by": f"prefect-aws-stack/{P}", "environment": "production"})
    with client() as c:                                                                   # pool default
        pool = c.read_work_pool(f"{P}-staging")
        pool.base_job_template["variables"]["properties"]["memory"]["default"] = 8192
        c.update_work_pool(f"{P}-staging", WorkPoolUpdate(base_job_template=pool.base_job_template))
    bucket = S3Bucket.load(f"{P}-main-flows")                                              # a block's field
    bucket.bucket_name = "someone-elses"
    bucket.save(f"{P}-main-flows", overwrite=True)
    state, report = run_drift()
    assert state.is_failed()
    drifted = {(f.resource, f.status) for f in report.drifted}
    assert drifted == {
        (f"logs.group//ecs/{P}-main/agent", Status.MODIFIED),
        (f"logs.group//ecs/{P}-staging/flows", Status.DELETED),
        (f"logs.group//ecs/{P}-main/old", Status.UNMANAGED),
        (f"prefect.work_pool/{P}-staging", Status.MODIFIED),
        (f"prefect.block/s3-bucket/{P}-main-flows", Status.MODIFIED),
    }
    by_key = {f.resource: f for f in report.drifted}
    assert by_key[f"logs.group//ecs/{P}-main/agent"].properties == [("retention_days", "30", "7")]
    assert by_key[f"prefect.work_pool/{P}-staging"].properties == [("defaults.memory", "2048", "8192")]
    assert by_key[f"prefect.block/s3-bucket/{P}-main-flows"].properties == [
        ("bucket_name", f"{P}-main-flows-{PROD_ACCOUNT}", "someone-elses")]
    with client() as c:
        art = c.read_artifacts()
    keys = {a.key for a in art}
    assert {"drift-production", "drift-production-summary"} <= keys
    # Remediation repairs MODIFIED and DELETED; the unmanaged one is reported, never deleted.
    state, report = run_drift(remediate=True)
    assert {(f.resource, f.status) for f in report.drifted} == {(f"logs.group//ecs/{P}-main/old", Status.UNMANAGED)}
    assert logs.describe_log_groups(logGroupNamePrefix=f"/ecs/{P}-main/old")["logGroups"]
    logs.delete_log_group(logGroupName=f"/ecs/{P}-main/old")
    state, report = run_drift()
    assert state.is_completed()


def test_drift_check_cli_exit_codes(prefect_stack, capsys) -> None:
    from flows.drift_check import main

    assert main(["--env", "production"]) == 0
    prefect_stack("sqs").set_queue_attributes(
        QueueUrl=prefect_stack("sqs").get_queue_url(QueueName=f"{P}-main-ecs-events")["QueueUrl"],
        Attributes={"VisibilityTimeout": "99"})
    capsys.readouterr()
    assert main(["--env", "production"]) == 2
    out = capsys.readouterr().out
    assert f"MODIFIED     sqs.queue/{P}-main-ecs-events" in out
    assert "attributes.VisibilityTimeout: expected 30, actual 99" in out


def test_update_applies_after_approval_and_survives_drift_check(prefect_stack) -> None:
    th, box = run_update_in_thread({"environment": "production", "agent_cpu": 2048, "agent_memory": 4096})
    run = wait_paused()
    resume(run.id, "approve")
    th.join(120)
    state = box["state"]
    assert state.is_completed(), state.message
    td = prefect_stack("ecs").describe_task_definition(taskDefinition=f"{P}-main-agent")["taskDefinition"]
    assert (td["cpu"], td["memory"]) == ("2048", "4096")
    with client() as c:
        var = c.read_variable_by_name(f"{P}-production-overrides")
        assert var.value["version"] == 1 and var.value["overrides"] == {"agent": {"cpu": 2048, "memory": 4096}}
    drift_state, report = run_drift()
    assert drift_state.is_completed(), report.text()
    assert any("approved in the UI" in n for n in report.notes)


def test_update_refuses_what_its_role_may_not_change(prefect_stack) -> None:
    """infra-update runs with infra-write, which cannot change the control plane: a plan
    that would (here: a CI role's policy changed out of band) fails before asking for
    approval, naming the resource and who can."""
    import json

    from flows.update import UpdateRequest, infra_update

    prefect_stack("iam").put_role_policy(RoleName=f"{P}-ci-plan", PolicyName="infra-read", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    aws.CALLS.reset()
    state = infra_update(request=UpdateRequest(environment="production"), return_state=True)
    assert state.is_failed()
    assert f"iam.role/{P}-ci-plan: needs an administrator's bootstrap" in state.message
    assert aws.CALLS.mutating() == []
