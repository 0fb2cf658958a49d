"""CloudWatch log groups with retention and tags."""

from __future__ import annotations

from typing import Any

from .aws import Missing, absent, client
from .handler import Handler, call, changed
from .model import Diff, Observed, Resource

MISSING = Missing.of("ResourceNotFoundException")

# --- thin calls: "not there" is None ----------------------------------------------------


def describe_log_group(name: str) -> dict[str, Any] | None:
    """DescribeLogGroups filters by prefix only: the group named exactly `name`."""
    out = absent(f"logs.group/{name}", client("logs").describe_log_groups, logGroupNamePrefix=name,
                 missing=MISSING)
    return next((g for g in (out or {}).get("logGroups", []) if g["logGroupName"] == name), None)


def log_group_tags(name: str, arn: str) -> dict[str, str]:
    return (absent(f"logs.group/{name}", client("logs").list_tags_for_resource, resourceArn=arn,
                   missing=MISSING) or {}).get("tags", {})


# --- normalisers (pure) -------------------------------------------------------------


def log_group_arn(group: dict[str, Any]) -> str:
    # DescribeLogGroups' `arn` ends in ":*" (its streams); tagging wants the group's own ARN.
    return group["arn"].removesuffix(":*")


def normalise_log_group(group: dict[str, Any]) -> dict[str, Any]:
    return {"retention_days": group.get("retentionInDays")}


# --- desired properties -------------------------------------------------------------


def desired_props(retention_days: int, tags: dict[str, str]) -> dict[str, Any]:
    return {"retention_days": retention_days, "tags": tags}


# --- the handler --------------------------------------------------------------------


class LogGroupHandler(Handler):
    kind = "logs.group"
    holds_data = True

    def read(self, res: Resource) -> Observed | None:
        group = describe_log_group(res.name)
        if group is None:
            return None
        arn = log_group_arn(group)
        return Observed(normalise_log_group(group), outputs={"arn": arn, "name": res.name},
                        tags=log_group_tags(res.name, arn))

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        logs = client("logs")
        call("CreateLogGroup", res.key, logs.create_log_group, logGroupName=res.name, tags=props["tags"])
        call("PutRetentionPolicy", res.key, logs.put_retention_policy, logGroupName=res.name,
             retentionInDays=props["retention_days"])
        # Read, not decided: CreateLogGroup answers nothing, and the ARN (an output, like every
        # kind's) holds the account id, which a handler does not know.
        group = describe_log_group(res.name)
        return {"arn": log_group_arn(group), "name": res.name} if group else {"name": res.name}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        logs = client("logs")
        if changed(diffs, "retention_days"):
            call("PutRetentionPolicy", res.key, logs.put_retention_policy, logGroupName=res.name,
                 retentionInDays=props["retention_days"])
        if changed(diffs, "tags"):
            call("TagResource", res.key, logs.tag_resource, resourceArn=observed.outputs["arn"], tags=props["tags"])
        return observed.outputs

    def delete(self, res: Resource, observed: Observed) -> None:
        absent(res.key, client("logs").delete_log_group, logGroupName=res.name, missing=MISSING)
