"""CloudWatch log groups with retention and tags."""

from __future__ import annotations

from typing import Any

from .aws import client
from .handler import Handler, call, changed
from .model import Diff, Observed, Resource


def desired_props(retention_days: int, tags: dict[str, str]) -> dict[str, Any]:
    return {"retention_days": retention_days, "tags": tags}


class LogGroupHandler(Handler):
    kind = "logs.group"

    def read(self, res: Resource) -> Observed | None:
        logs = client("logs")
        groups = logs.describe_log_groups(logGroupNamePrefix=res.name).get("logGroups", [])
        group = next((g for g in groups if g["logGroupName"] == res.name), None)
        if group is None:
            return None
        arn = group["arn"].removesuffix(":*")
        tags = logs.list_tags_for_resource(resourceArn=arn).get("tags", {})
        return Observed({"retention_days": group.get("retentionInDays")}, outputs={"arn": arn, "name": res.name},
                        tags=tags)

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        logs = client("logs")
        call("CreateLogGroup", res.key, logs.create_log_group, logGroupName=res.name, tags=props["tags"])
        call("PutRetentionPolicy", res.key, logs.put_retention_policy, logGroupName=res.name,
             retentionInDays=props["retention_days"])
        obs = self.read(res)
        return obs.outputs if obs else {"name": res.name}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        logs = client("logs")
        if changed(diffs, "retention_days"):
            call("PutRetentionPolicy", res.key, logs.put_retention_policy, logGroupName=res.name,
                 retentionInDays=props["retention_days"])
        if changed(diffs, "tags"):
            call("TagResource", res.key, logs.tag_resource, resourceArn=observed.outputs["arn"], tags=props["tags"])
        return observed.outputs
