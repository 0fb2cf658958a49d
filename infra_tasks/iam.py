"""IAM roles (trust, inline and managed policies, tags) and the CircleCI OIDC provider."""

from __future__ import annotations

import json
from typing import Any

from . import policy
from .aws import client, error_code, paginate
from .handler import Handler, call, changed, tag_dict, tag_list
from .model import Diff, Observed, Resource


def role_props(trust: dict[str, Any], description: str, inline: dict[str, dict[str, Any]],
               managed: list[str], tags: dict[str, str], max_session: int = 3600,
               boundary: str | None = None) -> dict[str, Any]:
    """`boundary` None: the role's permissions boundary is not managed (control-plane
    roles, which only an administrator changes)."""
    return {
        "trust": policy.normalise(trust),
        "description": description,
        "max_session_duration": max_session,
        "inline_policies": {name: policy.normalise(doc) for name, doc in inline.items()},
        "managed_policies": sorted(managed),
        "permissions_boundary": boundary,
        "tags": tags,
    }


def managed_policy_props(doc: dict[str, Any], description: str, tags: dict[str, str]) -> dict[str, Any]:
    return {"document": policy.normalise(doc), "description": description, "tags": tags}


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
            "permissions_boundary": (role.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn"),
        }
        return Observed(props, outputs={"arn": role["Arn"], "name": res.name}, tags=tag_dict(tags))

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        iam = client("iam")
        extra = {"PermissionsBoundary": props["permissions_boundary"]} if props.get("permissions_boundary") else {}
        role = call("CreateRole", res.key, iam.create_role, RoleName=res.name,
                    AssumeRolePolicyDocument=json.dumps(props["trust"]), Description=props["description"],
                    MaxSessionDuration=props["max_session_duration"], Tags=tag_list(props["tags"]), **extra)["Role"]
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
        if changed(diffs, "permissions_boundary") and props.get("permissions_boundary"):
            call("PutRolePermissionsBoundary", key, iam.put_role_permissions_boundary, RoleName=res.name,
                 PermissionsBoundary=props["permissions_boundary"])
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


class ManagedPolicyHandler(Handler):
    """A customer managed policy (the runtime roles' permissions boundaries). A changed
    document becomes a new default version; the oldest spare version is deleted first,
    since IAM keeps at most five."""

    kind = "iam.policy"
    replace_paths = ("description",)

    def _arn(self, res: Resource) -> str:
        return res.ident["arn"]

    def read(self, res: Resource) -> Observed | None:
        iam = client("iam")
        try:
            pol = iam.get_policy(PolicyArn=self._arn(res))["Policy"]
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) == "NoSuchEntity":
                return None
            raise
        version = iam.get_policy_version(PolicyArn=pol["Arn"], VersionId=pol["DefaultVersionId"])["PolicyVersion"]
        tags = pol.get("Tags")
        if tags is None:
            tags = iam.list_policy_tags(PolicyArn=pol["Arn"]).get("Tags", [])
        props = {"document": policy.normalise(version["Document"]), "description": pol.get("Description") or ""}
        return Observed(props, outputs={"arn": pol["Arn"]}, tags=tag_dict(tags))

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        out = call("CreatePolicy", res.key, client("iam").create_policy, PolicyName=res.name,
                   PolicyDocument=json.dumps(props["document"]), Description=props["description"],
                   Tags=tag_list(props["tags"]))["Policy"]
        return {"arn": out["Arn"]}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        iam, arn = client("iam"), observed.outputs["arn"]
        if changed(diffs, "document"):
            versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
            spare = sorted((v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"])
            if len(versions) >= 5 and spare:
                call("DeletePolicyVersion", res.key, iam.delete_policy_version, PolicyArn=arn,
                     VersionId=spare[0]["VersionId"])
            call("CreatePolicyVersion", res.key, iam.create_policy_version, PolicyArn=arn,
                 PolicyDocument=json.dumps(props["document"]), SetAsDefault=True)
        if changed(diffs, "tags"):
            call("TagPolicy", res.key, iam.tag_policy, PolicyArn=arn, Tags=tag_list(props["tags"]))
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
