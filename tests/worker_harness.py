"""The real prefect-aws ECS worker against the emulator: what it sends to AWS per flow run.

`run_scenario(workdir)` builds the production environment as on AWS and launches one
flow run of every deployment of every ECS work pool with the real, unpatched
`prefect worker start --type ecs --run-once`, then returns what happened as plain data
(`WorkerRun`). Both servers it starts are stopped before it returns:

1. its own emulator (`emulator.moto_server`, 127.0.0.1, free port) and its own
   `prefect server start` (own PREFECT_HOME, scheduler and UI off, from the run's
   migrated database);
2. `python -m flows.bootstrap --env production --endpoint-url <moto> --yes --no-wait`
   (in-process), as an admin role of account 222222222222: first AWS only (the agent is
   deferred until its image is in ECR), then the image is pushed (`ecr.put_image`), then
   the full bootstrap with the Prefect side (work pools, blocks, management deployments);
3. `python -m deployments.flows --branch staging-v2|main-v2 --image-tag <agent tag>`
   (in-process), and one deployment per pool with nothing but the pool's defaults;
4. a flow run per deployment, then one worker per pool, started the way the agent's
   ECS task definition starts it (its command, environment and secrets, with
   `--run-once` instead of `--with-healthcheck`) and with the credentials of the agent
   task role (sts:AssumeRole on the emulator);
5. every AWS call of each worker process is captured by tests/capture_site (see its
   sitecustomize) for later IAM evaluation.

Accounts in moto come from the access key: keys returned by `sts:AssumeRole` of a role
of account 222222222222 act in that account, so no process needs the emulator's
`x-moto-account-id` header (and INFRA_SANDBOX_ACCOUNT, which would also switch the
bootstrap to the sandbox flavour, is never set).

moto's backends are global to the process: this server shares state with conftest's
`moto_url`; the scenario resets the emulator when it starts and when it ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator


from deployments.flows import BRANCH_TYPES
from infra_tasks import emulator
from infra_tasks.config import InfraConfig, load_config
from infra_tasks.names import Account, Deployment

ROOT = Path(__file__).resolve().parent.parent
CAPTURE_SITE = Path(__file__).resolve().parent / "capture_site"
ENV_NAME = "production"
ACCOUNT = "222222222222"
REGION = "us-east-1"
# Stored in the Prefect credentials secret by the bootstrap, as a real API key would be;
# the local Prefect server ignores it. The agent gets it from that secret, and the worker
# needs one: with `prefect_api_key_secret_arn` set (a pool default), prefect-aws 0.7.12
# deletes PREFECT_API_KEY from each flow run's environment, a KeyError when it has none.
FAKE_API_KEY = "pnu_worker_harness_not_a_real_key_0000000"
# Name prefix of the deployments that set no job variable: they run on the pool's defaults.
DEFAULTS_DEPLOYMENT = "pool-defaults"
WORKER_TIMEOUT = 150


# --- captured calls --------------------------------------------------------------------------

def captured_calls(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The JSON lines tests/capture_site/sitecustomize.py wrote: one dict per AWS call,
    {"principal", "service", "operation", "region", "params"}, in call order."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- the emulator ----------------------------------------------------------------------------

@contextlib.contextmanager
def fargate_task_memory_patch() -> Iterator[None]:
    """Let moto's RunTask accept Fargate task definitions sized at task level only.

    moto 5.2 sums container-level `memory`/`memoryReservation` to size a task and does
    `int += None` when a container has neither (HTTP 500, TypeError). AWS allows that for
    Fargate — task-level cpu/memory are what Fargate requires — and it is exactly what
    prefect-aws registers. This patches the EMULATOR only (moto runs in this process, served
    by `emulator.moto_server`): a container without a size counts as 0, and the task-level
    size, when given, is the task's requirement. The requirement is only used to place
    EC2 tasks; nothing the worker sends or receives is changed. Neither the product nor
    prefect-aws is patched."""
    from moto.ecs.models import EC2ContainerServiceBackend

    original = EC2ContainerServiceBackend.__dict__["_calculate_task_resource_requirements"]
    calculate = original.__func__ if isinstance(original, staticmethod) else original

    def tolerant(task_definition: Any) -> dict[str, Any]:
        sized = [c if any(k in c for k in ("memory", "memoryReservation", "Memory", "MemoryReservation"))
                 else {**c, "memory": 0} for c in task_definition.container_definitions]
        req = calculate(_Sized(sized))
        for key, attr in (("CPU", "cpu"), ("MEMORY", "memory")):
            task_level = getattr(task_definition, attr, None)
            if task_level:
                req[key] = int(task_level)
        return req

    EC2ContainerServiceBackend._calculate_task_resource_requirements = staticmethod(tolerant)  # type: ignore[method-assign]
    try:
        yield
    finally:
        EC2ContainerServiceBackend._calculate_task_resource_requirements = original  # type: ignore[method-assign]


@dataclasses.dataclass
class _Sized:
    container_definitions: list[dict[str, Any]]


@contextlib.contextmanager
def moto_endpoint() -> Iterator[str]:
    """Own moto server (MOTO_IAM_LOAD_MANAGED_POLICIES set before it starts), emptied
    on entry and on exit (its state is global to this process)."""
    with emulator.moto_server(managed_policies=True) as url:
        emulator.reset(url)
        try:
            yield url
        finally:
            emulator.reset(url)


def moto_client(url: str, service: str, *, account: str | None = None,
                creds: dict[str, str] | None = None) -> Any:
    """A raw boto3 client on the emulator: as `account` (moto's header) or with `creds`."""
    import boto3

    keys = creds or {"AWS_ACCESS_KEY_ID": "harness", "AWS_SECRET_ACCESS_KEY": "harness"}
    session = boto3.Session(aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
                            aws_session_token=keys.get("AWS_SESSION_TOKEN"), region_name=REGION)
    c = session.client(service, endpoint_url=url)
    if account:
        def header(request: Any = None, **_: Any) -> None:
            request.headers["x-moto-account-id"] = account
        c.meta.events.register("before-sign", header)
    return c


def assume_role(url: str, role_arn: str, session_name: str) -> dict[str, str]:
    """Credentials of `role_arn` on the emulator; requests signed with them act in the
    role's account without any header."""
    account = role_arn.split(":")[4]
    creds = moto_client(url, "sts", account=account).assume_role(
        RoleArn=role_arn, RoleSessionName=session_name)["Credentials"]
    return {"AWS_ACCESS_KEY_ID": creds["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
            "AWS_SESSION_TOKEN": creds["SessionToken"]}


def admin_credentials(url: str, account: str) -> tuple[str, dict[str, str]]:
    """An administrator role of `account` (the emulator does not evaluate IAM) and its keys."""
    iam = moto_client(url, "iam", account=account)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                      "Principal": {"AWS": f"arn:aws:iam::{account}:root"}}]}
    arn = iam.create_role(RoleName="worker-harness-admin", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.attach_role_policy(RoleName="worker-harness-admin", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")
    return arn, assume_role(url, arn, "bootstrap")


def push_image(url: str, creds: dict[str, str], repository: str, tag: str) -> str:
    """Put an image manifest into ECR (what `docker push` leaves there); returns its digest."""
    config = hashlib.sha256(f"{repository}:{tag}:config".encode()).hexdigest()
    layer = hashlib.sha256(f"{repository}:{tag}:layer".encode()).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1469,
                   "digest": f"sha256:{config}"},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 3370628,
                    "digest": f"sha256:{layer}"}]})
    image = moto_client(url, "ecr", creds=creds).put_image(
        repositoryName=repository, imageManifest=manifest, imageTag=tag)["image"]
    return image["imageId"]["imageDigest"]


# --- the Prefect server ----------------------------------------------------------------------

@contextlib.contextmanager
def prefect_server(home: Path, log: Path, shared: Path | None = None) -> Iterator[str]:
    """`prefect server start` on 127.0.0.1 (free port), own PREFECT_HOME; stopped on exit.
    The scheduler is off (no scheduled run of a cron deployment can reach a worker) and so
    is the UI (faster start); so are the services that store events and task runs, which
    nothing here reads back: on SQLite their writes meet the bootstrap's and turn them
    into 503s and retries. With `shared`, it starts from the run's migrated database
    (tests/prefect_db.py)."""
    from flows.sandbox import prefect_server as start

    from .prefect_db import seeded

    with contextlib.ExitStack() as stack:
        with (seeded(shared, home / "prefect.db") if shared else contextlib.nullcontext({})) as from_copy:
            url = stack.enter_context(start(emulator.free_port(), home, log, {
                "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
                "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
                "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED": "false",
                "PREFECT_LOGGING_LEVEL": "WARNING", **from_copy}))
        yield url


# --- the result ------------------------------------------------------------------------------

@dataclasses.dataclass
class FlowRunRecord:
    """One flow run the worker launched, and what AWS and Prefect hold for it."""

    deployment: str                  # "<flow>/<deployment>"
    pool: str
    deployment_type: str
    job_variables: dict[str, Any]
    flow_run_id: str
    state_type: str
    state_name: str
    state_message: str | None
    infrastructure_pid: str | None
    logs: list[str]                  # the flow run's log lines in Prefect
    run_task: dict[str, Any] | None  # captured RunTask params (matched by PREFECT__FLOW_RUN_ID)
    task: dict[str, Any] | None      # moto's describe_tasks of the launched task
    task_definition: dict[str, Any] | None  # moto's describe_task_definition of it
    network_interface: dict[str, Any] | None  # moto's describe_network_interfaces of its ENI


@dataclasses.dataclass
class PoolRecord:
    name: str
    deployment_type: str
    cluster_arn: str
    queue: str
    agent_role_arn: str
    flow_exec_role_arn: str
    flow_task_role_arn: str
    flow_security_group_id: str
    subnets: list[str]               # subnets of the VPC the environment uses (default VPC)
    pool_defaults: dict[str, Any]    # the work pool's job-variable defaults, as stored
    worker_command: list[str]
    worker_returncode: int
    worker_log: str
    capture_file: str


@dataclasses.dataclass
class WorkerRun:
    account: str
    region: str
    api_url: str
    moto_url: str
    agent_image: str
    image_digest: str
    secret_arn: str
    roles: dict[str, str]            # role name -> ARN, for every role of the prefix
    iam: dict[str, dict[str, Any]]   # role name -> trust, inline and attached policy documents
    log_groups: list[str]
    ecr_images: dict[str, list[str]]  # "repo:tag" -> digests found (describe_images)
    pools: dict[str, PoolRecord]
    runs: list[FlowRunRecord]
    calls: list[dict[str, Any]]      # every AWS call of every worker, in order per worker
    timings: dict[str, float]

    def run(self, deployment: str) -> FlowRunRecord:
        found = [r for r in self.runs if r.deployment == deployment]
        assert len(found) == 1, (deployment, [r.deployment for r in self.runs])
        return found[0]


# --- the scenario ----------------------------------------------------------------------------

def _bootstrap(*argv: str) -> int:
    from flows.bootstrap import main

    return main(list(argv))


def _deploy_flows(branch: str, tag: str) -> int:
    from deployments.flows import main

    return main(["--branch", branch, "--image-tag", tag])


def _defaults_deployment(client: Any, pool: str) -> None:
    """A deployment that sets no job variable: it runs on the pool's defaults alone."""
    from deployments.flows import IMAGE_WORKDIR

    flow_id = client.create_flow_from_name("hello")
    client.create_deployment(
        flow_id=flow_id, name=f"{DEFAULTS_DEPLOYMENT}-{pool}", work_pool_name=pool,
        entrypoint="flows/example.py:hello", path=IMAGE_WORKDIR,
        pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": IMAGE_WORKDIR}}],
        parameters={}, tags=["worker-harness"])


def _worker_env(url: str, api: str, sm: Any, taskdef: dict[str, Any], creds: dict[str, str], principal: str,
                home: Path, capture: Path) -> dict[str, str]:
    """The agent container's environment, as ECS would give it: the task definition's
    `environment`, its `secrets` resolved from Secrets Manager, the task role's credentials;
    plus the emulator endpoint and the call capture."""
    (container,) = taskdef["containerDefinitions"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_", "INFRA_", "IAM_CAPTURE"))}
    env.update({e["name"]: e["value"] for e in container.get("environment", [])})
    for s in container.get("secrets", []):
        arn, key = s["valueFrom"].rsplit(":", 3)[0], s["valueFrom"].rsplit(":", 3)[1]
        env[s["name"]] = json.loads(sm.get_secret_value(SecretId=arn)["SecretString"])[key]
    env.update(creds)
    env.update({
        # A fresh home (~/.prefect), as the agent's container has, not the user's. It is set
        # through HOME, not PREFECT_HOME: the worker passes the Prefect settings it was given
        # on to every flow run, and those must be exactly the agent's.
        "AWS_ENDPOINT_URL": url, "HOME": str(home),
        "PYTHONPATH": os.pathsep.join([str(CAPTURE_SITE), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "IAM_CAPTURE_FILE": str(capture), "IAM_CAPTURE_PRINCIPAL": principal,
    })
    assert env.get("PREFECT_API_URL") == api, "the agent's secret must hold this Prefect API URL"
    return env


def _worker_command(taskdef: dict[str, Any]) -> list[str]:
    """The agent's own command, run once instead of serving a health check forever."""
    (container,) = taskdef["containerDefinitions"]
    cmd = list(container["command"])
    assert cmd[:2] == ["prefect", "worker"] and "--with-healthcheck" in cmd, cmd
    cmd[cmd.index("--with-healthcheck")] = "--run-once"
    return [sys.executable, "-m", *cmd]


def run_scenario(workdir: Path, config: InfraConfig | None = None, shared: Path | None = None) -> WorkerRun:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    cfg = config or load_config(ROOT / "infra.toml")
    env_cfg = cfg.env(ENV_NAME)
    assert env_cfg.account_id == ACCOUNT
    acct = Account(cfg, ENV_NAME, ACCOUNT, REGION)
    deployments = acct.deployments
    tag = cfg.agent.image_tag
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    def mark(name: str) -> None:
        timings[name] = round(time.monotonic() - t0, 1)

    workdir.mkdir(parents=True, exist_ok=True)
    _drain_prefect_services()  # a lock taken earlier in this process is bound to another server
    with contextlib.ExitStack() as stack:
        stack.enter_context(fargate_task_memory_patch())
        url = stack.enter_context(moto_endpoint())
        # The Prefect server starts while the emulator is prepared.
        api_box: dict[str, Any] = {}

        def start_api() -> None:
            try:
                api_box["url"] = stack.enter_context(prefect_server(workdir / "prefect-home", workdir / "server.log",
                                                                     shared))
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                api_box["error"] = exc
        starter = threading.Thread(target=start_api)
        starter.start()
        try:
            _, admin = admin_credentials(url, ACCOUNT)
        finally:
            starter.join()  # so that a server it started is on the stack, and stopped
        if "error" in api_box:
            raise api_box["error"]
        api = api_box["url"]
        mark("servers up")

        boot = ["--env", ENV_NAME, "--endpoint-url", url, "--yes", "--no-wait"]
        with emulator.scoped_environ({**admin, "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
                             "PREFECT_API_URL": api, "PREFECT_API_KEY": FAKE_API_KEY},
                            remove=("AWS_PROFILE", "AWS_ENDPOINT_URL", "INFRA_SANDBOX_ACCOUNT")), \
                temporary_settings(updates={PREFECT_API_URL: api}):
            assert _bootstrap(*boot, "--no-prefect") == 0, "first bootstrap (AWS only) failed"
            mark("bootstrap 1")
            digest = push_image(url, admin, acct.ecr_repository, tag)
            assert _bootstrap(*boot) == 0, "second bootstrap (agent and Prefect side) failed"
            mark("bootstrap 2")
            for d in deployments:
                # What CI runs on the branch that deploys this type (staging-v2, main-v2).
                (branch,) = [b for b in env_cfg.ci_branches if BRANCH_TYPES.get(b) == d.t]
                assert _deploy_flows(branch, tag) == 0, f"deployments.flows --branch {branch} failed"
            # The bootstrap's lock made process-wide Prefect services whose client is bound to
            # this server; stop them while it is up, so later users get fresh ones.
            _drain_prefect_services()
            with get_client(sync_client=True) as c:
                for d in deployments:
                    _defaults_deployment(c, d.pool)
                planned = []
                for dep in c.read_deployments():
                    flow = c.read_flow(dep.flow_id)
                    fr = c.create_flow_run_from_deployment(dep.id)
                    planned.append((f"{flow.name}/{dep.name}", dep, str(fr.id)))
            mark("deployments and flow runs")

        # One worker per pool, as the agent of that deployment type, in parallel.
        ecs = moto_client(url, "ecs", creds=admin)
        sm = moto_client(url, "secretsmanager", creds=admin)
        workers: dict[str, tuple[subprocess.Popen[bytes], Path, Path, list[str]]] = {}
        (workdir / "worker-home").mkdir(exist_ok=True)
        for d in deployments:
            taskdef = ecs.describe_task_definition(taskDefinition=d.task_family)["taskDefinition"]
            assert taskdef["taskRoleArn"] == acct.role_arn(d.agent_task_role), taskdef["taskRoleArn"]
            creds = assume_role(url, taskdef["taskRoleArn"], f"{d.pool}-worker")
            capture, log = workdir / f"calls-{d.pool}.jsonl", workdir / f"worker-{d.pool}.log"
            capture.unlink(missing_ok=True)
            env = _worker_env(url, api, sm, taskdef, creds, taskdef["taskRoleArn"], workdir / "worker-home", capture)
            cmd = _worker_command(taskdef)
            with open(log, "wb") as out:
                proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            stack.callback(_stop, proc)
            workers[d.pool] = (proc, capture, log, cmd)
        for pool, (proc, _, log, _) in workers.items():
            try:
                proc.wait(WORKER_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"worker of {pool} still running after {WORKER_TIMEOUT}s:\n"
                                     + log.read_text(errors="replace")[-4000:]) from None
        mark("workers done")

        result = _snapshot(url, api, admin, acct, deployments, planned, workers, digest)
        result.timings = timings
        mark("snapshot")
        return result


def _drain_prefect_services() -> None:
    from prefect.concurrency.services import ConcurrencySlotAcquisitionWithLeaseService

    ConcurrencySlotAcquisitionWithLeaseService.drain_all(timeout=30, at_exit=False)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    from flows.sandbox import stop

    stop(proc)


def _snapshot(url: str, api: str, admin: dict[str, str], acct: Account, deployments: list[Deployment],
              planned: list[tuple[str, Any, str]], workers: dict[str, Any], digest: str) -> WorkerRun:
    """Everything the assertions need, read from the emulator and the Prefect API while
    both are up."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    def c(service: str) -> Any:
        return moto_client(url, service, creds=admin)

    ecs, ec2, iam = c("ecs"), c("ec2"), c("iam")
    calls: list[dict[str, Any]] = []
    for _, capture, _, _ in workers.values():
        calls += captured_calls(capture)

    # Every task of every cluster, keyed by the flow run id its container override carries.
    tasks: dict[str, dict[str, Any]] = {}
    for d in deployments:
        arns = ecs.list_tasks(cluster=d.cluster).get("taskArns", [])
        for t in ecs.describe_tasks(cluster=d.cluster, tasks=arns)["tasks"] if arns else []:
            for o in t.get("overrides", {}).get("containerOverrides", []):
                for e in o.get("environment", []):
                    if e["name"] == "PREFECT__FLOW_RUN_ID":
                        tasks[e["value"]] = t
    run_tasks: dict[str, dict[str, Any]] = {}
    for call in calls:
        if call["operation"] == "RunTask":
            for o in call["params"].get("overrides", {}).get("containerOverrides", []):
                for e in o.get("environment", []):
                    if e["name"] == "PREFECT__FLOW_RUN_ID":
                        run_tasks[e["value"]] = call["params"]

    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = sorted(s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"])
    roles = {r["RoleName"]: r["Arn"] for page in iam.get_paginator("list_roles").paginate() for r in page["Roles"]
             if r["RoleName"].startswith(acct.prefix)}
    iam_docs = {name: _role_documents(iam, name) for name in roles}
    secret_arn = c("secretsmanager").describe_secret(SecretId=acct.secret_name)["ARN"]
    log_groups = [g["logGroupName"] for g in c("logs").describe_log_groups()["logGroups"]]
    ecr = c("ecr")
    images: dict[str, list[str]] = {}
    for repo in ecr.describe_repositories()["repositories"]:
        for img in ecr.describe_images(repositoryName=repo["repositoryName"])["imageDetails"]:
            for t in img.get("imageTags", []):
                images.setdefault(f"{repo['repositoryUri']}:{t}", []).append(img["imageDigest"])

    pools: dict[str, PoolRecord] = {}
    runs: list[FlowRunRecord] = []
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as pc:
        for d in deployments:
            proc, capture, log, cmd = workers[d.pool]
            sg = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [d.flow_sg]}])
            variables = pc.read_work_pool(d.pool).base_job_template["variables"]["properties"]
            pools[d.pool] = PoolRecord(
                name=d.pool, deployment_type=d.t, cluster_arn=d.cluster_arn, queue=d.queue,
                agent_role_arn=acct.role_arn(d.agent_task_role), flow_exec_role_arn=roles.get(d.flow_exec_role, ""),
                flow_task_role_arn=roles.get(d.flow_task_role, ""),
                flow_security_group_id=sg["SecurityGroups"][0]["GroupId"] if sg["SecurityGroups"] else "",
                subnets=subnets, pool_defaults={k: v.get("default") for k, v in variables.items() if "default" in v},
                worker_command=cmd, worker_returncode=proc.returncode,
                worker_log=log.read_text(errors="replace"), capture_file=str(capture))
        for name, dep, fr_id in planned:
            fr = pc.read_flow_run(fr_id)
            logs = pc.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[fr.id])))
            d = next(x for x in deployments if x.pool == dep.work_pool_name)
            task = tasks.get(fr_id)
            taskdef = (ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
                       if task else None)
            eni_ids = [x["value"] for a in (task or {}).get("attachments", []) for x in a.get("details", [])
                       if x["name"] == "networkInterfaceId"]
            eni = (ec2.describe_network_interfaces(NetworkInterfaceIds=eni_ids[:1])["NetworkInterfaces"][0]
                   if eni_ids else None)
            runs.append(FlowRunRecord(
                deployment=name, pool=dep.work_pool_name, deployment_type=d.t, job_variables=dict(dep.job_variables or {}),
                flow_run_id=fr_id, state_type=fr.state.type.value if fr.state else "",
                state_name=fr.state.name if fr.state else "", state_message=fr.state.message if fr.state else None,
                infrastructure_pid=fr.infrastructure_pid, logs=[entry.message for entry in logs],
                run_task=run_tasks.get(fr_id), task=task, task_definition=taskdef, network_interface=eni))
    return WorkerRun(account=acct.account_id, region=acct.region, api_url=api, moto_url=url,
                     agent_image=acct.agent_image, image_digest=digest, secret_arn=secret_arn, roles=roles,
                     iam=iam_docs, log_groups=log_groups, ecr_images=images, pools=pools,
                     runs=sorted(runs, key=lambda r: r.deployment), calls=calls, timings={})


def _role_documents(iam: Any, name: str) -> dict[str, Any]:
    role = iam.get_role(RoleName=name)["Role"]
    inline = {p: iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"]
              for p in iam.list_role_policies(RoleName=name)["PolicyNames"]}
    attached = {}
    for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
        version = iam.get_policy(PolicyArn=p["PolicyArn"])["Policy"]["DefaultVersionId"]
        attached[p["PolicyArn"]] = iam.get_policy_version(PolicyArn=p["PolicyArn"],
                                                          VersionId=version)["PolicyVersion"]["Document"]
    boundary = role.get("PermissionsBoundary", {}).get("PermissionsBoundaryArn")
    boundary_document = None
    if boundary:
        version = iam.get_policy(PolicyArn=boundary)["Policy"]["DefaultVersionId"]
        boundary_document = iam.get_policy_version(PolicyArn=boundary, VersionId=version)["PolicyVersion"]["Document"]
    return {"arn": role["Arn"], "trust": role["AssumeRolePolicyDocument"], "inline": inline,
            "attached": attached, "boundary": boundary, "boundary_document": boundary_document}
