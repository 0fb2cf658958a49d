"""The Prefect side after a bootstrap: pools, blocks, lock, deployments; upsert of the
pool template; the drift check; UI updates with approval; the lock between runs."""

from __future__ import annotations

import re
from typing import Any

import pytest

from infra_tasks import aws
from infra_tasks.config import load_config
from infra_tasks.prefect_objects import PREFECT_CALLS

from .conftest import P, PROD_ACCOUNT, REGION, ROOT, run_cli
from .prefect_runs import client, resume, run_drift, run_logs, start_from_deployment, wait_paused


def defaults(pool) -> dict[str, Any]:
    return {k: v.get("default") for k, v in pool.base_job_template["variables"]["properties"].items()}


@pytest.fixture
def shared(warm_prefect_stack):
    """The shared prefect_stack, for tests that read it or change nothing."""
    return warm_prefect_stack


# --- on the shared stack (consecutive, so it is built once) ---------------------------------

def test_pools_blocks_lock_and_deployments(shared) -> None:
    ec2, sm = shared("ec2"), shared("secretsmanager")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = sorted(s["SubnetId"] for s in ec2.describe_subnets()["Subnets"])
    secret_arn = sm.describe_secret(SecretId=f"{P}/prefect-credentials")["ARN"]
    with client() as c:
        for t in ("staging", "main"):
            base = f"{P}-{t}"
            pool = c.read_work_pool(base)
            assert pool.type == "ecs"
            d = defaults(pool)
            flow_sg = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"{base}-flows"]}])[
                "SecurityGroups"][0]["GroupId"]
            assert d["cluster"] == f"arn:aws:ecs:{REGION}:{PROD_ACCOUNT}:cluster/{base}"
            assert d["vpc_id"] == vpc
            assert d["network_configuration"] == {"subnets": subnets, "securityGroups": [flow_sg],
                                                  "assignPublicIp": "DISABLED"}
            assert d["execution_role_arn"] == f"arn:aws:iam::{PROD_ACCOUNT}:role/{base}-flow-exec"
            assert d["task_role_arn"] == f"arn:aws:iam::{PROD_ACCOUNT}:role/{base}-flow-task"
            assert d["configure_cloudwatch_logs"] is True
            assert d["cloudwatch_logs_options"]["awslogs-group"] == f"/ecs/{base}/flows"
            assert d["image"] == f"{PROD_ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{P}:prefect-agent-0.1.0"
            assert (d["cpu"], d["memory"]) == (1024, 2048)
            assert d["prefect_api_key_secret_arn"] == f"{secret_arn}:PREFECT_API_KEY::"
            cred = c.read_block_document_by_name(base, "aws-credentials")
            assert d["aws_credentials"] == {"$ref": {"block_document_id": str(cred.id)}}
            assert cred.data["region_name"] == REGION
            bucket = c.read_block_document_by_name(f"{base}-flows", "s3-bucket")
            assert bucket.data["bucket_name"] == f"{base}-flows-{PROD_ACCOUNT}"
        gcl = c.read_global_concurrency_limit_by_name(f"{P}-production-infra-mutations")
        assert gcl.limit == 1 and gcl.active
        drift = c.read_deployment_by_name(f"drift-check/{P}-production-drift-check")
        update = c.read_deployment_by_name(f"infra-update/{P}-production-infra-update")
        # In the sandbox the management deployments run on a process pool (no ECS).
        assert drift.work_pool_name == update.work_pool_name == f"{P}-production-sandbox"
        assert [s.schedule.cron for s in c.read_deployment_schedules(drift.id)] == ["0 * * * *"]
        assert c.read_deployment_schedules(update.id) == []
        assert "request" in update.parameter_openapi_schema["properties"]
        assert drift.parameters == {"env": "production", "remediate": False}
        # The UI's custom-run form starts from these: a real request (plan, approval),
        # not a dry run the user must notice and switch off.
        assert update.parameters == {"request": {"environment": "production"}}


def test_unreadable_resource_is_not_checked_not_in_sync(shared) -> None:
    from botocore.awsrequest import AWSResponse

    from flows.drift_check import Status

    class Raw:
        def stream(self, **_):
            yield b'{"__type": "AccessDeniedException", "message": "no"}'

    def deny(**_):
        return AWSResponse("https://x", 400, {"content-type": "application/x-amz-json-1.1"}, Raw())
    aws.add_handler("before-send.ecr.DescribeRepositories", deny)
    try:
        state, report = run_drift()
    finally:
        aws.remove_handler(deny)
    assert state.is_failed()
    by_key = {f.resource: f for f in report.findings}
    assert by_key[f"ecr.repository/{P}"].status is Status.NOT_CHECKED
    assert "AccessDenied" in by_key[f"ecr.repository/{P}"].detail


def test_update_form_schema_shows_limits_choices_and_descriptions(shared) -> None:
    """What the UI's custom-run form renders: the deployment's parameter schema."""
    from flows.update import Approval
    from infra_tasks.config import FARGATE_MEMORY

    with client() as c:
        dep = c.read_deployment_by_name(f"infra-update/{P}-production-infra-update")
    schema = dep.parameter_openapi_schema
    assert all(v.get("description") for v in schema["properties"].values())
    fields = schema["definitions"]["UpdateRequest"]["properties"]
    assert schema["definitions"]["UpdateRequest"]["required"] == ["environment"]
    for name, field in fields.items():
        assert field.get("description"), name
        assert "anyOf" not in field and field.get("default", 0) is not None, name  # shown directly, no null
    assert fields["agent_cpu"]["enum"] == fields["flow_cpu"]["enum"] == sorted(FARGATE_MEMORY)
    assert {2048, 4096, 512, 122880} <= set(fields["agent_memory"]["enum"]) and 100 not in fields["agent_memory"]["enum"]
    assert "cpu 1024: 2048-8192 in steps of 1024" in fields["agent_memory"]["description"]
    assert (fields["agent_max_count"]["minimum"], fields["agent_max_count"]["maximum"]) == (1, 10)
    assert (fields["agent_desired_count"]["minimum"], fields["agent_desired_count"]["maximum"]) == (0, 10)
    assert "Alone it changes nothing" in fields["agent_desired_count"]["description"]
    assert fields["dry_run"]["default"] is False
    # The approval form: a required choice with its description, no default to click through.
    form = Approval.model_json_schema()
    assert "decision" in form["required"] and "default" not in form["properties"]["decision"]
    assert form["properties"]["decision"]["description"].startswith("approve: apply")
    # Out of range or not a Fargate size: refused at Submit, before any run exists.
    with client() as c:
        for bad in ({"agent_cpu": 1000}, {"agent_max_count": 11}):
            with pytest.raises(Exception, match="409|422|[Vv]alidat"):
                c.create_flow_run_from_deployment(dep.id, parameters={"request": {"environment": "production", **bad}})


def _no_traceback(run_id) -> None:
    logs = run_logs(run_id)
    assert logs, "the run logged nothing"
    assert not [entry.message for entry in logs if "Traceback" in entry.message or entry.level >= 40]
    assert any("Finished in state" in entry.message for entry in logs)


def test_deployment_under_old_name_is_named_with_its_removal(shared, capsys) -> None:
    """Installations from before the management deployments had distinct names hold
    `drift-check/{prefix}-{env}`; bootstrap deletes nothing, so the plan and the drift
    check name it and say how to remove it (a second scheduled drift check otherwise)."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule

    old, new = f"drift-check/{P}-production", f"drift-check/{P}-production-drift-check"
    with client() as c:
        dep = c.read_deployment_by_name(new)
        old_id = c.create_deployment(flow_id=dep.flow_id, name=f"{P}-production", entrypoint=dep.entrypoint,
                                     work_pool_name=dep.work_pool_name, parameters=dep.parameters,
                                     schedules=[DeploymentScheduleCreate(schedule=CronSchedule(cron="0 * * * *"))])
    note = (f"note: deployment '{old}' is the drift-check deployment of production under its old name (now "
            f"'{new}'); bootstrap deletes nothing, so it stays and its schedule keeps a second drift check running. "
            f"Remove it: prefect deployment delete '{old}'")
    try:
        capsys.readouterr()
        assert run_cli("--env", "production", "--plan") == 0  # a note, not a change
        out = capsys.readouterr().out
        assert note in out.splitlines(), out
        assert f"'infra-update/{P}-production'" not in out  # only what is there
        state, report = run_drift()
        assert state.is_completed()
        assert note.removeprefix("note: ") in report.notes
    finally:
        with client() as c:
            c.delete_deployment(old_id)
    capsys.readouterr()
    assert run_cli("--env", "production", "--plan") == 0
    assert "old name" not in capsys.readouterr().out


def test_update_bad_request_fails_clearly(shared) -> None:
    from flows.update import UpdateRequest, infra_update

    aws.CALLS.reset()
    state = infra_update(request=UpdateRequest(environment="production", agent_cpu=1000), return_state=True)
    assert state.is_failed()
    assert "agent_cpu = 1000: cpu 1000 is not a Fargate size" in state.message
    # From the form: a memory that does not fit the cpu names the field, not infra.toml.
    th, box = start_from_deployment(f"infra-update/{P}-production-infra-update",
                                    {"request": {"environment": "production", "agent_memory": 512}})
    th.join(60)
    assert box["state"].is_failed()
    message = box["state"].message
    assert message.startswith("invalid request, nothing was changed: agent_memory = 512: Fargate does not accept "
                              "cpu 1024 with memory 512"), message
    assert "infra.toml" not in message and "\\n" not in message and "\n" not in message
    _no_traceback(box["run"].id)
    assert aws.CALLS.mutating() == []


def test_update_that_changes_nothing_completes_without_asking(shared) -> None:
    """agent_desired_count inside min..max leaves the running service alone: no approval,
    nothing recorded, and the message says why."""
    from flows.update import UpdateRequest, infra_update

    aws.CALLS.reset()
    PREFECT_CALLS.reset()
    state = infra_update(request=UpdateRequest(environment="production", agent_desired_count=1), return_state=True)
    assert state.is_completed(), state.message
    assert state.message.startswith("nothing to change: the infrastructure already matches these values; "
                                    "nothing recorded.")
    assert "agent_desired_count = 1 does not change the running agent services (" in state.message
    assert f"{P}-main-agent runs 2" in state.message and "where autoscaling decides" in state.message
    assert aws.CALLS.mutating() == [] and "prefect:WriteVariable" not in PREFECT_CALLS.mutating()
    with client() as c:
        assert c.read_variable_by_name(f"{P}-production-overrides") is None


def test_update_rejected_ends_cancelled_without_traceback(shared) -> None:
    """Submitted as the README says (the custom-run form, only the fields it names)."""
    th, box = start_from_deployment(f"infra-update/{P}-production-infra-update",
                                    {"request": {"environment": "production", "agent_max_count": 3}})
    run = wait_paused()
    assert run.id == box["run"].id
    from prefect.input.run_input import keyset_from_paused_state

    with client() as c:
        paused = c.read_flow_run(run.id).state
        description = c.read_flow_run_input(run.id, keyset_from_paused_state(paused)["description"])
    assert "Choose **approve** or **reject**" in description
    assert f"- **update** `autoscaling.target/service/{P}-main/{P}-main-agent`\\n    - `max: 2 -> 3`" in description  # JSON text
    assert f"artifact `infra-update-production-plan`" in description
    # The run's page says what to do (Details -> State Message), not only its logs.
    assert paused.name == "Paused"
    assert paused.message.startswith("Waiting for approval: click Resume, then approve or reject; "), paused.message
    assert re.search(r"; [1-9]\d* changes?, plan in artifact infra-update-production-plan and in the Resume form\. "
                     r"Without an answer within 60 min the run is cancelled", paused.message), paused.message
    aws.CALLS.reset()
    resume(run.id, "reject")
    th.join(120)
    assert box["state"].is_cancelled(), box["state"]
    assert box["state"].message == "rejected, nothing was changed: reject in test"
    assert aws.CALLS.mutating() == []
    _no_traceback(run.id)
    svc = shared("ecs").describe_services(cluster=f"{P}-main", services=[f"{P}-main-agent"])["services"][0]
    assert svc["desiredCount"] == 2


def test_update_cancelled_while_paused_stops_waiting_and_changes_nothing(shared) -> None:
    """The UI's Cancel on the paused run: the wait ends at once, not at the approval timeout."""
    import time

    from prefect.states import Cancelling

    th, box = start_from_deployment(f"infra-update/{P}-production-infra-update",
                                    {"request": {"environment": "production", "agent_max_count": 3}})
    run = wait_paused()
    aws.CALLS.reset()
    with client() as c:
        c.set_flow_run_state(run.id, Cancelling(message="cancelled in test"), force=True)
    started = time.monotonic()
    th.join(60)
    assert not th.is_alive() and time.monotonic() - started < 30  # the approval timeout is 60 min
    assert box["state"].is_cancelled(), box["state"]
    assert box["state"].message == "cancelled while waiting for approval; nothing was changed"
    assert aws.CALLS.mutating() == []
    _no_traceback(run.id)


def test_update_without_approval_ends_cancelled_and_changes_nothing(shared) -> None:
    from flows.update import UpdateRequest, infra_update

    aws.CALLS.reset()
    state = infra_update(request=UpdateRequest(environment="production", agent_max_count=3), approval_timeout=3,
                         return_state=True)
    assert state.is_cancelled(), state
    assert state.message.startswith("nobody approved within 3 s; nothing was changed.")
    assert aws.CALLS.mutating() == []
    target = shared("application-autoscaling").describe_scalable_targets(
        ServiceNamespace="ecs", ResourceIds=[f"service/{P}-main/{P}-main-agent"])["ScalableTargets"][0]
    assert target["MaxCapacity"] == 2


# --- on a fresh stack each ----------------------------------------------------------------

def test_management_deployments_on_aws_use_agent_pool_image_and_roles(cfg) -> None:
    from infra_tasks.facts import Facts
    from infra_tasks.desired_prefect import prefect_resources
    from infra_tasks.ec2 import NetworkFacts

    facts = Facts(PROD_ACCOUNT, REGION, NetworkFacts("vpc-1", ("subnet-1",), ()))
    res = {r.key: r for r in prefect_resources(cfg, "production", facts)}
    drift = res[f"prefect.deployment/drift-check/{P}-production-drift-check"].props
    update = res[f"prefect.deployment/infra-update/{P}-production-infra-update"].props
    assert drift["work_pool_name"] == update["work_pool_name"] == f"{P}-main"
    assert drift["job_variables"]["task_role_arn"].endswith(f"role/{P}-infra-read")
    assert update["job_variables"]["task_role_arn"].endswith(f"role/{P}-infra-write")
    assert drift["job_variables"]["image"].endswith(f"/{P}:prefect-agent-0.1.0")
    assert drift["path"] == "/opt/prefect/app"
    assert not any(k.startswith(f"prefect.work_pool/{P}-production-sandbox") for k in res)


def test_rerun_no_duplicates_and_person_edits_kept(prefect_stack, bootstrap, capsys) -> None:
    from prefect.client.schemas.actions import WorkPoolUpdate

    with client() as c:
        pool = c.read_work_pool(f"{P}-main")
        template = pool.base_job_template
        props = template["variables"]["properties"]
        props["family"]["default"] = "team-family"          # a person's own default
        props["cpu"]["default"] = 4096                        # one of ours
        template["job_configuration"]["stream_output"] = True  # a person's job configuration
        c.update_work_pool(f"{P}-main", WorkPoolUpdate(base_job_template=template))
    capsys.readouterr()
    assert bootstrap("--plan", prefect=True) == 2
    out = capsys.readouterr().out
    assert f"prefect.work_pool/{P}-main" in out and "defaults.cpu: 4096 -> 1024" in out
    assert "family" not in out
    PREFECT_CALLS.reset()
    assert bootstrap("--yes", prefect=True) == 0
    assert PREFECT_CALLS.mutating() == ["prefect:UpdateWorkPool"]
    with client() as c:
        pool = c.read_work_pool(f"{P}-main")
        d = defaults(pool)
        assert d["cpu"] == 1024 and d["family"] == "team-family"
        assert pool.base_job_template["job_configuration"]["stream_output"] is True
        assert len([p for p in c.read_work_pools() if p.name.startswith(P)]) == 3
        assert len(c.read_deployments()) == 3
    PREFECT_CALLS.reset()
    aws.CALLS.reset()
    assert bootstrap("--yes", prefect=True) == 0
    assert PREFECT_CALLS.mutating() == [] and aws.CALLS.mutating() == []


def test_second_mutating_run_is_excluded(prefect_stack, bootstrap, capsys) -> None:
    from infra_tasks import lock

    cfg = load_config(ROOT / "infra.toml")
    prefect_stack("logs").put_retention_policy(logGroupName=f"/ecs/{P}-main/agent", retentionInDays=7)
    with lock.held(cfg, "production"):
        aws.CALLS.reset()
        assert bootstrap("--yes", "--set", "prefect.lock_timeout_seconds=1", prefect=True) == 1
        assert aws.CALLS.mutating() == []
    assert "holds the lock" in capsys.readouterr().err
    assert bootstrap("--yes", prefect=True) == 0  # free again


@pytest.mark.parametrize(("overrides", "fields", "expected"), [
    ({"flows": {"cpu": 256, "memory": 8192}}, {"flow_cpu": 256, "flow_memory": 8192},
     "flow_cpu = 256, flow_memory = 8192: Fargate does not accept cpu 256 with memory 8192; with cpu 256 memory "
     "must be one of 512..2048 (512, 1024, 2048)"),
    ({"agent": {"memory": 512}}, {"agent_memory": 512},
     "agent_memory = 512: Fargate does not accept cpu 1024 with memory 512; with cpu 1024 memory must be one of "
     "2048..8192 (2048, 3072, 4096, 5120, 6144, 7168, 8192)"),
], ids=["flow-table", "agent-field"])
def test_form_errors_name_the_fields_typed_in(overrides, fields, expected) -> None:
    """A value typed in the form is blamed on its form field, whether infra.toml's check
    names a key or a whole table (whose value has colons of its own)."""
    from flows.update import UpdateRequest, _form_error
    from infra_tasks.config import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "infra.toml", overrides)
    assert _form_error(err.value, UpdateRequest(environment="production", **fields)) == expected
