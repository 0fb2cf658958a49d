"""SQS queues for prefect-aws's ECS task-state observer (queue + dead-letter queue)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlparse

from . import policy
from .aws import Missing, absent, attempt, client, until
from .handler import Handler, call, changed
from .model import Diff, Observed, Resource
from .names import arn

MISSING = Missing.of("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
# AWS refuses a queue name for 60 seconds after a queue of that name was deleted (a
# bootstrap right after a teardown): CreateQueue is retried for a bounded time.
DELETED_RECENTLY = ("AWS.SimpleQueueService.QueueDeletedRecently", "QueueDeletedRecently")
RECREATE_TIMEOUT = 90.0
RECREATE_INTERVAL = 10.0
MANAGED_ATTRIBUTES = ("MessageRetentionPeriod", "VisibilityTimeout", "SqsManagedSseEnabled",
                      "RedrivePolicy", "Policy")

# --- thin calls: "not there" is None ----------------------------------------------------


def queue_url(name: str) -> str | None:
    out = absent(f"sqs.queue/{name}", client("sqs").get_queue_url, QueueName=name, missing=MISSING)
    return out["QueueUrl"] if out else None


def queue_attributes(name: str, url: str) -> dict[str, Any]:
    out = absent(f"sqs.queue/{name}", client("sqs").get_queue_attributes, QueueUrl=url, AttributeNames=["All"],
                 missing=MISSING)
    return (out or {}).get("Attributes", {})


def queue_tags(name: str, url: str) -> dict[str, str]:
    return (absent(f"sqs.queue/{name}", client("sqs").list_queue_tags, QueueUrl=url, missing=MISSING)
            or {}).get("Tags", {})


def queue_arn(url: str) -> str:
    """The ARN of the queue at `url` (`…/{account}/{name}`), in the client's partition and region."""
    sqs = client("sqs")
    return queue_arn_of(url, sqs.meta.partition, sqs.meta.region_name)


# --- normalisers (pure) -------------------------------------------------------------


def queue_arn_of(url: str, partition: str, region: str) -> str:
    account, name = urlparse(url).path.strip("/").split("/")[-2:]
    return arn(partition, "sqs", name, region, account)


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


def wire_attributes(attrs: dict[str, Any]) -> dict[str, str]:
    """Attributes as SetQueueAttributes takes them: every value a string, documents as JSON."""
    return {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in attrs.items()}


# --- desired properties -------------------------------------------------------------


def observer_queue_policy(queue_arn: str, rule_arn: str) -> dict[str, Any]:
    return policy.document({
        "Sid": "EcsTaskStateEvents",
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
    })


def queue_props(retention_seconds: int, visibility: int, tags: dict[str, str],
                redrive_to: str | None = None, queue_policy: dict[str, Any] | None = None) -> dict[str, Any]:
    attrs: dict[str, Any] = {"MessageRetentionPeriod": retention_seconds, "VisibilityTimeout": visibility,
                             "SqsManagedSseEnabled": "true"}
    if redrive_to:
        attrs["RedrivePolicy"] = {"deadLetterTargetArn": redrive_to, "maxReceiveCount": 5}
    if queue_policy:
        attrs["Policy"] = queue_policy
    return {"attributes": normalise_attributes(attrs), "tags": tags}


# --- the handler --------------------------------------------------------------------


class QueueHandler(Handler):
    kind = "sqs.queue"

    def read(self, res: Resource) -> Observed | None:
        url = queue_url(res.name)
        if url is None:
            return None
        attrs = queue_attributes(res.name, url)
        if not attrs:  # deleted since GetQueueUrl
            return None
        return Observed({"attributes": normalise_attributes(attrs)},
                        outputs={"url": url, "arn": attrs["QueueArn"], "name": res.name},
                        tags=queue_tags(res.name, url))

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        url = call("CreateQueue", res.key, self._create_queue, res, props)["QueueUrl"]
        return {"url": url, "arn": queue_arn(url), "name": res.name}

    def _create_queue(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        return until(lambda: attempt(client("sqs").create_queue, QueueName=res.name,
                                     Attributes=wire_attributes(props["attributes"]), tags=props["tags"],
                                     busy=DELETED_RECENTLY),
                     timeout=RECREATE_TIMEOUT, interval=RECREATE_INTERVAL,
                     waiting=lambda: f"{res.key}: AWS keeps a deleted queue's name for 60 s after its deletion",
                     gave_up=lambda: f"CreateQueue failed for {res.key}: AWS still holds the name of a queue deleted "
                                     f"{RECREATE_TIMEOUT:.0f}s ago\n  next step: wait a minute and re-run")

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        sqs, url = client("sqs"), observed.outputs["url"]
        if changed(diffs, "attributes"):
            have = observed.props.get("attributes") or {}
            delta = {k: v for k, v in props["attributes"].items() if have.get(k) != v}
            # An attribute nobody declared (e.g. a policy someone added) is cleared.
            delta.update({k: "" for k in have if k not in props["attributes"]})
            call("SetQueueAttributes", res.key, sqs.set_queue_attributes, QueueUrl=url,
                 Attributes=wire_attributes(delta))
        if changed(diffs, "tags"):
            call("TagQueue", res.key, sqs.tag_queue, QueueUrl=url, Tags=props["tags"])
        return observed.outputs

    def delete(self, res: Resource, observed: Observed) -> None:
        absent(res.key, client("sqs").delete_queue, QueueUrl=observed.outputs["url"], missing=MISSING)
