"""`infra-prune` (flows/prune.py): the UI's prune, after approval, of what is no longer
configured — on a production stack bootstrapped with both deployment types, then read
with an infra.toml that keeps only `main` (so the staging type is UNMANAGED).

A dry run, a rejection, a wrong or missing typed name (production is protected) and a
plan that changed while waiting delete nothing (zero mutating AWS calls) and share one
stack; an approval deletes exactly staging's non-data resources and keeps its data, and a
re-run then finds nothing to prune, on a fresh one.
"""

from __future__ import annotations

from typing import Any

import pytest

from infra_tasks import aws

from .conftest import PROD_ACCOUNT, REGION, ROOT, P
from .crash import aws_inventory
from .prefect_runs import client, resume, run_drift, run_in_thread, run_logs, start_from_deployment, wait_paused

DEPLOYMENT = f"infra-prune/{P}-production-infra-prune"
ARTIFACT = "infra-prune-production-plan"
STAGING = f"{P}-staging"
DELETED = sorted([
    *(f"iam.role/{STAGING}-{r}" for r in ("agent-exec", "agent-task", "flow-exec", "flow-task")),
    f"sqs.queue/{STAGING}-ecs-events", f"sqs.queue/{STAGING}-ecs-events-dlq",
    f"ec2.security_group/{STAGING}-agent", f"ec2.security_group/{STAGING}-flows",
    f"ecs.cluster/{STAGING}", f"ecs.service/{STAGING}-agent", f"ecs.task_definition/{STAGING}-agent",
    f"events.rule/{STAGING}-ecs-task-state",
])
KEPT = sorted([f"s3.bucket/{STAGING}-flows-{PROD_ACCOUNT}", f"logs.group//ecs/{STAGING}/agent",
               f"logs.group//ecs/{STAGING}/flows"])
DATA_ROUTE = "python -m flows.drift_check --env production --prune --delete-data"


@pytest.fixture
def only_main(tmp_path: Any) -> str:
    """infra.toml with production's staging type removed."""
    text = (ROOT / "infra.toml").read_text()
    both = 'deployment_types = ["staging", "main"]'
    assert text.count(both) == 1
    path = tmp_path / "infra.toml"
    path.write_text(text.replace(both, 'deployment_types = ["main"]'))
    return str(path)


@pytest.fixture
def shared(warm_prefect_stack):
    """The shared production stack with its Prefect side, for runs that delete nothing."""
    return warm_prefect_stack


def prune(config_path: str, **request: Any) -> Any:
    from flows.prune import PruneRequest, infra_prune

    return infra_prune(request=PruneRequest(environment="production", **request), config_path=config_path,
                       approval_timeout=120, return_state=True)


def paused_prune(config_path: str) -> tuple[Any, dict, Any]:
    from flows.prune import PruneRequest, infra_prune

    th, box = run_in_thread(infra_prune, request=PruneRequest(environment="production"), config_path=config_path,
                            approval_timeout=120)
    return th, box, wait_paused(flow_name="infra-prune")


def artifact(key: str) -> str:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with client() as c:
        (latest,) = c.read_latest_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return latest.data


def no_traceback(run_id: Any) -> None:
    logs = run_logs(run_id)
    assert logs, "the run logged nothing"
    assert not [entry.message for entry in logs if "Traceback" in entry.message or entry.level >= 40]


def staging_left(boto: Any) -> dict[str, Any]:
    inv = aws_inventory(boto)
    return {k: ([x for x in v if STAGING in str(x)] if isinstance(v, (list, dict)) else v) for k, v in inv.items()}


# --- pure: the deployment bootstrap registers ------------------------------------------------

def test_deployment_runs_on_the_agent_pool_with_the_prune_role(cfg) -> None:
    from infra_tasks.desired_prefect import prefect_resources
    from infra_tasks.ec2 import NetworkFacts
    from infra_tasks.facts import Facts

    facts = Facts(PROD_ACCOUNT, REGION, NetworkFacts("vpc-1", ("subnet-1",), ()))
    res = {r.key: r for r in prefect_resources(cfg, "production", facts)}
    dep = res[f"prefect.deployment/{DEPLOYMENT}"]
    assert dep.props["work_pool_name"] == f"{P}-main"
    assert dep.props["entrypoint"] == "flows/prune.py:infra_prune"
    assert dep.props["job_variables"]["task_role_arn"] == f"arn:aws:iam::{PROD_ACCOUNT}:role/{P}-infra-prune"
    assert dep.props["parameters"] == {"request": {"environment": "production"}}
    assert dep.props["schedules"] == []
    assert f"iam.role/{P}-infra-prune" in dep.deps
    fields = dep.props["parameter_openapi_schema"]["definitions"]["PruneRequest"]["properties"]
    assert sorted(fields) == ["dry_run", "environment"] and fields["dry_run"]["default"] is False


# --- pure: what the infra-prune role may delete, as the run checks it before asking ----------------

def _change(kind: str, name: str, action: str = "delete", **ident: str) -> Any:
    from infra_tasks.model import Action, Change, Resource

    return Change(Resource(kind, name, {}, ident=ident), Action(action), "")


BEYOND = [
    # kind, name, action, ident, refused with
    ("iam.role", f"{STAGING}-agent-task", "delete", {}, None),
    ("iam.role", f"{P}-dev-flow-exec", "delete", {}, None),  # any type the configuration may name
    ("ecs.service", f"{STAGING}-agent", "delete", {"cluster": STAGING}, None),
    ("ec2.security_group", "anything", "delete", {}, None),  # by its tags alone: AWS assigns the id
    ("ecs.task_definition", f"{STAGING}-agent", "delete", {}, None),
    ("iam.role", f"{P}-ci-deploy", "delete", {}, "not a name a deployment type's iam.role has"),
    ("iam.role", f"{P}-infra-prune", "delete", {}, "not a name a deployment type's iam.role has"),
    ("ecs.service", f"{STAGING}-agent", "delete", {"cluster": "other"}, "not a name a deployment type's ecs"),
    ("sqs.queue", f"{P}-legacy-queue", "delete", {}, "not a name a deployment type's sqs.queue has"),
    ("s3.bucket", f"{STAGING}-flows-{PROD_ACCOUNT}", "delete", {}, "infra-prune does not delete a s3.bucket"),
    ("logs.group", f"/ecs/{STAGING}/flows", "delete", {}, "infra-prune does not delete a logs.group"),
    ("iam.policy", f"{STAGING}-runtime-boundary", "delete", {}, "infra-prune does not delete a iam.policy"),
    ("iam.oidc_provider", "oidc.circleci.com/org/x", "delete", {}, "infra-prune does not delete a iam.oidc"),
    ("sqs.queue", f"{STAGING}-ecs-events", "update", {}, "infra-prune only deletes"),
    ("s3.bucket", f"{STAGING}-flows-{PROD_ACCOUNT}", "keep", {}, None),
]


@pytest.mark.parametrize("kind,name,action,ident,refused", BEYOND, ids=[f"{b[2]}-{b[0]}-{b[1]}" for b in BEYOND])
def test_what_the_prune_role_may_delete(cfg, kind, name, action, ident, refused) -> None:
    from infra_tasks.iam_policies import beyond_role
    from infra_tasks.names import Account

    why = beyond_role(_change(kind, name, action, **ident), Account(cfg, "production", PROD_ACCOUNT, REGION),
                      "infra-prune")
    assert (why is None) if refused is None else (why or "").startswith(f"{kind}/{name}: {refused}"), why


# --- on the shared stack: nothing is deleted --------------------------------------------------

def test_drift_check_names_both_routes_and_the_dry_run_deletes_nothing(shared, only_main) -> None:
    _, report = run_drift(config_path=only_main)
    unmanaged = {f.resource: f.detail for f in report.unmanaged}
    assert sorted(unmanaged) == sorted(DELETED + KEPT)
    assert set(unmanaged.values()) == {
        f"carries our ownership tag but is not in the configuration; bootstrap never deletes: delete it from the UI "
        f"with the deployment {DEPLOYMENT} (after approval; never data) or with python -m flows.drift_check --env "
        f"production --prune"}
    before = staging_left(shared)
    aws.CALLS.reset()
    state = prune(only_main, dry_run=True)
    assert state.is_completed(), state.message
    assert state.message == f"dry run: 12 to delete, 3 kept; nothing was deleted (plan: artifact {ARTIFACT})"
    assert aws.CALLS.mutating() == []
    assert staging_left(shared) == before
    md = artifact(ARTIFACT)
    deletions, kept = md.split("## Kept: 3")
    assert deletions.startswith("## Deleted after approval: 12")
    assert sorted(line.split("`")[1] for line in deletions.splitlines() if line.startswith("- **delete**")) == DELETED
    assert sorted(line.split("`")[1] for line in kept.splitlines() if line.startswith("- `")) == KEPT
    assert f"- `s3.bucket/{STAGING}-flows-{PROD_ACCOUNT}`: holds data; kept" in kept
    assert f"an administrator deletes it with `{DATA_ROUTE}`" in kept


def test_nothing_to_prune_completes_at_once(shared) -> None:
    aws.CALLS.reset()
    state = prune(str(ROOT / "infra.toml"))
    assert state.is_completed(), state.message
    assert state.message == (f"nothing to prune in production: no resource that is no longer configured is left to "
                             f"delete; 0 kept (plan: artifact {ARTIFACT})")
    assert aws.CALLS.mutating() == []


def test_what_its_role_may_not_delete_fails_before_asking(shared) -> None:
    """Ours and UNMANAGED, but not named as a deployment type's queue: the role may not
    delete it (on AWS: AccessDenied half-way), so the run fails before anyone is asked."""
    sqs = shared("sqs")
    url = sqs.create_queue(QueueName=f"{P}-legacy-queue", tags={
        "managed-by": f"prefect-aws-stack/{P}", "environment": "production"})["QueueUrl"]
    try:
        aws.CALLS.reset()
        state = prune(str(ROOT / "infra.toml"))
    finally:
        sqs.delete_queue(QueueUrl=url)
    assert state.is_failed(), state
    assert state.message == (f"nothing was deleted; infra-prune cannot delete this plan: sqs.queue/{P}-legacy-queue: "
                             f"not a name a deployment type's sqs.queue has ({P}-T-…), so infra-prune may not delete "
                             f"it. An administrator can: python -m flows.drift_check --env production --prune (plan: "
                             f"artifact {ARTIFACT})")
    assert aws.CALLS.mutating() == []


def test_rejected_from_the_deployment_deletes_nothing(shared, only_main) -> None:
    """Started as the UI's custom run does, with the form the deployment renders."""
    from prefect.input.run_input import keyset_from_paused_state

    from flows.prune import infra_prune

    before = staging_left(shared)
    aws.CALLS.reset()
    th, box = start_from_deployment(DEPLOYMENT, {"request": {"environment": "production"}, "config_path": only_main},
                                    flow_fn=infra_prune)
    run = wait_paused(flow_name="infra-prune")
    assert run.id == box["run"].id
    with client() as c:
        paused = c.read_flow_run(run.id).state
        keyset = keyset_from_paused_state(paused)
        description = c.read_flow_run_input(run.id, keyset["description"])
        schema = c.read_flow_run_input(run.id, keyset["schema"])
    assert paused.message == (f"Waiting for approval: click Resume, then approve or reject; 12 deletions, plan in "
                              f"artifact {ARTIFACT} and in the Resume form. Without an answer within 60 min the run "
                              f"is cancelled and nothing changes.")
    assert "Delete 12 resources of `production` that are no longer configured?" in description
    assert "**`production` is protected**: to approve, also type `production` under *confirm environment*" \
        in description
    assert f"- **delete** `iam.role/{STAGING}-agent-task`" in description and DATA_ROUTE in description
    assert "confirm_environment" in schema
    resume(run.id, "reject")
    th.join(120)
    assert box["state"].is_cancelled(), box["state"]
    assert box["state"].message == "rejected, nothing was deleted: reject in test"
    assert aws.CALLS.mutating() == []
    assert staging_left(shared) == before
    no_traceback(run.id)


@pytest.mark.parametrize("typed", ["prod", None], ids=["wrong", "missing"])
def test_protected_environment_without_its_typed_name_deletes_nothing(shared, only_main, typed) -> None:
    before = staging_left(shared)
    aws.CALLS.reset()
    th, box, run = paused_prune(only_main)
    resume(run.id, "approve", **({} if typed is None else {"confirm_environment": typed}))
    th.join(120)
    assert box["state"].is_cancelled(), box["state"]
    assert box["state"].message == (f"production is protected and its name was not typed under confirm environment "
                                    f"(got {typed or ''!r}); nothing was deleted")
    assert aws.CALLS.mutating() == []
    assert staging_left(shared) == before


def test_plan_changed_while_waiting_deletes_nothing(shared, only_main) -> None:
    """An UNMANAGED queue appears while the run (from the deployment) waits: the approved
    plan is not what would be deleted now, so nothing is."""
    from flows.prune import infra_prune

    sqs = shared("sqs")
    before = staging_left(shared)
    aws.CALLS.reset()
    th, box = start_from_deployment(DEPLOYMENT, {"request": {"environment": "production"}, "config_path": only_main},
                                    flow_fn=infra_prune)
    run = wait_paused(flow_name="infra-prune")
    url = sqs.create_queue(QueueName=f"{P}-dev-ecs-events", tags={
        "managed-by": f"prefect-aws-stack/{P}", "environment": "production"})["QueueUrl"]
    try:
        resume(run.id, "approve", confirm_environment="production")
        th.join(120)
    finally:
        sqs.delete_queue(QueueUrl=url)
    assert box["state"].is_failed(), box["state"]
    assert box["state"].message == ("what this teardown would delete changed between the plan you confirmed and now; "
                                    "nothing was deleted. Run again to see the new plan.")
    assert aws.CALLS.mutating() == []
    assert staging_left(shared) == before
    no_traceback(run.id)


# --- on a fresh stack: approved, deleted, nothing left ------------------------------------------

def test_approved_deletes_exactly_the_unconfigured_type_and_keeps_its_data(prefect_stack, only_main) -> None:
    before = aws_inventory(prefect_stack)
    th, box, run = paused_prune(only_main)
    aws.CALLS.reset()
    resume(run.id, "approve", confirm_environment="production")
    th.join(300)
    state = box["state"]
    assert state.is_completed(), state.message
    assert state.message == (f"deleted 12 resources no longer configured in production; kept 3 (data: only an "
                             f"administrator deletes it, with {DATA_ROUTE})")
    assert sorted(set(aws.CALLS.mutating())) == [
        "ec2:DeleteSecurityGroup", "ecs:DeleteCluster", "ecs:DeleteService", "ecs:DeregisterTaskDefinition",
        "ecs:UpdateService", "events:DeleteRule", "events:RemoveTargets", "iam:DeleteRole", "iam:DeleteRolePolicy",
        "sqs:DeleteQueue"]
    after = aws_inventory(prefect_stack)
    expected = {**before}
    expected["roles"] = {k: v for k, v in before["roles"].items() if not k.startswith(f"{STAGING}-")}
    expected["queues"] = [q for q in before["queues"] if not q.startswith(STAGING)]
    expected["rules"] = {k: v for k, v in before["rules"].items() if not k.startswith(STAGING)}
    expected["security_groups"] = [g for g in before["security_groups"] if not g[0].startswith(STAGING)]
    expected["services"] = {k: v for k, v in before["services"].items() if k != STAGING}
    expected["task_definition_revisions"] = {k: v for k, v in before["task_definition_revisions"].items()
                                             if k != f"{STAGING}-agent"}
    assert after == expected  # the data (bucket, log groups), the boundary policy and main: all still there
    assert f"{STAGING}-flows-{PROD_ACCOUNT}" in after["buckets"] and f"/ecs/{STAGING}/flows" in after["log_groups"]

    aws.CALLS.reset()
    again = prune(only_main)
    assert again.is_completed(), again.message
    assert again.message == (f"nothing to prune in production: no resource that is no longer configured is left to "
                             f"delete; 3 kept (plan: artifact {ARTIFACT})")
    assert aws.CALLS.mutating() == []
