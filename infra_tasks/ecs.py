"""ECS cluster and the agent service (one handler each)."""

from __future__ import annotations

from typing import Any

from .aws import Missing, absent, client, retry_iam_propagation
from .handler import Handler, call, changed, tag_dict, tag_list
from .model import Diff, Observed, Resource, Within

# DescribeClusters / DescribeServices report a missing name in `failures`, not as an
# error; DescribeServices raises ClusterNotFoundException when the cluster is missing.
MISSING = Missing.of("ClusterNotFoundException", "ServiceNotFoundException")

# --- thin calls: "not there" is None ----------------------------------------------------


def describe_cluster(name: str) -> dict[str, Any] | None:
    out = absent(f"ecs.cluster/{name}", client("ecs").describe_clusters, clusters=[name],
                 include=["SETTINGS", "TAGS"], missing=MISSING)
    return active((out or {}).get("clusters"))


def describe_service(cluster: str, name: str) -> dict[str, Any] | None:
    out = absent(f"ecs.service/{name}", client("ecs").describe_services, cluster=cluster, services=[name],
                 include=["TAGS"], missing=MISSING)
    return active((out or {}).get("services"))


def wait_stable(cluster: str, services: list[str], timeout: int = 600) -> None:
    """Wait (bounded) until the agent services run their desired count."""
    client("ecs").get_waiter("services_stable").wait(
        cluster=cluster, services=services, WaiterConfig={"Delay": 15, "MaxAttempts": max(1, timeout // 15)})


# --- normalisers (pure) -------------------------------------------------------------


def active(found: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The ACTIVE one among described clusters/services (INACTIVE ones linger after deletion)."""
    return next((x for x in found or [] if x.get("status") == "ACTIVE"), None)


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
