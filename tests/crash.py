"""Injected deaths and stack inventories for the crash-consistency tests.

The "death" is injected on the wire: once the k-th mutating AWS call (or Prefect write)
has been carried out, its answer is dropped and no further request leaves the process;
requests already sent complete, as they would on AWS. The product has no clean-up code
an in-process death could run that a SIGKILL would skip (nothing is rolled back; the
lock is released, but test_lock.py proves a killed holder's lock is taken over).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import pytest

from infra_tasks import aws, emulator, prefect_objects

from .conftest import run_cli

ENV = "dev"


class Crash(Exception):
    """The process died here."""


class Death:
    """Dies once the k-th mutating call has been carried out (AWS calls, or Prefect writes
    when `prefect_k` is given)."""

    def __init__(self, aws_k: int | None = None, prefect_k: int | None = None, after_op: str | None = None) -> None:
        self.aws_k, self.prefect_k, self.after_op = aws_k, prefect_k, after_op
        self.aws_n = self.prefect_n = 0
        self.dead_after: str | None = None
        self.lock = threading.Lock()

    def after_call(self, model: Any = None, **_: Any) -> None:
        if not aws.is_mutating(model.name):
            return
        with self.lock:
            self.aws_n += 1
            op = f"{model.service_model.service_name}:{model.name}"
            if (self.aws_n == self.aws_k or op == self.after_op) and self.dead_after is None:
                self.dead_after = f"{model.service_model.service_name}:{model.name} (#{self.aws_n})"
        if self.dead_after:
            raise Crash(f"died after {self.dead_after}")

    def before_send(self, **_: Any) -> None:
        if self.dead_after:
            raise Crash(f"dead since {self.dead_after}")

    def prefect_write(self, op: str) -> None:
        with self.lock:
            if self.dead_after is None and self.prefect_k is not None and self.prefect_n == self.prefect_k:
                self.dead_after = f"Prefect {op} (#{self.prefect_n})"
            self.prefect_n += 1
        if self.dead_after:
            raise Crash(f"dead since {self.dead_after}")


def bootstrap_dying(death: Death, monkeypatch: pytest.MonkeyPatch, *flags: str,
                    main: Callable[..., int] = run_cli) -> None:
    """Run bootstrap (or another command's `main`) until it dies (a dead process returns
    nothing: its exit is not checked)."""
    record = prefect_objects._record  # noqa: SLF001

    def counted(op: str) -> None:
        death.prefect_write(op)
        record(op)

    monkeypatch.setattr(prefect_objects, "_record", counted)
    aws.add_handler("after-call", death.after_call)
    aws.add_handler("before-send", death.before_send)
    try:
        main("--env", ENV, "--yes", *flags)
    except Exception:  # noqa: BLE001 - the death itself, wherever it struck
        pass
    finally:
        aws.remove_handler(death.after_call)
        aws.remove_handler(death.before_send)
        monkeypatch.setattr(prefect_objects, "_record", record)


# --- what a stack consists of ----------------------------------------------------------

def aws_inventory(boto: Callable[[str], Any]) -> dict[str, Any]:
    """Everything of ours in the account, by name and count (ids differ between runs)."""
    iam, ecs, ec2 = boto("iam"), boto("ecs"), boto("ec2")
    inv: dict[str, Any] = {}
    inv["buckets"] = sorted(b["Name"] for b in boto("s3").list_buckets()["Buckets"])
    inv["bucket_tags"] = {b: sorted((t["Key"], t["Value"]) for t in boto("s3").get_bucket_tagging(Bucket=b)["TagSet"])
                          for b in inv["buckets"]}
    inv["repositories"] = sorted(r["repositoryName"] for r in boto("ecr").describe_repositories()["repositories"])
    inv["log_groups"] = sorted(g["logGroupName"] for g in boto("logs").describe_log_groups()["logGroups"])
    inv["secrets"] = sorted(s["Name"] for s in boto("secretsmanager").list_secrets()["SecretList"])
    inv["roles"] = {
        r["RoleName"]: (sorted(iam.list_role_policies(RoleName=r["RoleName"])["PolicyNames"]),
                        sorted(p["PolicyName"] for p in
                               iam.list_attached_role_policies(RoleName=r["RoleName"])["AttachedPolicies"]),
                        (iam.get_role(RoleName=r["RoleName"])["Role"].get("PermissionsBoundary") or {})
                        .get("PermissionsBoundaryArn", "").rsplit("/", 1)[-1])
        for r in iam.list_roles()["Roles"]}
    inv["policies"] = {p["PolicyName"]: len(iam.list_policy_versions(PolicyArn=p["Arn"])["Versions"])
                       for p in iam.list_policies(Scope="Local")["Policies"]}
    inv["oidc_providers"] = len(iam.list_open_id_connect_providers()["OpenIDConnectProviderList"])
    inv["security_groups"] = sorted(
        (g["GroupName"], len(g.get("IpPermissions", [])), len(g.get("IpPermissionsEgress", [])))
        for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default")
    inv["queues"] = sorted(u.rsplit("/", 1)[1] for u in boto("sqs").list_queues().get("QueueUrls", []))
    events = boto("events")
    inv["rules"] = {r["Name"]: sorted((t["Id"], t["Arn"].rsplit(":", 1)[1])
                                      for t in events.list_targets_by_rule(Rule=r["Name"])["Targets"])
                    for r in events.list_rules()["Rules"]}
    families: dict[str, int] = {}
    for arn in ecs.list_task_definitions()["taskDefinitionArns"]:
        fam = arn.rsplit("/", 1)[1].rsplit(":", 1)[0]
        families[fam] = families.get(fam, 0) + 1
    inv["task_definition_revisions"] = families
    # ACTIVE ones only: the emulator keeps listing deleted (INACTIVE) clusters and services.
    clusters = [c["clusterArn"] for c in ecs.describe_clusters(clusters=ecs.list_clusters()["clusterArns"])["clusters"]
                if c["status"] == "ACTIVE"] if ecs.list_clusters()["clusterArns"] else []
    inv["services"] = {c.rsplit("/", 1)[1]: sorted(
        s["serviceName"] for s in (ecs.describe_services(cluster=c, services=arns)["services"] if arns else [])
        if s["status"] == "ACTIVE") for c in clusters for arns in [ecs.list_services(cluster=c)["serviceArns"]]}
    scaling = boto("application-autoscaling")
    inv["scalable_targets"] = sorted(t["ResourceId"] for t in
                                     scaling.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"])
    inv["scaling_policies"] = sorted(p["PolicyName"] for p in
                                     scaling.describe_scaling_policies(ServiceNamespace="ecs")["ScalingPolicies"])
    return inv


def prefect_inventory() -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:
        return {
            "pools": sorted(p.name for p in c.read_work_pools() if not p.name.startswith("default")),
            "blocks": sorted(b.name for b in c.read_block_documents()),
            "deployments": sorted((d.name, len(d.schedules)) for d in c.read_deployments()),
            "variables": sorted(v.name for v in c.read_variables()),
            "limits": sorted((g.name, g.active_slots) for g in c.read_global_concurrency_limits(limit=200)),
        }


REFERENCE: dict[bool, dict[str, Any]] = {}


def reference(with_prefect: bool, boto: Callable[[str], Any], moto_url: str) -> dict[str, Any]:
    """What a clean cold bootstrap leaves (computed once, then the account is emptied)."""
    from .conftest import clean_prefect

    if with_prefect not in REFERENCE:
        flags = () if with_prefect else ("--no-prefect",)
        assert run_cli("--env", ENV, "--yes", *flags) == 0
        REFERENCE[with_prefect] = {"aws": aws_inventory(boto), "mutating": len(aws.CALLS.mutating()),
                                   "prefect": prefect_inventory() if with_prefect else None,
                                   "prefect_writes": prefect_objects.PREFECT_CALLS.total}
        emulator.reset(moto_url)
        clean_prefect()
    return REFERENCE[with_prefect]


def converges(boto: Callable[[str], Any], ref: dict[str, Any], with_prefect: bool, capsys: Any) -> None:
    flags = () if with_prefect else ("--no-prefect",)
    capsys.readouterr()
    assert run_cli("--env", ENV, "--yes", *flags) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "--adopt" not in err and "conflict" not in err.lower()
    assert aws_inventory(boto) == ref["aws"]
    if with_prefect:
        assert prefect_inventory() == ref["prefect"]
    aws.CALLS.reset()
    assert run_cli("--env", ENV, "--plan", *flags) == 0
    assert aws.CALLS.mutating() == []


