"""The Prefect credentials secret (Secrets Manager).

Its value is only ever held wrapped in `Sensitive`, so it cannot reach a plan, a log
line or an error message. The value is read and compared only when new credentials
are given (PREFECT_API_URL / PREFECT_API_KEY in the environment); otherwise the
existing value is left alone and read-only runs never fetch it.

A teardown with `--delete-data` schedules the secret for deletion with the shortest
recovery window AWS allows (`RECOVERY_DAYS`), not the default 30 days and not
immediately: the Prefect credentials stay recoverable for a week (`aws secretsmanager
restore-secret`), while AWS refuses to create a secret with that name until the window
ends. So a secret scheduled for deletion is not "absent" here: it is read with its
deletion date (`scheduled_for_deletion`, shown in the plan), a bootstrap restores it
(RestoreSecret) and sets it to the credentials given for that run if any, as a create
would, and a teardown leaves it as it is.
"""

from __future__ import annotations

import json
from typing import Any

from .aws import ClientError, InfraError, Missing, absent, client, error_code, error_message, translate
from .handler import Handler, call, changed, tag_dict, tag_list
from .model import Diff, Observed, Resource, Sensitive

MISSING = Missing.of("ResourceNotFoundException")
# The shortest recovery window AWS allows (7 to 30 days; the default is 30).
RECOVERY_DAYS = 7

# --- thin calls: "not there" is None ----------------------------------------------------


def describe_secret(name: str) -> dict[str, Any] | None:
    return absent(f"secretsmanager.secret/{name}", client("secretsmanager").describe_secret, SecretId=name,
                  missing=MISSING)


def secret_string(name: str, arn: str) -> str | None:
    out = absent(f"secretsmanager.secret/{name}", client("secretsmanager").get_secret_value, SecretId=arn,
                 missing=MISSING)
    return (out or {}).get("SecretString")


# --- normalisers (pure) -------------------------------------------------------------


def scheduled_for_deletion(observed: Observed | None) -> str | None:
    """When a secret read as `observed` was scheduled for deletion (None: it was not)."""
    return (observed.outputs if observed else {}).get("scheduled_for_deletion")


def deletion_pending(exc: BaseException) -> bool:
    """AWS's answer to an operation on a secret scheduled for deletion (a create with its
    name, a second DeleteSecret): InvalidRequestException "… scheduled/marked for deletion"."""
    return (isinstance(exc, ClientError) and error_code(exc) == "InvalidRequestException"
            and "for deletion" in error_message(exc))


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
    holds_data = True

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
        props: dict[str, Any] = {"description": meta.get("Description")}
        if meta.get("DeletedDate"):
            # Its value cannot be read until it is restored; a bootstrap restores it.
            when = str(meta["DeletedDate"])
            return Observed({**props, "scheduled_for_deletion": when},
                            outputs={"arn": meta["ARN"], "name": res.name, "scheduled_for_deletion": when}, tags=tags)
        if res.props.get("value") is not None:  # rotation asked for: only then is the value read
            props["value"] = Sensitive(parse_secret(secret_string(res.name, meta["ARN"])))
        return Observed(props, outputs={"arn": meta["ARN"], "name": res.name}, tags=tags)

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        blocker = self.create_blocker(res, props)
        if blocker:
            raise InfraError(blocker)
        value = props.get("value") or res.ident["initial"]
        try:
            out = client("secretsmanager").create_secret(
                Name=res.name, Description=props["description"], SecretString=json.dumps(value.value),
                Tags=tag_list(props["tags"]))
        except ClientError as exc:
            if deletion_pending(exc):
                # Deleted without recovery moments ago: AWS frees the name only once it is gone.
                raise InfraError(f"{res.key}: a secret of this name is still being deleted; re-run in a minute "
                                 f"(if it was scheduled for deletion instead, restore it: `aws secretsmanager "
                                 f"restore-secret --secret-id {res.name}`)") from None
            raise translate(exc, "CreateSecret", res.key) from None
        return {"arn": out["ARN"], "name": res.name}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        sm = client("secretsmanager")
        if scheduled_for_deletion(observed):
            # A teardown with --delete-data scheduled it: bring it back (with its tags), and
            # give it the credentials given for this run, as creating it would.
            call("RestoreSecret", res.key, sm.restore_secret, SecretId=observed.outputs["arn"])
            initial = res.ident.get("initial")
            if props.get("value") is None and initial is not None:
                call("PutSecretValue", res.key, sm.put_secret_value, SecretId=observed.outputs["arn"],
                     SecretString=json.dumps(initial.value))
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

    def delete(self, res: Resource, observed: Observed) -> None:
        if scheduled_for_deletion(observed):
            return  # by an earlier teardown: AWS deletes it when its recovery window ends
        try:
            client("secretsmanager").delete_secret(SecretId=observed.outputs["arn"],
                                                   RecoveryWindowInDays=RECOVERY_DAYS)
        except ClientError as exc:
            if not (MISSING(exc) or deletion_pending(exc)):
                raise translate(exc, "DeleteSecret", res.key) from None
