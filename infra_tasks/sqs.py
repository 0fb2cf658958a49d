"""SQS queues for prefect-aws's ECS task-state observer (queue + dead-letter queue)."""

from __future__ import annotations

import json
from typing import Any

from . import policy
from .aws import client, error_code
from .handler import Handler, call, changed
from .model import Diff, Observed, Resource

MANAGED_ATTRIBUTES = ("MessageRetentionPeriod", "VisibilityTimeout", "SqsManagedSseEnabled",
                      "RedrivePolicy", "Policy")


def observer_queue_policy(queue_arn: str, rule_arn: str) -> dict[str, Any]:
    return policy.document({
        "Sid": "EcsTaskStateEvents",
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
    })


def normalise_attributes(attrs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in MANAGED_ATTRIBUTES:
        v = attrs.get(k)
        if v in (None, ""):
            continue
        if k == "RedrivePolicy":
            v = json.loads(v) if isinstance(v, str) else dict(v)
            v = {"deadLetterTargetArn": v["deadLetterTargetArn"], "maxReceiveCount": int(v["maxReceiveCount"])}
        elif k == "Policy":
            v = policy.normalise(v)
        elif k == "SqsManagedSseEnabled":
            v = str(v).lower()
        else:
            v = str(v)
        out[k] = v
    return out


def queue_props(retention_seconds: int, visibility: int, tags: dict[str, str],
                redrive_to: str | None = None, queue_policy: dict[str, Any] | None = None) -> dict[str, Any]:
    attrs: dict[str, Any] = {"MessageRetentionPeriod": retention_seconds, "VisibilityTimeout": visibility,
                             "SqsManagedSseEnabled": "true"}
    if redrive_to:
        attrs["RedrivePolicy"] = {"deadLetterTargetArn": redrive_to, "maxReceiveCount": 5}
    if queue_policy:
        attrs["Policy"] = queue_policy
    return {"attributes": normalise_attributes(attrs), "tags": tags}


def _wire(attrs: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in attrs.items()}


class QueueHandler(Handler):
    kind = "sqs.queue"

    def read(self, res: Resource) -> Observed | None:
        sqs = client("sqs")
        try:
            url = sqs.get_queue_url(QueueName=res.name)["QueueUrl"]
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
                return None
            raise
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]).get("Attributes", {})
        tags = sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
        return Observed({"attributes": normalise_attributes(attrs)},
                        outputs={"url": url, "arn": attrs["QueueArn"], "name": res.name}, tags=tags)

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        sqs = client("sqs")
        url = call("CreateQueue", res.key, sqs.create_queue, QueueName=res.name,
                   Attributes=_wire(props["attributes"]), tags=props["tags"])["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return {"url": url, "arn": arn, "name": res.name}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        sqs, url = client("sqs"), observed.outputs["url"]
        if changed(diffs, "attributes"):
            have = observed.props.get("attributes") or {}
            delta = {k: v for k, v in props["attributes"].items() if have.get(k) != v}
            # An attribute nobody declared (e.g. a policy someone added) is cleared.
            delta.update({k: "" for k in have if k not in props["attributes"]})
            call("SetQueueAttributes", res.key, sqs.set_queue_attributes, QueueUrl=url, Attributes=_wire(delta))
        if changed(diffs, "tags"):
            call("TagQueue", res.key, sqs.tag_queue, QueueUrl=url, Tags=props["tags"])
        return observed.outputs
