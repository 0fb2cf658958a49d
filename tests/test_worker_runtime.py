"""The real prefect-aws ECS worker launches every deployment of every work pool onto what
the bootstrap provisioned.

moto validates little, so this checks what the unpatched worker (prefect-aws 0.7.12,
`prefect worker start --type ecs --run-once`, started as the agent's task definition
starts it, with the agent task role's credentials) sends to AWS for one flow run of each
deployment — the CI flow deployments, the management deployments the bootstrap
registers, and a deployment with nothing but the pool's defaults — and what the emulator
and the Prefect API hold afterwards. The scenario and its data: tests/worker_harness.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from deployments.flows import load_flows, load_manifest, parse_manifest, DEFAULT_MANIFEST
from infra_tasks.management import MANAGEMENT, deployment_name
from infra_tasks.config import load_config

from .iam_eval import explain_denials
from .iam_requests import Call, requests_for
from .worker_harness import ACCOUNT, DEFAULTS_DEPLOYMENT, ENV_NAME, REGION, ROOT, WorkerRun, captured_calls

# The scenario runs once per process: everything that reads it lives in this file, which
# xdist (--dist loadfile) keeps in one worker.
pytestmark = pytest.mark.timeout(600)

CFG = load_config(ROOT / "infra.toml")
P = CFG.prefix
TYPES = tuple(CFG.env(ENV_NAME).deployment_types)  # ("staging", "main")
MGMT_TYPE = CFG.management_type(ENV_NAME)
TAG = CFG.agent.image_tag
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{P}:{TAG}"

# Everything a worker may call while launching flow runs, and nothing else.
WORKER_OPERATIONS = {
    ("sqs", "GetQueueUrl"),             # the task-state observer finds its queue (its ReceiveMessage
                                        # loop may not start before a --run-once worker exits)
    ("ecs", "DescribeTaskDefinition"),  # match_latest_revision_in_family: the family's latest revision
    ("ecs", "RegisterTaskDefinition"),  # none yet: registers one per deployment
    ("ec2", "DescribeVpcs"),            # vpc_id + network_configuration: checks the subnets are in the VPC
    ("ec2", "DescribeSubnets"),
    ("ecs", "RunTask"),
}


def role(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


def expected_runs() -> dict[str, dict[str, Any]]:
    """Per deployment "<flow>/<name>": pool, deployment type, task role, cpu, memory."""
    specs = parse_manifest(load_manifest(DEFAULT_MANIFEST))
    flows = load_flows(specs)
    out: dict[str, dict[str, Any]] = {}
    for t in TYPES:
        base = dict(type=t, pool=f"{P}-{t}", task_role=role(f"{P}-{t}-flow-task"), cpu=CFG.flows.cpu,
                    memory=CFG.flows.memory, image=IMAGE)
        for spec in specs:
            if spec.applies_to(t):
                out[f"{flows[spec.name].name}/{spec.name}-{t}"] = {
                    **base, "cpu": spec.cpu or CFG.flows.cpu, "memory": spec.memory or CFG.flows.memory}
        out[f"hello/{DEFAULTS_DEPLOYMENT}-{P}-{t}"] = base
    task_roles = {"drift-check": "infra-read", "infra-update": "infra-write", "infra-prune": "infra-prune"}
    assert sorted(task_roles) == sorted(spec.flow_name for spec in MANAGEMENT)
    for spec in MANAGEMENT:
        out[deployment_name(spec, P, ENV_NAME)] = dict(
            type=MGMT_TYPE, pool=f"{P}-{MGMT_TYPE}", task_role=role(f"{P}-{task_roles[spec.flow_name]}"),
            cpu=CFG.flows.cpu, memory=CFG.flows.memory, image=IMAGE, management=True)
    return out


EXPECTED = expected_runs()
MANAGEMENT_ROLES = (f"{P}-infra-read", f"{P}-infra-write", f"{P}-infra-prune")


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("environment", [])}


def fargate(request: dict[str, Any]) -> bool:
    """Launch type FARGATE, or only Fargate capacity providers."""
    if request.get("launchType"):
        return request["launchType"] == "FARGATE"
    providers = {s["capacityProvider"] for s in request.get("capacityProviderStrategy") or []}
    return bool(providers) and providers <= {"FARGATE", "FARGATE_SPOT"}


def check(problems: list[str], label: str, actual: Any, expected: Any) -> None:
    if actual != expected:
        problems.append(f"{label}: {actual!r} != expected {expected!r}")


def report(problems: list[str]) -> str:
    return f"{len(problems)} problem(s):\n  " + "\n  ".join(problems)


def test_one_flow_run_per_deployment_of_every_ecs_pool(worker_run: WorkerRun) -> None:
    assert sorted(worker_run.pools) == sorted(f"{P}-{t}" for t in TYPES)
    assert {r.deployment: r.pool for r in worker_run.runs} == {k: v["pool"] for k, v in EXPECTED.items()}
    # The management deployments run in the management type's ECS pool (not the sandbox's
    # process pool) with their own image and task role; the pool-default one sets nothing.
    for name, exp in EXPECTED.items():
        run = worker_run.run(name)
        if exp.get("management"):
            assert run.job_variables == {"env": {"INFRA_ENV": ENV_NAME, "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false"},
                                         "image": IMAGE,
                                         "task_role_arn": exp["task_role"]}, name
        elif DEFAULTS_DEPLOYMENT in name:
            assert run.job_variables == {}, name
        else:
            assert run.job_variables == {"image": IMAGE, "cpu": exp["cpu"], "memory": exp["memory"]}, name


def test_workers_ran_as_the_agents(worker_run: WorkerRun) -> None:
    for t in TYPES:
        pool = worker_run.pools[f"{P}-{t}"]
        assert pool.worker_returncode == 0, pool.worker_log[-4000:]
        assert pool.worker_command[-10:] == ["prefect", "worker", "start", "--pool", pool.name, "--type", "ecs",
                                             "--run-once", "--install-policy", "never"]
        assert pool.agent_role_arn == role(f"{P}-{t}-agent-task")
        assert "Failed to submit" not in pool.worker_log and "Traceback" not in pool.worker_log, pool.worker_log


def test_every_flow_run_was_submitted_to_an_ecs_task(worker_run: WorkerRun) -> None:
    """Prefect records the submission: the run is Pending/"Submitting" (nothing runs the
    container, so it goes no further) with infrastructure_pid "<cluster ARN>::<task ARN>"
    of the task the emulator holds, and the worker's log lines on the run say so."""
    problems: list[str] = []
    for name in EXPECTED:
        run = worker_run.run(name)
        cluster = worker_run.pools[run.pool].cluster_arn
        if run.task is None:
            problems.append(f"{name}: no ECS task in cluster {cluster} carries flow run {run.flow_run_id}")
            continue
        task_arn = run.task["taskArn"]
        check(problems, f"{name}: state", (run.state_type, run.state_name), ("PENDING", "Submitting"))
        check(problems, f"{name}: infrastructure_pid", run.infrastructure_pid, f"{cluster}::{task_arn}")
        for line in (f"Created ECS task {task_arn!r}", "submitted to infrastructure"):
            if not any(line in m for m in run.logs):
                problems.append(f"{name}: flow run log lacks {line!r}: {run.logs}")
    assert not problems, report(problems)


def _check_task_definition(problems: list[str], label: str, td: dict[str, Any], run: Any, exp: dict[str, Any],
                           worker_run: WorkerRun) -> None:
    t = exp["type"]
    check(problems, f"{label} requiresCompatibilities", td.get("requiresCompatibilities"), ["FARGATE"])
    check(problems, f"{label} networkMode", td.get("networkMode"), "awsvpc")
    check(problems, f"{label} executionRoleArn", td.get("executionRoleArn"), role(f"{P}-{t}-flow-exec"))
    check(problems, f"{label} taskRoleArn (none: the run request sets it)", td.get("taskRoleArn"), None)
    check(problems, f"{label} cpu/memory", (str(td.get("cpu")), str(td.get("memory"))),
          (str(exp["cpu"]), str(exp["memory"])))
    containers = td.get("containerDefinitions", [])
    check(problems, f"{label} containers", [c.get("name") for c in containers], ["prefect"])
    if not containers:
        return
    c = containers[0]
    check(problems, f"{label} image", c.get("image"), exp["image"])
    check(problems, f"{label} secrets", c.get("secrets"),
          [{"name": "PREFECT_API_KEY", "valueFrom": f"{worker_run.secret_arn}:PREFECT_API_KEY::"}])
    if "PREFECT_API_KEY" in env_of(c):
        problems.append(f"{label}: PREFECT_API_KEY in the container's plain environment")
    log = c.get("logConfiguration", {})
    check(problems, f"{label} log driver", log.get("logDriver"), "awslogs")
    options = log.get("options", {})
    check(problems, f"{label} log options",
          {k: options.get(k) for k in ("awslogs-group", "awslogs-region", "awslogs-stream-prefix")},
          {"awslogs-group": f"/ecs/{P}-{t}/flows", "awslogs-region": REGION, "awslogs-stream-prefix": "flow"})


def test_task_definitions_point_at_provisioned_resources(worker_run: WorkerRun) -> None:
    """What the worker registered (the captured RegisterTaskDefinition request) and what
    the emulator stored: Fargate/awsvpc, the type's flow execution role, awslogs into the
    type's flow log group, the image (in ECR), the API key from the Prefect secret."""
    registered = {c["params"]["family"]: c["params"] for c in worker_run.calls
                  if c["operation"] == "RegisterTaskDefinition"}
    problems: list[str] = []
    for name, exp in EXPECTED.items():
        run = worker_run.run(name)
        if run.task_definition is None:
            problems.append(f"{name}: no task definition (no task launched)")
            continue
        td = run.task_definition
        _check_task_definition(problems, f"{name}: stored", td, run, exp, worker_run)
        if td["family"] not in registered:
            problems.append(f"{name}: no captured RegisterTaskDefinition of family {td['family']}")
        else:
            _check_task_definition(problems, f"{name}: RegisterTaskDefinition", registered[td["family"]], run, exp,
                                   worker_run)
    # The roles, the log groups and the image exist.
    for t in TYPES:
        for r in (f"{P}-{t}-flow-exec", f"{P}-{t}-flow-task"):
            check(problems, f"role {r}", worker_run.roles.get(r), role(r))
        if f"/ecs/{P}-{t}/flows" not in worker_run.log_groups:
            problems.append(f"log group /ecs/{P}-{t}/flows does not exist: {worker_run.log_groups}")
    for r in MANAGEMENT_ROLES:
        check(problems, f"role {r}", worker_run.roles.get(r), role(r))
    check(problems, "image in ECR (describe_images)", worker_run.ecr_images.get(IMAGE), [worker_run.image_digest])
    assert worker_run.secret_arn.startswith(f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{P}/prefect-credentials-")
    assert not problems, report(problems)


def test_run_task_requests_use_the_pools_cluster_network_and_roles(worker_run: WorkerRun) -> None:
    """The captured RunTask request and the task the emulator launched: the pool's
    cluster, Fargate, exactly the environment's subnets with the type's flow security
    group and no public IP, the deployment's task role, cpu/memory as configured."""
    problems: list[str] = []
    for name, exp in EXPECTED.items():
        run = worker_run.run(name)
        pool = worker_run.pools[run.pool]
        req, task = run.run_task, run.task
        if req is None or task is None:
            problems.append(f"{name}: RunTask captured: {req is not None}; task in the emulator: {task is not None}")
            continue
        for label, obj in (("RunTask", req), ("task", task)):
            check(problems, f"{name}: {label} cluster", obj.get("cluster", obj.get("clusterArn")), pool.cluster_arn)
            if not fargate(obj):
                problems.append(f"{name}: {label} is not Fargate: launchType {obj.get('launchType')!r}, "
                                f"capacityProviderStrategy {obj.get('capacityProviderStrategy')!r}")
            check(problems, f"{name}: {label} task role", obj.get("overrides", {}).get("taskRoleArn"), exp["task_role"])
            check(problems, f"{name}: {label} cpu/memory",
                  (obj.get("overrides", {}).get("cpu"), obj.get("overrides", {}).get("memory")),
                  (str(exp["cpu"]), str(exp["memory"])))
        check(problems, f"{name}: RunTask task definition", req.get("taskDefinition"), task["taskDefinitionArn"])
        vpc = req.get("networkConfiguration", {}).get("awsvpcConfiguration", {})
        check(problems, f"{name}: subnets", sorted(vpc.get("subnets", [])), pool.subnets)
        check(problems, f"{name}: security groups", vpc.get("securityGroups"), [pool.flow_security_group_id])
        check(problems, f"{name}: assignPublicIp", vpc.get("assignPublicIp"), "DISABLED")
        eni = run.network_interface or {}
        if eni.get("SubnetId") not in pool.subnets:
            problems.append(f"{name}: the task's network interface is in {eni.get('SubnetId')!r}, not a pool subnet")
        check(problems, f"{name}: the task's network interface groups", [g["GroupId"] for g in eni.get("Groups", [])],
              [pool.flow_security_group_id])
        (override,) = [o for o in req["overrides"]["containerOverrides"] if o.get("name") == "prefect"]
        env = env_of(override)
        check(problems, f"{name}: PREFECT__FLOW_RUN_ID", env.get("PREFECT__FLOW_RUN_ID"), run.flow_run_id)
        check(problems, f"{name}: PREFECT_API_URL", env.get("PREFECT_API_URL"), worker_run.api_url)
        if "PREFECT_API_KEY" in env:
            problems.append(f"{name}: PREFECT_API_KEY in the run request's plain environment")
        # The pool's result storage reaches every run, also those with their own `env`
        # (Prefect 3.9 merges a deployment's env with the pool's default env).
        check(problems, f"{name}: result storage", env.get("PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"),
              f"s3-bucket/{P}-{exp['type']}-flows")
        # Flow runs persist results; management runs (whose roles may not write the bucket) do not.
        check(problems, f"{name}: result persistence", env.get("PREFECT_RESULTS_PERSIST_BY_DEFAULT"),
              "false" if exp.get("management") else "true")
        if exp.get("management"):
            check(problems, f"{name}: INFRA_ENV", env.get("INFRA_ENV"), ENV_NAME)
    for pool in worker_run.pools.values():
        check(problems, f"{pool.name}: pool default subnets", sorted(pool.pool_defaults["network_configuration"]["subnets"]),
              pool.subnets)
    assert not problems, report(problems)


def test_worker_aws_calls(worker_run: WorkerRun, worker_calls: list[dict[str, Any]]) -> None:
    """Every AWS call each worker made, as its agent task role, in its own cluster; the
    roles it passes (iam:PassRole) are exactly its type's flow roles, plus the
    management roles on the management type's pool."""
    assert worker_calls == worker_run.calls
    assert worker_calls == [c for p in worker_run.pools.values() for c in captured_calls(p.capture_file)]
    for t in TYPES:
        pool = worker_run.pools[f"{P}-{t}"]
        calls = captured_calls(pool.capture_file)
        runs = [r for r in worker_run.runs if r.pool == pool.name]
        assert {(c["service"], c["operation"]) for c in calls} - {("sqs", "ReceiveMessage")} == WORKER_OPERATIONS, \
            pool.name
        assert {c["principal"] for c in calls} == {pool.agent_role_arn}
        assert {c["region"] for c in calls} == {REGION}
        run_tasks = [c["params"] for c in calls if c["operation"] == "RunTask"]
        assert len(run_tasks) == len(runs)
        assert {r["cluster"] for r in run_tasks} == {pool.cluster_arn}
        assert [c["params"] for c in calls if c["operation"] == "GetQueueUrl"] == [{"QueueName": pool.queue}]
        passed = {c["params"]["executionRoleArn"] for c in calls if c["operation"] == "RegisterTaskDefinition"}
        passed |= {r["overrides"]["taskRoleArn"] for r in run_tasks}
        want = {role(f"{P}-{t}-flow-exec"), role(f"{P}-{t}-flow-task")}
        if t == MGMT_TYPE:
            want |= {role(r) for r in MANAGEMENT_ROLES}
        assert passed == want, pool.name


# --- IAM: the agent and execution roles, evaluated as AWS would --------------------------------

def _documents(worker_run: Any, role: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    docs = worker_run.iam[role]
    as_dict = [json.loads(d) if isinstance(d, str) else d for d in (*docs["inline"].values(), *docs["attached"].values())]
    boundary = docs["boundary_document"]
    return as_dict, (json.loads(boundary) if isinstance(boundary, str) else boundary)


def test_agent_role_allows_every_call_of_the_real_worker(worker_run: Any) -> None:
    from .iam_requests import AccountCtx

    ctx = AccountCtx(worker_run.account, worker_run.region)
    for pool in worker_run.pools.values():
        role = pool.agent_role_arn.rsplit("/", 1)[1]
        calls = [Call(role, c["service"], c["operation"], c["params"]) for c in captured_calls(pool.capture_file)]
        # The observer's polling loop (prefect_aws/observers/ecs.py), which a --run-once worker
        # may leave before its first poll: receive, then delete or extend each message.
        url = next(c.params["QueueUrl"] for c in calls if c.operation == "ReceiveMessage") if any(
            c.operation == "ReceiveMessage" for c in calls) else \
            f"https://sqs.{worker_run.region}.amazonaws.com/{worker_run.account}/{pool.queue}"
        calls += [Call(role, "sqs", op, {"QueueUrl": url, **extra}) for op, extra in (
            ("ReceiveMessage", {"MaxNumberOfMessages": 1, "WaitTimeSeconds": 20}),
            ("DeleteMessage", {"ReceiptHandle": "r"}),
            ("ChangeMessageVisibility", {"ReceiptHandle": "r", "VisibilityTimeout": 30}))]
        reqs = [r for c in calls for r in requests_for(c, ctx)]
        assert {r.action for r in reqs} >= {"ecs:RegisterTaskDefinition", "ecs:RunTask", "iam:PassRole",
                                            "sqs:GetQueueUrl", "sqs:ReceiveMessage"}, pool.name
        policies, boundary = _documents(worker_run, role)
        denied = explain_denials(policies, reqs, boundary=boundary)
        assert denied == [], f"{role} would be denied on AWS:\n" + "\n".join(denied)


def test_execution_roles_allow_ecs_to_start_every_launched_task(worker_run: Any) -> None:
    """What ECS does with a task's execution role (image pull, awslogs-create-group, the
    secret) for every task definition the worker registered: flows and management runs."""
    from .iam_requests import AccountCtx, task_start_calls

    ctx = AccountCtx(worker_run.account, worker_run.region)
    assert len(worker_run.runs) == 7
    for run in worker_run.runs:
        td = run.task_definition
        role = td["executionRoleArn"].rsplit("/", 1)[1]
        reqs = [r for c in task_start_calls(role, td) for r in requests_for(c, ctx)]
        assert {r.action for r in reqs} >= {"ecr:BatchGetImage", "logs:CreateLogGroup", "logs:PutLogEvents",
                                            "secretsmanager:GetSecretValue"}, run.deployment
        policies, boundary = _documents(worker_run, role)
        denied = explain_denials(policies, reqs, boundary=boundary)
        assert denied == [], f"{role} could not start {run.deployment}:\n" + "\n".join(denied)
