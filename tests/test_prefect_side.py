"""The Prefect side after a bootstrap: pools, blocks, lock, deployments; upsert of the
pool template; the drift check; UI updates with approval; the lock between runs."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from infra_tasks import aws
from infra_tasks.config import load_config
from infra_tasks.prefect_objects import PREFECT_CALLS

from .conftest import PROD_ACCOUNT, ROOT

P = "data-flows"
REGION = "us-east-1"


def client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def defaults(pool) -> dict[str, Any]:
    return {k: v.get("default") for k, v in pool.base_job_template["variables"]["properties"].items()}


@pytest.fixture
def stack(bootstrap, boto):
    """A fresh stack, for tests that leave it changed."""
    assert bootstrap("--yes", prefect=True) == 0
    return boto


@pytest.fixture
def shared(warm_prefect_stack):
    """The shared stack, for tests that read it or change nothing."""
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
        drift = c.read_deployment_by_name(f"drift-check/{P}-production")
        update = c.read_deployment_by_name(f"infra-update/{P}-production")
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


def test_update_bad_request_fails_clearly(shared) -> None:
    from flows.update import UpdateRequest, infra_update

    aws.CALLS.reset()
    state = infra_update(request=UpdateRequest(environment="production", agent_cpu=1000), return_state=True)
    assert state.is_failed()
    assert "cpu 1000 is not a Fargate size" in state.message and "agent_cpu -> agent.cpu" in state.message
    assert aws.CALLS.mutating() == []


def test_update_rejected_changes_nothing(shared) -> None:
    th, box = _run_update_in_thread({"environment": "production", "agent_desired_count": 1})
    run = _wait_paused()
    aws.CALLS.reset()
    _resume(run.id, "reject")
    th.join(120)
    assert box["state"].is_cancelled()
    assert aws.CALLS.mutating() == []
    svc = shared("ecs").describe_services(cluster=f"{P}-main", services=[f"{P}-main-agent"])["services"][0]
    assert svc["desiredCount"] == 2


def test_update_without_approval_times_out_and_changes_nothing(shared) -> None:
    from flows.update import UpdateRequest, infra_update

    aws.CALLS.reset()
    state = infra_update(request=UpdateRequest(environment="production", agent_max_count=3), approval_timeout=3,
                         return_state=True)
    # The server expires the pause and ends the run Failed ("... never resumed"); nothing is applied.
    assert not state.is_completed() and "never resumed" in (state.message or "")
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
    drift = res[f"prefect.deployment/drift-check/{P}-production"].props
    update = res[f"prefect.deployment/infra-update/{P}-production"].props
    assert drift["work_pool_name"] == update["work_pool_name"] == f"{P}-main"
    assert drift["job_variables"]["task_role_arn"].endswith(f"role/{P}-infra-read")
    assert update["job_variables"]["task_role_arn"].endswith(f"role/{P}-infra-write")
    assert drift["job_variables"]["image"].endswith(f"/{P}:prefect-agent-0.1.0")
    assert drift["path"] == "/opt/prefect/app"
    assert not any(k.startswith(f"prefect.work_pool/{P}-production-sandbox") for k in res)


def test_rerun_no_duplicates_and_person_edits_kept(stack, bootstrap, capsys) -> None:
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
        assert len(c.read_deployments()) == 2
    PREFECT_CALLS.reset()
    aws.CALLS.reset()
    assert bootstrap("--yes", prefect=True) == 0
    assert PREFECT_CALLS.mutating() == [] and aws.CALLS.mutating() == []


def run_drift(**kwargs: Any):
    from flows.drift_check import drift_check, report_of

    state = drift_check(env="production", return_state=True, **kwargs)
    return state, report_of(state)


def _run_update_in_thread(request: dict) -> tuple[threading.Thread, dict]:
    from flows.update import UpdateRequest, infra_update

    box: dict = {}

    def target() -> None:
        box["state"] = infra_update(request=UpdateRequest(**request), approval_timeout=120, return_state=True)
    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, box


def _wait_paused(timeout: float = 60) -> Any:
    from prefect.client.schemas.filters import (FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState,
                                                FlowRunFilterStateName)

    deadline = time.monotonic() + timeout
    with client() as c:
        while time.monotonic() < deadline:
            runs = c.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["infra-update"])),
                                    flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                                        name=FlowRunFilterStateName(any_=["Paused"]))))
            if runs:
                return runs[0]
            time.sleep(0.5)
    raise AssertionError("infra-update never paused for approval")


def _resume(run_id: Any, decision: str) -> None:
    from prefect.flow_runs import resume_flow_run

    resume_flow_run(run_id, run_input={"decision": decision, "comment": f"{decision} in test"})


def test_second_mutating_run_is_excluded(stack, bootstrap, capsys) -> None:
    from infra_tasks import lock

    cfg = load_config(ROOT / "infra.toml")
    stack("logs").put_retention_policy(logGroupName=f"/ecs/{P}-main/agent", retentionInDays=7)
    with lock.held(cfg, "production"):
        aws.CALLS.reset()
        assert bootstrap("--yes", "--set", "prefect.lock_timeout_seconds=1", prefect=True) == 1
        assert aws.CALLS.mutating() == []
    assert "holds the lock" in capsys.readouterr().err
    assert bootstrap("--yes", prefect=True) == 0  # free again
