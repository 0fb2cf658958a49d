"""ECS cluster and the agent service."""

from __future__ import annotations

from typing import Any

from .aws import client, not_found, retry_iam_propagation
from .handler import Handler, call, changed, tag_dict, tag_list
from .model import Diff, Observed, Resource, Within


def cluster_props(tags: dict[str, str]) -> dict[str, Any]:
    return {
        "settings": {"containerInsights": "enabled"},
        "capacity_providers": ["FARGATE", "FARGATE_SPOT"],
        "default_strategy": [{"capacityProvider": "FARGATE", "weight": 1, "base": 0}],
        "tags": tags,
    }


def _strategy(items: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return sorted(({"capacityProvider": s["capacityProvider"], "weight": s.get("weight", 0), "base": s.get("base", 0)}
                   for s in items or []), key=lambda s: s["capacityProvider"])


class ClusterHandler(Handler):
    kind = "ecs.cluster"

    def read(self, res: Resource) -> Observed | None:
        found = client("ecs").describe_clusters(clusters=[res.name], include=["SETTINGS", "TAGS"]).get("clusters", [])
        c = next((c for c in found if c.get("status") == "ACTIVE"), None)
        if c is None:
            return None
        props = {
            "settings": {s["name"]: s["value"] for s in c.get("settings", [])} or None,
            "capacity_providers": sorted(c.get("capacityProviders", [])),
            "default_strategy": _strategy(c.get("defaultCapacityProviderStrategy")),
        }
        return Observed(props, outputs={"arn": c["clusterArn"], "name": res.name},
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


def _network(cfg: dict[str, Any] | None) -> dict[str, Any] | None:
    if not cfg:
        return None
    aws = cfg.get("awsvpcConfiguration", {})
    return {"awsvpcConfiguration": {"subnets": sorted(aws.get("subnets", [])),
                                    "securityGroups": sorted(aws.get("securityGroups", [])),
                                    "assignPublicIp": aws.get("assignPublicIp", "DISABLED")}}


class ServiceHandler(Handler):
    kind = "ecs.service"
    replace_paths = ("launchType",)

    def read(self, res: Resource) -> Observed | None:
        try:
            found = client("ecs").describe_services(cluster=res.ident["cluster"], services=[res.name],
                                                    include=["TAGS"]).get("services", [])
        except Exception as exc:  # noqa: BLE001
            if not_found(exc):  # no cluster yet, so no service
                return None
            raise
        s = next((s for s in found if s.get("status") == "ACTIVE"), None)
        if s is None:
            return None
        dc = s.get("deploymentConfiguration") or {}
        cb = dc.get("deploymentCircuitBreaker") or {}
        props = {
            "taskDefinition": s.get("taskDefinition"),
            "desiredCount": s.get("desiredCount"),
            "launchType": s.get("launchType"),
            "platformVersion": s.get("platformVersion"),
            "networkConfiguration": _network(s.get("networkConfiguration")),
            "deploymentConfiguration": {
                "deploymentCircuitBreaker": {"enable": cb.get("enable", False), "rollback": cb.get("rollback", False)},
                "maximumPercent": dc.get("maximumPercent"), "minimumHealthyPercent": dc.get("minimumHealthyPercent")},
            "propagateTags": s.get("propagateTags", "NONE"),
            "enableECSManagedTags": s.get("enableECSManagedTags", False),
        }
        return Observed(props, outputs={"arn": s["serviceArn"], "name": res.name},
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


def wait_stable(cluster: str, services: list[str], timeout: int = 600) -> None:
    """Wait (bounded) until the agent services run their desired count."""
    client("ecs").get_waiter("services_stable").wait(
        cluster=cluster, services=services, WaiterConfig={"Delay": 15, "MaxAttempts": max(1, timeout // 15)})
