"""IAM roles (trust, inline and managed policies, tags) and the CircleCI OIDC provider."""

from __future__ import annotations

import json
from typing import Any

from . import policy
from .aws import client, error_code, paginate
from .handler import Handler, call, changed, tag_dict, tag_list
from .model import Diff, Observed, Resource


def role_props(trust: dict[str, Any], description: str, inline: dict[str, dict[str, Any]],
               managed: list[str], tags: dict[str, str], max_session: int = 3600) -> dict[str, Any]:
    return {
        "trust": policy.normalise(trust),
        "description": description,
        "max_session_duration": max_session,
        "inline_policies": {name: policy.normalise(doc) for name, doc in inline.items()},
        "managed_policies": sorted(managed),
        "tags": tags,
    }


class RoleHandler(Handler):
    kind = "iam.role"

    def read(self, res: Resource) -> Observed | None:
        iam = client("iam")
        try:
            role = iam.get_role(RoleName=res.name)["Role"]
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) == "NoSuchEntity":
                return None
            raise
        names = list(paginate(iam, "list_role_policies", "PolicyNames", RoleName=res.name))
        inline = {n: policy.normalise(iam.get_role_policy(RoleName=res.name, PolicyName=n)["PolicyDocument"])
                  for n in names}
        managed = sorted(p["PolicyArn"] for p in
                         paginate(iam, "list_attached_role_policies", "AttachedPolicies", RoleName=res.name))
        tags = role.get("Tags")
        if tags is None:
            tags = iam.list_role_tags(RoleName=res.name).get("Tags", [])
        props = {
            "trust": policy.normalise(role["AssumeRolePolicyDocument"]),
            "description": role.get("Description") or "",
            "max_session_duration": role.get("MaxSessionDuration", 3600),
            "inline_policies": inline,
            "managed_policies": managed,
        }
        return Observed(props, outputs={"arn": role["Arn"], "name": res.name}, tags=tag_dict(tags))

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        iam = client("iam")
        role = call("CreateRole", res.key, iam.create_role, RoleName=res.name,
                    AssumeRolePolicyDocument=json.dumps(props["trust"]), Description=props["description"],
                    MaxSessionDuration=props["max_session_duration"], Tags=tag_list(props["tags"]))["Role"]
        for name, doc in props["inline_policies"].items():
            call("PutRolePolicy", res.key, iam.put_role_policy, RoleName=res.name, PolicyName=name,
                 PolicyDocument=json.dumps(doc))
        for arn in props["managed_policies"]:
            call("AttachRolePolicy", res.key, iam.attach_role_policy, RoleName=res.name, PolicyArn=arn)
        return {"arn": role["Arn"], "name": res.name}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        iam, key = client("iam"), res.key
        if changed(diffs, "trust"):
            call("UpdateAssumeRolePolicy", key, iam.update_assume_role_policy, RoleName=res.name,
                 PolicyDocument=json.dumps(props["trust"]))
        if changed(diffs, "description", "max_session_duration"):
            call("UpdateRole", key, iam.update_role, RoleName=res.name, Description=props["description"],
                 MaxSessionDuration=props["max_session_duration"])
        have = observed.props.get("inline_policies") or {}
        for name, doc in props["inline_policies"].items():
            if have.get(name) != doc:
                call("PutRolePolicy", key, iam.put_role_policy, RoleName=res.name, PolicyName=name,
                     PolicyDocument=json.dumps(doc))
        for name in set(have) - set(props["inline_policies"]):
            # An inline policy nobody declared widens the role: least privilege removes it.
            call("DeleteRolePolicy", key, iam.delete_role_policy, RoleName=res.name, PolicyName=name)
        have_managed = set(observed.props.get("managed_policies") or [])
        for arn in sorted(set(props["managed_policies"]) - have_managed):
            call("AttachRolePolicy", key, iam.attach_role_policy, RoleName=res.name, PolicyArn=arn)
        for arn in sorted(have_managed - set(props["managed_policies"])):
            call("DetachRolePolicy", key, iam.detach_role_policy, RoleName=res.name, PolicyArn=arn)
        if changed(diffs, "tags"):
            call("TagRole", key, iam.tag_role, RoleName=res.name, Tags=tag_list(props["tags"]))
        return observed.outputs


class OidcProviderHandler(Handler):
    """The CircleCI org's OIDC provider: created if missing, adopted if present."""

    kind = "iam.oidc_provider"
    adopt_existing = True

    def _find(self, host: str) -> str | None:
        for p in client("iam").list_open_id_connect_providers().get("OpenIDConnectProviderList", []):
            if p["Arn"].endswith(f":oidc-provider/{host}"):
                return p["Arn"]
        return None

    def read(self, res: Resource) -> Observed | None:
        arn = self._find(res.name)
        if arn is None:
            return None
        got = client("iam").get_open_id_connect_provider(OpenIDConnectProviderArn=arn)
        audience = res.ident["audience"]
        props = {"audience_registered": audience in got.get("ClientIDList", [])}
        return Observed(props, outputs={"arn": arn}, tags=tag_dict(got.get("Tags")))

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        out = call("CreateOpenIDConnectProvider", res.key, client("iam").create_open_id_connect_provider,
                   Url=f"https://{res.name}", ClientIDList=[res.ident["audience"]],
                   Tags=tag_list(props.get("tags") or {}))
        return {"arn": out["OpenIDConnectProviderArn"]}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        iam = client("iam")
        if changed(diffs, "audience_registered"):
            call("AddClientIDToOpenIDConnectProvider", res.key, iam.add_client_id_to_open_id_connect_provider,
                 OpenIDConnectProviderArn=observed.outputs["arn"], ClientID=res.ident["audience"])
        if changed(diffs, "tags") and props.get("tags"):
            call("TagOpenIDConnectProvider", res.key, iam.tag_open_id_connect_provider,
                 OpenIDConnectProviderArn=observed.outputs["arn"], Tags=tag_list(props["tags"]))
        return observed.outputs
