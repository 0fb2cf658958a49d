"""Application Auto Scaling for the agent service: scalable target and a CPU
target-tracking policy. Neither carries tags of its own: both are addressed by the
agent service's id, so ownership follows the service."""

from __future__ import annotations

from typing import Any

from .aws import Missing, absent, client, retry_iam_propagation
from .handler import Handler, call
from .model import Diff, Observed, Resource

DIMENSION = "ecs:service:DesiredCount"
# The Describe calls answer an empty list for a missing target or policy; the shared
# table's ObjectNotFoundException covers the rest.
MISSING = Missing.of("ObjectNotFoundException")

# --- thin calls: "not there" is None ----------------------------------------------------


def describe_scalable_target(resource_id: str) -> dict[str, Any] | None:
    out = absent(f"autoscaling.target/{resource_id}", client("application-autoscaling").describe_scalable_targets,
                 ServiceNamespace="ecs", ResourceIds=[resource_id], ScalableDimension=DIMENSION, missing=MISSING)
    return next(iter((out or {}).get("ScalableTargets", [])), None)


def describe_scaling_policy(resource_id: str, name: str) -> dict[str, Any] | None:
    out = absent(f"autoscaling.policy/{name}", client("application-autoscaling").describe_scaling_policies,
                 ServiceNamespace="ecs", ResourceId=resource_id, ScalableDimension=DIMENSION, PolicyNames=[name],
                 missing=MISSING)
    return next(iter((out or {}).get("ScalingPolicies", [])), None)


# --- normalisers (pure) -------------------------------------------------------------


def normalise_target_tracking(cfg: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in cfg.items() if v is not None}
    out["TargetValue"] = float(out.get("TargetValue", 0))
    out.setdefault("DisableScaleIn", False)
    return out


def normalise_scalable_target(t: dict[str, Any]) -> dict[str, Any]:
    return {"min": t["MinCapacity"], "max": t["MaxCapacity"]}


def normalise_scaling_policy(p: dict[str, Any]) -> dict[str, Any]:
    return {"type": p["PolicyType"],
            "target_tracking": normalise_target_tracking(p.get("TargetTrackingScalingPolicyConfiguration") or {})}


# --- desired properties -------------------------------------------------------------


def target_props(low: int, high: int) -> dict[str, Any]:
    return {"min": low, "max": high}


def policy_props(target: float, scale_in: int, scale_out: int) -> dict[str, Any]:
    return {"type": "TargetTrackingScaling", "target_tracking": {
        "TargetValue": float(target),
        "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
        "ScaleInCooldown": scale_in, "ScaleOutCooldown": scale_out, "DisableScaleIn": False}}


# --- the handlers -------------------------------------------------------------------


class ScalableTargetHandler(Handler):
    kind = "autoscaling.target"
    taggable = False

    def read(self, res: Resource) -> Observed | None:
        t = describe_scalable_target(res.name)
        if t is None:
            return None
        return Observed(normalise_scalable_target(t), outputs={"resource_id": res.name})

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        aas = client("application-autoscaling")
        call("RegisterScalableTarget", res.key, retry_iam_propagation,
             lambda: aas.register_scalable_target(ServiceNamespace="ecs", ResourceId=res.name,
                                                  ScalableDimension=DIMENSION, MinCapacity=props["min"],
                                                  MaxCapacity=props["max"]),
             action="RegisterScalableTarget", resource=res.key)
        return {"resource_id": res.name}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        return self.create(res, props)

    def delete(self, res: Resource, observed: Observed) -> None:
        # Deregistering a target also deletes its scaling policies (and their alarms).
        absent(res.key, client("application-autoscaling").deregister_scalable_target, ServiceNamespace="ecs",
               ResourceId=res.name, ScalableDimension=DIMENSION, missing=MISSING)


class ScalingPolicyHandler(Handler):
    kind = "autoscaling.policy"
    taggable = False

    def read(self, res: Resource) -> Observed | None:
        p = describe_scaling_policy(res.ident["resource_id"], res.name)
        if p is None:
            return None
        return Observed(normalise_scaling_policy(p), outputs={"arn": p["PolicyARN"]})

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        out = call("PutScalingPolicy", res.key, client("application-autoscaling").put_scaling_policy,
                   PolicyName=res.name, ServiceNamespace="ecs", ResourceId=res.ident["resource_id"],
                   ScalableDimension=DIMENSION, PolicyType=props["type"],
                   TargetTrackingScalingPolicyConfiguration=props["target_tracking"])
        return {"arn": out["PolicyARN"]}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        return self.create(res, props)

    def delete(self, res: Resource, observed: Observed) -> None:
        # Already gone when its target was deregistered first: not an error.
        absent(res.key, client("application-autoscaling").delete_scaling_policy, PolicyName=res.name,
               ServiceNamespace="ecs", ResourceId=res.ident["resource_id"], ScalableDimension=DIMENSION,
               missing=MISSING)
