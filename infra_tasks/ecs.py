"""ECS cluster and the agent service (one handler each)."""

from __future__ import annotations

from typing import Any

from .aws import Missing, absent, attempt, client, paginate, retry_iam_propagation, until
from .handler import Handler, call, changed, tag_dict, tag_list
from .model import OWNER_TAG, Diff, Observed, Resource, Within

# DescribeClusters / DescribeServices report a missing name in `failures`, not as an
# error; DescribeServices raises ClusterNotFoundException when the cluster is missing.
# Changing a service that is being deleted (DRAINING) answers ServiceNotActiveException.
MISSING = Missing.of("ClusterNotFoundException", "ServiceNotFoundException", "ServiceNotActiveException")
# DeleteCluster refuses while services (deleted ones drain for a while) or tasks remain.
CLUSTER_BUSY = ("ClusterContainsServicesException", "ClusterContainsTasksException", "UpdateInProgressException")

# Teardown waits, bounded: a service's tasks stopping once it is scaled to 0 (each task
# gets its stop timeout, 30 s by default, to exit), and deleted services draining out of
# their cluster before AWS lets the cluster go.
DRAIN_TIMEOUT = 600.0
CLUSTER_DELETE_TIMEOUT = 600.0
POLL_INTERVAL = 10.0

# --- thin calls: "not there" is None ----------------------------------------------------


def describe_cluster(name: str) -> dict[str, Any] | None:
    out = absent(f"ecs.cluster/{name}", client("ecs").describe_clusters, clusters=[name],
                 include=["SETTINGS", "TAGS"], missing=MISSING)
    return active((out or {}).get("clusters"))


def describe_service(cluster: str, name: str) -> dict[str, Any] | None:
    out = absent(f"ecs.service/{name}", client("ecs").describe_services, cluster=cluster, services=[name],
                 include=["TAGS"], missing=MISSING)
    return active((out or {}).get("services"))


def running_tasks(cluster: str) -> list[dict[str, Any]]:
    """The cluster's tasks that run or are about to (desired status RUNNING), described."""
    ecs = client("ecs")
    arns = list(paginate(ecs, "list_tasks", "taskArns", cluster=cluster, desiredStatus="RUNNING"))
    return [t for i in range(0, len(arns), 100)  # DescribeTasks takes at most 100
            for t in ecs.describe_tasks(cluster=cluster, tasks=arns[i:i + 100]).get("tasks", [])]


def cluster_services(cluster: str) -> list[dict[str, Any]]:
    """The cluster's services (ACTIVE and DRAINING), described with their tags."""
    ecs = client("ecs")
    arns = list(paginate(ecs, "list_services", "serviceArns", cluster=cluster))
    return [s for i in range(0, len(arns), 10)  # DescribeServices takes at most 10
            for s in ecs.describe_services(cluster=cluster, services=arns[i:i + 10], include=["TAGS"]).get(
                "services", [])]


def wait_stable(cluster: str, services: list[str], timeout: int = 600) -> None:
    """Wait (bounded) until the agent services run their desired count."""
    client("ecs").get_waiter("services_stable").wait(
        cluster=cluster, services=services, WaiterConfig={"Delay": 15, "MaxAttempts": max(1, timeout // 15)})


# --- normalisers (pure) -------------------------------------------------------------


def active(found: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The ACTIVE one among described clusters/services (INACTIVE ones linger after deletion)."""
    return next((x for x in found or [] if x.get("status") == "ACTIVE"), None)


def standalone(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks no service started (a service's tasks are in group "service:NAME"): on an
    agent's cluster, Prefect flow runs."""
    return [t for t in tasks if not str(t.get("group", "")).startswith("service:")]


def same_owner(tags: dict[str, str], ours: dict[str, str]) -> bool:
    """Whether `tags` carry the same ownership and environment tags as `ours` (and have one)."""
    return bool(tags.get(OWNER_TAG)) and all(tags.get(k) == ours.get(k) for k in (OWNER_TAG, "environment"))


def task_ids(tasks: list[dict[str, Any]], shown: int = 5) -> str:
    ids = [t["taskArn"].rsplit("/", 1)[-1] for t in tasks]
    return ", ".join(ids[:shown]) + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


def normalise_strategy(items: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return sorted(({"capacityProvider": s["capacityProvider"], "weight": s.get("weight", 0), "base": s.get("base", 0)}
                   for s in items or []), key=lambda s: s["capacityProvider"])


def normalise_cluster(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "settings": {s["name"]: s["value"] for s in c.get("settings", [])} or None,
        "capacity_providers": sorted(c.get("capacityProviders", [])),
        "default_strategy": normalise_strategy(c.get("defaultCapacityProviderStrategy")),
    }


def normalise_network(cfg: dict[str, Any] | None) -> dict[str, Any] | None:
    if not cfg:
        return None
    aws = cfg.get("awsvpcConfiguration", {})
    return {"awsvpcConfiguration": {"subnets": sorted(aws.get("subnets", [])),
                                    "securityGroups": sorted(aws.get("securityGroups", [])),
                                    "assignPublicIp": aws.get("assignPublicIp", "DISABLED")}}


def normalise_service(s: dict[str, Any]) -> dict[str, Any]:
    dc = s.get("deploymentConfiguration") or {}
    cb = dc.get("deploymentCircuitBreaker") or {}
    return {
        "taskDefinition": s.get("taskDefinition"),
        "desiredCount": s.get("desiredCount"),
        "launchType": s.get("launchType"),
        "platformVersion": s.get("platformVersion"),
        "networkConfiguration": normalise_network(s.get("networkConfiguration")),
        "deploymentConfiguration": {
            "deploymentCircuitBreaker": {"enable": cb.get("enable", False), "rollback": cb.get("rollback", False)},
            "maximumPercent": dc.get("maximumPercent"), "minimumHealthyPercent": dc.get("minimumHealthyPercent")},
        "propagateTags": s.get("propagateTags", "NONE"),
        "enableECSManagedTags": s.get("enableECSManagedTags", False),
    }


# --- desired properties -------------------------------------------------------------


def cluster_props(tags: dict[str, str]) -> dict[str, Any]:
    return {
        "settings": {"containerInsights": "enabled"},
        "capacity_providers": ["FARGATE", "FARGATE_SPOT"],
        "default_strategy": [{"capacityProvider": "FARGATE", "weight": 1, "base": 0}],
        "tags": tags,
    }


def service_props(*, task_definition: Any, desired: int, low: int, high: int, subnets: list[str],
                  security_group: Any, public_ip: bool, tags: dict[str, str]) -> dict[str, Any]:
    return {
        "taskDefinition": task_definition,
        "desiredCount": Within(low, high, desired),
        "launchType": "FARGATE",
        "platformVersion": "LATEST",
        "networkConfiguration": {"awsvpcConfiguration": {
            "subnets": sorted(subnets), "securityGroups": [security_group],
            "assignPublicIp": "ENABLED" if public_ip else "DISABLED"}},
        "deploymentConfiguration": {
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
            "maximumPercent": 200, "minimumHealthyPercent": 100},
        "propagateTags": "SERVICE",
        "enableECSManagedTags": True,
        "tags": tags,
    }


# --- the handlers -------------------------------------------------------------------


class ClusterHandler(Handler):
    kind = "ecs.cluster"

    def read(self, res: Resource) -> Observed | None:
        c = describe_cluster(res.name)
        if c is None:
            return None
        return Observed(normalise_cluster(c), outputs={"arn": c["clusterArn"], "name": res.name},
                        tags=tag_dict(c.get("tags"), "key", "value"))

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        c = call("CreateCluster", res.key, client("ecs").create_cluster, clusterName=res.name,
                 settings=[{"name": k, "value": v} for k, v in props["settings"].items()],
                 capacityProviders=props["capacity_providers"],
                 defaultCapacityProviderStrategy=props["default_strategy"],
                 tags=tag_list(props["tags"], "key", "value"))["cluster"]
        return {"arn": c["clusterArn"], "name": res.name}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        ecs = client("ecs")
        if changed(diffs, "settings"):
            # UpdateCluster carries settings too (UpdateClusterSettings does the same; one call suffices).
            call("UpdateCluster", res.key, ecs.update_cluster, cluster=res.name,
                 settings=[{"name": k, "value": v} for k, v in props["settings"].items()])
        if changed(diffs, "capacity_providers", "default_strategy"):
            call("PutClusterCapacityProviders", res.key, ecs.put_cluster_capacity_providers, cluster=res.name,
                 capacityProviders=props["capacity_providers"],
                 defaultCapacityProviderStrategy=props["default_strategy"])
        if changed(diffs, "tags"):
            call("TagResource", res.key, ecs.tag_resource, resourceArn=observed.outputs["arn"],
                 tags=tag_list(props["tags"], "key", "value"))
        return observed.outputs

    def delete_blocker(self, res: Resource, observed: Observed) -> str | None:
        reasons = []
        runs = standalone(absent(res.key, running_tasks, res.name, missing=MISSING) or [])
        if runs:
            reasons.append(f"{len(runs)} task(s) not started by a service still run in it (flow runs): "
                           f"{task_ids(runs)}; let them finish, or cancel those flow runs in Prefect (or "
                           f"`aws ecs stop-task --cluster {res.name} --task ID`), then re-run")
        foreign = [s["serviceName"] for s in absent(res.key, cluster_services, res.name, missing=MISSING) or []
                   if s.get("status") == "ACTIVE" and not same_owner(tag_dict(s.get("tags"), "key", "value"),
                                                                     observed.tags)]
        if foreign:
            reasons.append(f"service(s) {', '.join(sorted(foreign))} of another owner run in it; a teardown never "
                           f"deletes others' resources: have them deleted or moved first")
        return f"{res.key}: " + "; ".join(reasons) if reasons else None

    def delete(self, res: Resource, observed: Observed) -> None:
        call("DeleteCluster", res.key, until,
             lambda: attempt(client("ecs").delete_cluster, cluster=res.name, busy=CLUSTER_BUSY, missing=MISSING),
             timeout=CLUSTER_DELETE_TIMEOUT, interval=POLL_INTERVAL,
             waiting=lambda: f"{res.key}: services and tasks draining out of it (up to {CLUSTER_DELETE_TIMEOUT:.0f}s)",
             gave_up=lambda: f"DeleteCluster failed for {res.key}: it still holds {self._contents(res)} after "
                             f"{CLUSTER_DELETE_TIMEOUT:.0f}s\n  next step: deleted services drain within minutes; stop "
                             f"the tasks that still run (cancel their flow runs in Prefect, or `aws ecs stop-task "
                             f"--cluster {res.name} --task ID`) and re-run the teardown")

    def _contents(self, res: Resource) -> str:
        services = [f"service {s['serviceName']} ({s.get('status')})"
                    for s in absent(res.key, cluster_services, res.name, missing=MISSING) or []]
        tasks = absent(res.key, running_tasks, res.name, missing=MISSING) or []
        found = services + ([f"{len(tasks)} running task(s): {task_ids(tasks)}"] if tasks else [])
        return ", ".join(found) or "services or tasks AWS no longer lists"


class ServiceHandler(Handler):
    kind = "ecs.service"
    replace_paths = ("launchType",)

    def read(self, res: Resource) -> Observed | None:
        s = describe_service(res.ident["cluster"], res.name)  # no cluster yet: no service
        if s is None:
            return None
        return Observed(normalise_service(s), outputs={"arn": s["serviceArn"], "name": res.name},
                        tags=tag_dict(s.get("tags"), "key", "value"))

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        ecs = client("ecs")
        want = props["desiredCount"]
        count = want.preferred if isinstance(want, Within) else want

        def create() -> dict[str, Any]:
            return ecs.create_service(
                cluster=res.ident["cluster"], serviceName=res.name, taskDefinition=props["taskDefinition"],
                desiredCount=count, launchType=props["launchType"], platformVersion=props["platformVersion"],
                networkConfiguration=props["networkConfiguration"],
                deploymentConfiguration=props["deploymentConfiguration"], propagateTags=props["propagateTags"],
                enableECSManagedTags=props["enableECSManagedTags"], tags=tag_list(props["tags"], "key", "value"),
                # The agent serves no traffic: no load balancer, no ports.
                schedulingStrategy="REPLICA")
        s = call("CreateService", res.key, retry_iam_propagation, create, action="CreateService",
                 resource=res.key)["service"]
        return {"arn": s["serviceArn"], "name": res.name}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        ecs = client("ecs")
        kwargs: dict[str, Any] = {}
        if changed(diffs, "taskDefinition"):
            kwargs["taskDefinition"] = props["taskDefinition"]
        if changed(diffs, "desiredCount"):
            kwargs["desiredCount"] = props["desiredCount"].preferred
        if changed(diffs, "networkConfiguration"):
            kwargs["networkConfiguration"] = props["networkConfiguration"]
        if changed(diffs, "deploymentConfiguration"):
            kwargs["deploymentConfiguration"] = props["deploymentConfiguration"]
        if changed(diffs, "platformVersion"):
            kwargs["platformVersion"] = props["platformVersion"]
        if changed(diffs, "propagateTags"):
            kwargs["propagateTags"] = props["propagateTags"]
        if changed(diffs, "enableECSManagedTags"):
            kwargs["enableECSManagedTags"] = props["enableECSManagedTags"]
        if kwargs:
            call("UpdateService", res.key, retry_iam_propagation,
                 lambda: ecs.update_service(cluster=res.ident["cluster"], service=res.name, **kwargs),
                 action="UpdateService", resource=res.key)
        if changed(diffs, "tags"):
            call("TagResource", res.key, ecs.tag_resource, resourceArn=observed.outputs["arn"],
                 tags=tag_list(props["tags"], "key", "value"))
        return observed.outputs

    def delete(self, res: Resource, observed: Observed) -> None:
        # Scaled to 0 and drained first, so the agents stop as a deployment would stop them.
        ecs, cluster = client("ecs"), res.ident["cluster"]
        s = describe_service(cluster, res.name)
        if s is None:
            return  # gone, or already DRAINING after a deletion
        if s.get("desiredCount"):
            out = absent(res.key, ecs.update_service, cluster=cluster, service=res.name, desiredCount=0,
                         missing=MISSING)
            if out is None:
                return
            s = out["service"]
        seen: dict[str, Any] = {"service": s, "polled": False}

        def left() -> int:
            got = seen["service"]
            return 0 if got is None else got.get("runningCount", 0) + got.get("pendingCount", 0)

        def drained() -> bool | None:
            if seen["polled"]:  # the first look is at the answer to scaling it to 0
                seen["service"] = describe_service(cluster, res.name)
            seen["polled"] = True
            return True if left() == 0 else None

        until(drained, timeout=DRAIN_TIMEOUT, interval=POLL_INTERVAL,
              waiting=lambda: f"{res.key}: scaled to 0, {left()} task(s) stopping (up to {DRAIN_TIMEOUT:.0f}s)",
              gave_up=lambda: f"{res.key}: {left()} task(s) still running {DRAIN_TIMEOUT:.0f}s after scaling it to 0"
                              f"\n  next step: see why in its events (`aws ecs describe-services --cluster {cluster} "
                              f"--services {res.name}`), stop them (`aws ecs stop-task`) and re-run the teardown")
        absent(res.key, ecs.delete_service, cluster=cluster, service=res.name, missing=MISSING)
