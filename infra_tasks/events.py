"""EventBridge rule sending this cluster's ECS task-state changes to the observer queue."""

from __future__ import annotations

import json
from typing import Any

from .aws import InfraError, Missing, absent, client, paginate
from .handler import Handler, call, changed, tag_dict, tag_list
from .model import Diff, Observed, Resource

MISSING = Missing.of("ResourceNotFoundException")

# --- thin calls: "not there" is None ----------------------------------------------------


def describe_rule(name: str) -> dict[str, Any] | None:
    return absent(f"events.rule/{name}", client("events").describe_rule, Name=name, missing=MISSING)


def rule_targets(name: str) -> list[dict[str, Any]]:
    return (absent(f"events.rule/{name}", client("events").list_targets_by_rule, Rule=name, missing=MISSING)
            or {}).get("Targets", [])


def all_target_ids(name: str) -> list[str] | None:
    """Every target id of the rule, all pages (None: the rule is gone)."""
    return absent(f"events.rule/{name}",
                  lambda: [t["Id"] for t in paginate(client("events"), "list_targets_by_rule", "Targets", Rule=name)],
                  missing=MISSING)


def rule_tags(name: str, arn: str) -> list[dict[str, str]]:
    return (absent(f"events.rule/{name}", client("events").list_tags_for_resource, ResourceARN=arn,
                   missing=MISSING) or {}).get("Tags", [])


# --- normalisers (pure) -------------------------------------------------------------


def normalise_pattern(p: str | dict[str, Any] | None) -> Any:
    if p is None:
        return None
    data = json.loads(p) if isinstance(p, str) else p

    def canon(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: canon(x) for k, x in sorted(v.items())}
        if isinstance(v, list):
            return sorted((canon(x) for x in v), key=lambda x: json.dumps(x, sort_keys=True))
        return v
    return canon(data)


def normalise_rule(rule: dict[str, Any], targets: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "pattern": normalise_pattern(rule.get("EventPattern")),
        "state": rule.get("State"),
        "description": rule.get("Description", ""),
        "targets": {t["Id"]: t["Arn"] for t in targets},
    }


# --- desired properties -------------------------------------------------------------


def task_state_pattern(cluster_arn: str) -> dict[str, Any]:
    return {"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"],
            "detail": {"clusterArn": [cluster_arn]}}


def rule_props(cluster_arn: str, queue_arn: Any, tags: dict[str, str]) -> dict[str, Any]:
    return {
        "pattern": normalise_pattern(task_state_pattern(cluster_arn)),
        "state": "ENABLED",
        "description": "ECS task state changes for the Prefect worker's crash detection",
        "targets": {"observer-queue": queue_arn},
        "tags": tags,
    }


# --- the handler --------------------------------------------------------------------


class RuleHandler(Handler):
    kind = "events.rule"

    def read(self, res: Resource) -> Observed | None:
        rule = describe_rule(res.name)
        if rule is None:
            return None
        return Observed(normalise_rule(rule, rule_targets(res.name)), outputs={"arn": rule["Arn"]},
                        tags=tag_dict(rule_tags(res.name, rule["Arn"])))

    def _put_rule(self, res: Resource, props: dict[str, Any], **extra: Any) -> str:
        return call("PutRule", res.key, client("events").put_rule, Name=res.name,
                    EventPattern=json.dumps(props["pattern"]), State=props["state"],
                    Description=props["description"], **extra)["RuleArn"]

    def _put_targets(self, res: Resource, targets: dict[str, str]) -> None:
        call("PutTargets", res.key, client("events").put_targets, Rule=res.name,
             Targets=[{"Id": i, "Arn": arn} for i, arn in sorted(targets.items())])

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        arn = self._put_rule(res, props, Tags=tag_list(props["tags"]))
        self._put_targets(res, props["targets"])
        return {"arn": arn}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        ev = client("events")
        if changed(diffs, "pattern", "state", "description"):
            self._put_rule(res, props)
        if changed(diffs, "targets"):
            have = observed.props.get("targets") or {}
            extra = sorted(set(have) - set(props["targets"]))
            if extra:
                call("RemoveTargets", res.key, ev.remove_targets, Rule=res.name, Ids=extra)
            self._put_targets(res, props["targets"])
        if changed(diffs, "tags"):
            call("TagResource", res.key, ev.tag_resource, ResourceARN=observed.outputs["arn"],
                 Tags=tag_list(props["tags"]))
        return observed.outputs

    def delete(self, res: Resource, observed: Observed) -> None:
        # EventBridge deletes a rule only once it has no targets.
        ev, ids = client("events"), all_target_ids(res.name) or []
        for i in range(0, len(ids), 100):  # RemoveTargets takes at most 100 ids
            out = absent(res.key, ev.remove_targets, Rule=res.name, Ids=ids[i:i + 100], missing=MISSING) or {}
            failed = out.get("FailedEntries") or []
            if failed:
                shown = "; ".join(f"{f.get('TargetId')}: {f.get('ErrorCode')} {f.get('ErrorMessage', '')}"
                                  for f in failed[:5])
                raise InfraError(f"RemoveTargets failed for {res.key}: {shown}\n  next step: fix the cause and "
                                 f"re-run the teardown")
        absent(res.key, ev.delete_rule, Name=res.name, missing=MISSING)
