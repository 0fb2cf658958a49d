"""Application Auto Scaling for the agent service: scalable target and a CPU
target-tracking policy. Neither carries tags of its own: both are addressed by the
agent service's id, so ownership follows the service."""

from __future__ import annotations

from typing import Any

from .aws import client, retry_iam_propagation
from .handler import Handler, call
from .model import Diff, Observed, Resource

DIMENSION = "ecs:service:DesiredCount"


def target_props(low: int, high: int) -> dict[str, Any]:
    return {"min": low, "max": high}


def policy_props(target: float, scale_in: int, scale_out: int) -> dict[str, Any]:
    return {"type": "TargetTrackingScaling", "target_tracking": {
        "TargetValue": float(target),
        "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
        "ScaleInCooldown": scale_in, "ScaleOutCooldown": scale_out, "DisableScaleIn": False}}


class ScalableTargetHandler(Handler):
    kind = "autoscaling.target"
    taggable = False

    def read(self, res: Resource) -> Observed | None:
        found = client("application-autoscaling").describe_scalable_targets(
            ServiceNamespace="ecs", ResourceIds=[res.name], ScalableDimension=DIMENSION).get("ScalableTargets", [])
        if not found:
            return None
        t = found[0]
        return Observed({"min": t["MinCapacity"], "max": t["MaxCapacity"]}, outputs={"resource_id": res.name})

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


def _normalise_tt(cfg: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in cfg.items() if v is not None}
    out["TargetValue"] = float(out.get("TargetValue", 0))
    out.setdefault("DisableScaleIn", False)
    return out


class ScalingPolicyHandler(Handler):
    kind = "autoscaling.policy"
    taggable = False

    def read(self, res: Resource) -> Observed | None:
        found = client("application-autoscaling").describe_scaling_policies(
            ServiceNamespace="ecs", ResourceId=res.ident["resource_id"], ScalableDimension=DIMENSION,
            PolicyNames=[res.name]).get("ScalingPolicies", [])
        if not found:
            return None
        p = found[0]
        props = {"type": p["PolicyType"],
                 "target_tracking": _normalise_tt(p.get("TargetTrackingScalingPolicyConfiguration") or {})}
        return Observed(props, outputs={"arn": p["PolicyARN"]})

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        out = call("PutScalingPolicy", res.key, client("application-autoscaling").put_scaling_policy,
                   PolicyName=res.name, ServiceNamespace="ecs", ResourceId=res.ident["resource_id"],
                   ScalableDimension=DIMENSION, PolicyType=props["type"],
                   TargetTrackingScalingPolicyConfiguration=props["target_tracking"])
        return {"arn": out["PolicyARN"]}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        return self.create(res, props)
