"""Teardown (`python -m flows.teardown`): what it deletes and keeps, its protections, its
crash safety, and bootstrap from what it leaves — on full dev and production stacks,
with others' resources beside ours."""

from __future__ import annotations

import sys
from typing import Any, Callable

import pytest

from infra_tasks import aws, engine, prefect_objects, teardown as plan_teardown
from infra_tasks.model import Action, Observed, Resource

from .conftest import P, run_cli
from .crash import Death, aws_inventory, bootstrap_dying, prefect_inventory

ORG = "a1b2c3d4-0000-4000-8000-000000000001"  # infra.toml's circleci.org_id
SECRET = f"{P}/prefect-credentials"
TRUST = ('{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},'
         '"Action":"sts:AssumeRole"}]}')


def teardown(*argv: str) -> int:
    from flows.teardown import main

    return main(list(argv))


def others(boto: Callable[[str], Any], shared: bool = True) -> None:
    """What is not this environment's: our prefix without our tag, another stack's tag, and
    (`shared`) the CircleCI OIDC provider and the Prefect secret as they existed before
    bootstrap, which it adopts as they are."""
    iam = boto("iam")
    iam.create_role(RoleName=f"{P}-legacy-role", AssumeRolePolicyDocument=TRUST)
    iam.create_role(RoleName=f"{P}-other-stack", AssumeRolePolicyDocument=TRUST,
                    Tags=[{"Key": "managed-by", "Value": "someone-else"}])
    boto("logs").create_log_group(logGroupName=f"/ecs/{P}-legacy")
    boto("s3").create_bucket(Bucket=f"{P}-legacy-data")
    boto("s3").put_bucket_tagging(Bucket=f"{P}-legacy-data", Tagging={"TagSet": [{"Key": "team", "Value": "legacy"}]})
    boto("sqs").create_queue(QueueName=f"{P}-legacy-queue")
    boto("ecs").create_cluster(clusterName=f"{P}-legacy")
    if shared:
        iam.create_open_id_connect_provider(Url=f"https://oidc.circleci.com/org/{ORG}", ClientIDList=[ORG],
                                            ThumbprintList=["9e99a48a9960b14926bb7f3b02e22da2b0ab7280"])
        boto("secretsmanager").create_secret(Name=SECRET, SecretString='{"PREFECT_API_URL": "u", "PREFECT_API_KEY": "k"}')


def kept_data(inv: dict[str, Any], env: str, account: str) -> dict[str, Any]:
    """`inv` plus what a teardown without --delete-data keeps of a bootstrapped `env`."""
    types = {"dev": ["dev"], "production": ["staging", "main"]}[env]
    out = {**inv}
    out["buckets"] = sorted([*inv["buckets"], *(f"{P}-{t}-flows-{account}" for t in types)])
    out["repositories"] = sorted([*inv["repositories"], P])
    out["log_groups"] = sorted([*inv["log_groups"], *(f"/ecs/{P}-{t}/{w}" for t in types for w in ("agent", "flows"))])
    out.pop("bucket_tags")
    return out


def without_tags(inv: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in inv.items() if k != "bucket_tags"}


def quiet(capsys: Any) -> tuple[str, str]:
    got = capsys.readouterr()
    return got.out, got.err


# --- the whole journey on dev: plan, delete, keep, nothing twice, bootstrap again ------------------


def test_dev_teardown_keeps_data_and_others_and_bootstrap_rebuilds(dev_account, capsys) -> None:
    from .conftest import DEV_ACCOUNT

    others(dev_account)
    before_aws, before_prefect = aws_inventory(dev_account), prefect_inventory()
    assert run_cli("--env", "dev", "--yes") == 0
    dev_account("s3").put_object(Bucket=f"{P}-dev-flows-{DEV_ACCOUNT}", Key="results/a", Body=b"kept")
    quiet(capsys)

    aws.CALLS.reset()
    assert teardown("--env", "dev", "--plan") == 2
    out, _ = quiet(capsys)
    assert aws.CALLS.mutating() == []
    assert "Teardown of dev (account 111111111111, us-east-1):" in out
    plan_lines = out.split("\nkept:\n")[0]
    kept_lines = out.split("\nkept:\n")[1]
    for key in (f"ecs.service/{P}-dev-agent", f"iam.role/{P}-dev-agent-task", f"prefect.work_pool/{P}-dev",
                "prefect.deployment/drift-check/", f"prefect.concurrency_limit/{P}-dev-infra-mutations"):
        assert f"delete    {key}" in plan_lines, key
    for key in (f"s3.bucket/{P}-dev-flows-{DEV_ACCOUNT}", "ecr.repository/data-flows", f"logs.group//ecs/{P}-dev/agent"):
        assert key in kept_lines and "holds data" in kept_lines.split(key)[1].split("\n")[0], key
    for key in (f"secretsmanager.secret/{SECRET}", f"iam.oidc_provider/oidc.circleci.com/org/{ORG}"):
        assert "no managed-by tag (adopted as it was" in kept_lines.split(key)[1].split("\n")[0], key
    assert "legacy" not in out and "other-stack" not in out

    assert teardown("--env", "dev", "--yes") == 0
    out, err = quiet(capsys)
    assert "Deleted" in out and "nothing this teardown deletes is left" in out
    assert without_tags(aws_inventory(dev_account)) == kept_data(before_aws, "dev", DEV_ACCOUNT)
    assert prefect_inventory() == before_prefect
    assert dev_account("s3").get_object(Bucket=f"{P}-dev-flows-{DEV_ACCOUNT}", Key="results/a")["Body"].read() == b"kept"

    # Nothing left to delete: a plan and a teardown exit 0 and change nothing.
    aws.CALLS.reset()
    prefect_objects.PREFECT_CALLS.reset()
    assert teardown("--env", "dev", "--plan") == 0
    assert teardown("--env", "dev", "--yes") == 0
    out, _ = quiet(capsys)
    assert "Nothing to delete." in out
    assert aws.CALLS.mutating() == [] and prefect_objects.PREFECT_CALLS.total == 0

    # Bootstrap rebuilds it, taking the kept data back without --adopt.
    assert run_cli("--env", "dev", "--yes") == 0, quiet(capsys)[1]
    out, err = quiet(capsys)
    assert "--adopt" not in out + err and " 0 conflicts" in out
    aws.CALLS.reset()
    assert run_cli("--env", "dev", "--plan") == 0
    assert aws.CALLS.mutating() == []


# --- production: protected, --delete-data ---------------------------------------------------------


def test_protected_production_needs_its_name_typed_and_delete_data_empties_it(bootstrap, boto, monkeypatch,
                                                                              capsys) -> None:
    from .conftest import PROD_ACCOUNT

    others(boto, shared=False)
    before_aws, before_prefect = aws_inventory(boto), prefect_inventory()
    assert bootstrap("--yes", prefect=True) == 0
    bucket = f"{P}-main-flows-{PROD_ACCOUNT}"
    s3 = boto("s3")
    for body in (b"v1", b"v2"):
        s3.put_object(Bucket=bucket, Key="results/x", Body=body)
    s3.delete_object(Bucket=bucket, Key="results/x")  # a delete marker over two versions
    quiet(capsys)

    aws.CALLS.reset()
    prefect_objects.PREFECT_CALLS.reset()
    assert teardown("--env", "production", "--delete-data", "--yes") == 1
    _, err = quiet(capsys)
    assert "environment 'production' is protected" in err and "--yes is refused" in err
    assert "Traceback" not in err and [line for line in err.splitlines() if line.startswith("error: ")] == [
        line for line in err.splitlines() if "protected" in line]  # one error line
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    assert teardown("--env", "production", "--delete-data") == 1
    assert "must be typed at a terminal" in quiet(capsys)[1]
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    assert teardown("--env", "production", "--delete-data") == 1
    assert "Cancelled; nothing was deleted." in quiet(capsys)[1]
    assert aws.CALLS.mutating() == [] and prefect_objects.PREFECT_CALLS.total == 0

    prompts: list[str] = []
    monkeypatch.setattr("builtins.input", lambda prompt: prompts.append(prompt) or "production")
    assert teardown("--env", "production", "--delete-data") == 0, quiet(capsys)[1]
    assert "Type the environment's name to confirm" in prompts[0]
    assert without_tags(aws_inventory(boto)) == without_tags(before_aws)
    assert prefect_inventory() == before_prefect
    # Others' resources, our prefix without our tag included, are untouched.
    assert f"{P}-legacy-data" in aws_inventory(boto)["buckets"]

    # And from nothing again.
    assert bootstrap("--yes", prefect=True) == 0, quiet(capsys)[1]
    assert bootstrap("--plan", prefect=True) == 0


# --- crash safety ---------------------------------------------------------------------------------


# The first and a late mutating AWS call (AWS only: the teardown of dev makes about 40),
# and a Prefect delete (the deployments go first).
@pytest.mark.parametrize("death,flags", [(Death(aws_k=1), ("--no-prefect",)), (Death(aws_k=30), ("--no-prefect",)),
                                         (Death(prefect_k=2), ())], ids=["aws-1", "aws-30", "prefect-2"])
def test_teardown_killed_anywhere_is_finished_by_a_rerun(death, flags, dev_account, monkeypatch, capsys) -> None:
    before, prefect_before = aws_inventory(dev_account), prefect_inventory()
    assert run_cli("--env", "dev", "--yes", *flags) == 0
    quiet(capsys)
    bootstrap_dying(death, monkeypatch, "--delete-data", *flags, main=lambda *a: teardown(*a))
    assert death.dead_after is not None, "the teardown finished before the crash point: lower it"
    assert teardown("--env", "dev", "--delete-data", "--yes", *flags) == 0, quiet(capsys)[1]
    assert without_tags(aws_inventory(dev_account)) == without_tags(before)
    assert prefect_inventory() == prefect_before


# --- the Prefect side: deployments on our pools -----------------------------------------------------


def test_pool_with_a_foreign_deployment_is_refused_and_ours_go_with_it(dev_account, capsys) -> None:
    from prefect.client.orchestration import get_client

    assert run_cli("--env", "dev", "--yes") == 0
    with get_client(sync_client=True) as c:
        flow_id = c.create_flow_from_name("user-flow")
        c.create_deployment(flow_id=flow_id, name="by-the-deployer", work_pool_name=f"{P}-dev",
                            tags=[prefect_objects.FLOWS_MANIFEST_TAG], entrypoint="flows/example.py:hello")
        foreign = c.create_deployment(flow_id=flow_id, name="by-hand", work_pool_name=f"{P}-dev",
                                      entrypoint="flows/example.py:hello")
    quiet(capsys)
    aws.CALLS.reset()
    assert teardown("--env", "dev", "--yes") == 1
    _, err = quiet(capsys)
    assert "nothing was deleted" in err and "user-flow/by-hand" in err and "user-flow/by-the-deployer" not in err
    assert "Traceback" not in err
    assert aws.CALLS.mutating() == []
    with get_client(sync_client=True) as c:
        c.delete_deployment(foreign)
    assert teardown("--env", "dev", "--yes") == 0, quiet(capsys)[1]
    assert prefect_inventory()["deployments"] == []


# --- deciding and ordering (pure) -----------------------------------------------------------------

HOW = plan_teardown.Teardown(owner="prefect-aws-stack/x", env="dev")
OURS = {"managed-by": "prefect-aws-stack/x", "environment": "dev"}


@pytest.mark.parametrize("kind,tags,how,expected,reason", [
    ("iam.role", OURS, HOW, Action.DELETE, "policies detached"),
    ("iam.role", {}, HOW, Action.KEEP, "no managed-by tag"),
    ("iam.role", {"managed-by": "other"}, HOW, Action.KEEP, "owned by another stack (managed-by=other)"),
    ("iam.role", {**OURS, "environment": "production"}, HOW, Action.KEEP, "belongs to environment 'production'"),
    ("s3.bucket", OURS, HOW, Action.KEEP, "holds data"),
    ("s3.bucket", OURS, plan_teardown.Teardown("prefect-aws-stack/x", "dev", True), Action.DELETE, "every object"),
    ("secretsmanager.secret", {}, plan_teardown.Teardown("prefect-aws-stack/x", "dev", True), Action.KEEP,
     "adopted as it was"),
    ("ecs.task_definition", {}, HOW, Action.DELETE, "deleted"),  # revisions anyone registers in our family
    ("prefect.work_pool", {}, HOW, Action.DELETE, "deleted"),
])
def test_decide(kind, tags, how, expected, reason) -> None:
    change = plan_teardown.decide(Resource(kind, "x", {}), Observed({}, {}, tags), None, how)
    assert change is not None and change.action is expected and reason in change.reason


def test_decide_absent_is_nothing_and_a_blocker_blocks() -> None:
    assert plan_teardown.decide(Resource("iam.role", "x", {}), None, None, HOW) is None
    change = plan_teardown.decide(Resource("iam.policy", "x", {}), Observed({}, {}, OURS), "attached to a role", HOW)
    assert change is not None and engine.blocking(change) == "attached to a role"
    target = Resource("autoscaling.target", "t", {}, deps=("ecs.service/s",))
    kept = plan_teardown.decide(target, Observed({}, {}), None, HOW, frozenset({"ecs.service/s"}))
    assert kept is not None and kept.action is Action.KEEP


def test_order_of_a_full_production_stack(cfg) -> None:
    from infra_tasks.ec2 import NetworkFacts
    from infra_tasks.facts import Facts

    facts = Facts("222222222222", "us-east-1", NetworkFacts("vpc-0abc", ("subnet-0abc",), ()))
    resources = engine.all_resources(cfg, "production", facts, include_prefect=True)
    after = plan_teardown.order(resources)
    keys = {r.key for r in resources}
    assert set(after) == keys
    service, pool = f"ecs.service/{P}-main-agent", f"prefect.work_pool/{P}-main"
    assert service in after[pool]  # a running agent would re-create its pool
    assert f"ecs.task_definition/{P}-main-agent" in after[f"iam.role/{P}-main-agent-task"]
    assert f"autoscaling.target/service/{P}-main/{P}-main-agent" in after[service]
    assert not any(k in after[k] for k in keys)
    # Every resource kind bootstrap makes has a place in the order.
    assert {r.kind for r in resources} - set(plan_teardown.LAYER) == {plan_teardown.LOCK_KIND}


# --- the drift check's prune ------------------------------------------------------------------------


def test_prune_deletes_only_what_is_no_longer_configured(bootstrap, boto, capsys) -> None:
    from flows.drift_check import main as drift

    from .conftest import PROD_ACCOUNT

    assert bootstrap("--yes", prefect=True) == 0
    only_main = ("--set", 'environments.production.deployment_types=["main"]')
    quiet(capsys)
    assert drift(["--env", "production", *only_main, "--prune", "--yes"]) == 1
    assert "--yes is refused" in quiet(capsys)[1]
    assert drift(["--env", "production", *only_main, "--set", "environments.production.protected=false",
                  "--prune", "--yes"]) == 2, quiet(capsys)[1]
    out, _ = quiet(capsys)
    prune_plan, after = out.split("Pruning the UNMANAGED resources:")[1].split("Deleted ")
    assert f"delete    ecs.service/{P}-staging-agent" in prune_plan and f"delete    iam.role/{P}-staging-agent-task" in prune_plan
    assert f"{P}-main" not in prune_plan.split("\nkept:\n")[0]
    assert f"s3.bucket/{P}-staging-flows-{PROD_ACCOUNT}" in prune_plan.split("\nkept:\n")[1]
    inv = aws_inventory(boto)
    assert f"{P}-staging" not in inv["services"] and f"{P}-staging-agent-task" not in inv["roles"]
    assert f"{P}-main-agent-task" in inv["roles"] and f"{P}-staging-flows-{PROD_ACCOUNT}" in inv["buckets"]
    # What is left UNMANAGED is the kept data (the roles shared by both types are MODIFIED:
    # their policies still name staging until bootstrap applies the narrower config).
    unmanaged = [line.split()[1] for line in after.splitlines() if line.startswith("UNMANAGED")]
    assert sorted(unmanaged) == sorted([f"s3.bucket/{P}-staging-flows-{PROD_ACCOUNT}",
                                        f"logs.group//ecs/{P}-staging/agent", f"logs.group//ecs/{P}-staging/flows"])
    assert not [line for line in after.splitlines() if line.startswith("DELETED")]
