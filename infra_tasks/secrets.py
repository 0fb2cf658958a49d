"""The Prefect credentials secret (Secrets Manager).

Its value is only ever held wrapped in `Sensitive`, so it cannot reach a plan, a log
line or an error message. The value is read and compared only when new credentials
are given (PREFECT_API_URL / PREFECT_API_KEY in the environment); otherwise the
existing value is left alone and read-only runs never fetch it.
"""

from __future__ import annotations

import json
from typing import Any

from .aws import InfraError, Missing, absent, client
from .handler import Handler, call, changed, tag_dict, tag_list
from .model import Diff, Observed, Resource, Sensitive

MISSING = Missing.of("ResourceNotFoundException")

# --- thin calls: "not there" is None ----------------------------------------------------


def describe_secret(name: str) -> dict[str, Any] | None:
    return absent(f"secretsmanager.secret/{name}", client("secretsmanager").describe_secret, SecretId=name,
                  missing=MISSING)


def secret_string(name: str, arn: str) -> str | None:
    out = absent(f"secretsmanager.secret/{name}", client("secretsmanager").get_secret_value, SecretId=arn,
                 missing=MISSING)
    return (out or {}).get("SecretString")


# --- normalisers (pure) -------------------------------------------------------------


def parse_secret(raw: str | None) -> Any:
    """A secret string as JSON when it is JSON (ours is), else as it is."""
    try:
        return json.loads(raw or "")
    except ValueError:
        return raw


# --- desired properties -------------------------------------------------------------


def desired_props(tags: dict[str, str], value: Sensitive | None) -> dict[str, Any]:
    return {"description": "Prefect API URL and key for the ECS agents and flow runs", "value": value,
            "tags": tags}


# --- the handler --------------------------------------------------------------------


class SecretHandler(Handler):
    kind = "secretsmanager.secret"
    # The stack we replace required the secret to exist beforehand: adopt it.
    adopt_existing = True

    def create_blocker(self, res: Resource, props: dict[str, Any]) -> str | None:
        if props.get("value") is None and res.ident.get("initial") is None:
            return (f"{res.key} does not exist and no credentials were given: set PREFECT_API_URL and "
                    f"PREFECT_API_KEY in the environment for this run (they are stored, never printed)")
        return None

    def read(self, res: Resource) -> Observed | None:
        meta = describe_secret(res.name)
        if meta is None:
            return None
        tags = tag_dict(meta.get("Tags"))
        if meta.get("DeletedDate"):
            return Observed({"deleted": True}, outputs={"arn": meta["ARN"]}, tags=tags)
        props: dict[str, Any] = {"description": meta.get("Description")}
        if res.props.get("value") is not None:  # rotation asked for: only then is the value read
            props["value"] = Sensitive(parse_secret(secret_string(res.name, meta["ARN"])))
        return Observed(props, outputs={"arn": meta["ARN"], "name": res.name}, tags=tags)

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        blocker = self.create_blocker(res, props)
        if blocker:
            raise InfraError(blocker)
        value = props.get("value") or res.ident["initial"]
        out = call("CreateSecret", res.key, client("secretsmanager").create_secret, Name=res.name,
                   Description=props["description"], SecretString=json.dumps(value.value),
                   Tags=tag_list(props["tags"]))
        return {"arn": out["ARN"], "name": res.name}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        sm = client("secretsmanager")
        if observed.props.get("deleted"):
            raise InfraError(f"{res.key} is scheduled for deletion: restore it with "
                             f"`aws secretsmanager restore-secret --secret-id {res.name}` and re-run")
        if changed(diffs, "description"):
            call("UpdateSecret", res.key, sm.update_secret, SecretId=observed.outputs["arn"],
                 Description=props["description"])
        if changed(diffs, "value"):
            call("PutSecretValue", res.key, sm.put_secret_value, SecretId=observed.outputs["arn"],
                 SecretString=json.dumps(props["value"].value))
        if changed(diffs, "tags"):
            call("TagResource", res.key, sm.tag_resource, SecretId=observed.outputs["arn"],
                 Tags=tag_list(props["tags"]))
        return observed.outputs
