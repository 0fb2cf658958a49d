"""IAM roles (trust, inline and managed policies, tags), customer managed policies and
the CircleCI OIDC provider.

Deleting: a role goes with its attached and inline policies and instance-profile
memberships. A managed policy (the runtime roles' permissions boundary) and the OIDC
provider are deleted only when nothing outside this environment uses them; "this
environment's" is an IAM role carrying the same ownership and environment tags
(`managed-by`, `environment`) as the policy or provider itself. Users and groups are never
ours (the project creates none).
"""

from __future__ import annotations

import json
from typing import Any

from . import policy
from .aws import InfraError, Missing, absent, client, paginate
from .handler import Handler, call, changed, tag_dict, tag_list
from .model import OWNER_TAG, Diff, Observed, Resource

MISSING = Missing.of("NoSuchEntity")

# --- thin calls: "not there" is None ----------------------------------------------------


def get_role(name: str) -> dict[str, Any] | None:
    out = absent(f"iam.role/{name}", client("iam").get_role, RoleName=name, missing=MISSING)
    return out["Role"] if out else None


def role_tags(name: str) -> list[dict[str, str]]:
    return (absent(f"iam.role/{name}", client("iam").list_role_tags, RoleName=name, missing=MISSING) or {}).get(
        "Tags", [])


def inline_policies(name: str) -> dict[str, Any]:
    """Name -> document of the role's inline policies (one removed meanwhile is left out)."""
    iam, out = client("iam"), {}
    for n in paginate(iam, "list_role_policies", "PolicyNames", RoleName=name):
        got = absent(f"iam.role/{name}", iam.get_role_policy, RoleName=name, PolicyName=n, missing=MISSING)
        if got:
            out[n] = got["PolicyDocument"]
    return out


def attached_policies(name: str) -> list[str]:
    return [p["PolicyArn"] for p in paginate(client("iam"), "list_attached_role_policies", "AttachedPolicies",
                                             RoleName=name)]


def inline_policy_names(name: str) -> list[str]:
    return list(paginate(client("iam"), "list_role_policies", "PolicyNames", RoleName=name))


def instance_profiles_of(name: str) -> list[str]:
    return [p["InstanceProfileName"] for p in paginate(client("iam"), "list_instance_profiles_for_role",
                                                       "InstanceProfiles", RoleName=name)]


def role_owner(name: str) -> tuple[str, str | None] | None:
    """Whose the role is (see `ownership`; None: untagged, or the role is gone)."""
    return ownership(tag_dict(role_tags(name)))


def policy_users(arn: str) -> list[tuple[str, str, str]]:
    """Who uses the managed policy: (`role`/`user`/`group`, name, `attached`/`boundary`).
    ListEntitiesForPolicy tells the two uses apart only when asked for one at a time."""
    out = []
    for usage, flt in (("attached", "PermissionsPolicy"), ("boundary", "PermissionsBoundary")):
        for page in client("iam").get_paginator("list_entities_for_policy").paginate(
                PolicyArn=arn, PolicyUsageFilter=flt):
            for kind, key, name_key in (("role", "PolicyRoles", "RoleName"), ("user", "PolicyUsers", "UserName"),
                                        ("group", "PolicyGroups", "GroupName")):
                out += [(kind, e[name_key], usage) for e in page.get(key, [])]
    return sorted(set(out))


def roles_trusting(provider_arn: str) -> list[str]:
    """Roles whose trust policy names the OIDC provider (ListRoles carries trust policies)."""
    return sorted(r["RoleName"] for r in paginate(client("iam"), "list_roles", "Roles")
                  if provider_arn in json.dumps(r.get("AssumeRolePolicyDocument") or {}))


def get_policy(arn: str) -> dict[str, Any] | None:
    out = absent(f"iam.policy/{arn}", client("iam").get_policy, PolicyArn=arn, missing=MISSING)
    return out["Policy"] if out else None


def policy_document(arn: str, version_id: str) -> Any:
    out = absent(f"iam.policy/{arn}", client("iam").get_policy_version, PolicyArn=arn, VersionId=version_id,
                 missing=MISSING)
    return out["PolicyVersion"]["Document"] if out else None


def policy_tags(arn: str) -> list[dict[str, str]]:
    return (absent(f"iam.policy/{arn}", client("iam").list_policy_tags, PolicyArn=arn, missing=MISSING)
            or {}).get("Tags", [])


def policy_versions(arn: str) -> list[dict[str, Any]]:
    return client("iam").list_policy_versions(PolicyArn=arn)["Versions"]


def oidc_provider_arns() -> list[str]:
    return [p["Arn"] for p in client("iam").list_open_id_connect_providers().get("OpenIDConnectProviderList", [])]


def get_oidc_provider(arn: str) -> dict[str, Any] | None:
    return absent(f"iam.oidc_provider/{arn}", client("iam").get_open_id_connect_provider,
                  OpenIDConnectProviderArn=arn, missing=MISSING)


# --- normalisers (pure) -------------------------------------------------------------


def normalise_role(role: dict[str, Any], inline: dict[str, Any], managed: list[str]) -> dict[str, Any]:
    """GetRole's role, its inline policy documents and attached policy ARNs -> properties."""
    return {
        "trust": policy.normalise(role["AssumeRolePolicyDocument"]),
        "description": role.get("Description") or "",
        "max_session_duration": role.get("MaxSessionDuration", 3600),
        "inline_policies": {n: policy.normalise(doc) for n, doc in inline.items()},
        "managed_policies": sorted(managed),
        "permissions_boundary": (role.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn"),
    }


def normalise_managed_policy(pol: dict[str, Any], document: Any) -> dict[str, Any]:
    return {"document": policy.normalise(document), "description": pol.get("Description") or ""}


def oidc_provider_for(arns: list[str], host: str) -> str | None:
    """The provider ARN of `host` among `arns` (IAM has no lookup by URL)."""
    return next((a for a in arns if a.endswith(f":oidc-provider/{host}")), None)


def ownership(tags: dict[str, str]) -> tuple[str, str | None] | None:
    """Whose a resource is by its tags: (ownership tag, environment tag); None without an
    ownership tag."""
    return (tags[OWNER_TAG], tags.get("environment")) if tags.get(OWNER_TAG) else None


def foreign_users(users: list[tuple[str, str, str]], owners: dict[str, Any],
                  owner: tuple[str, str | None] | None) -> list[str]:
    """Those of a policy's `users` not of this environment (`owners`: role name -> its
    `ownership`), as "role x (attached)"."""
    return [f"{kind} {name} ({'permissions boundary' if usage == 'boundary' else usage})"
            for kind, name, usage in users if kind != "role" or owner is None or owners.get(name) != owner]


def spare_version(versions: list[dict[str, Any]]) -> str | None:
    """The version to delete before adding one: IAM keeps at most five per policy."""
    spare = sorted((v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"])
    return spare[0]["VersionId"] if len(versions) >= 5 and spare else None


# --- desired properties -------------------------------------------------------------


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


# --- the handlers -------------------------------------------------------------------


class RoleHandler(Handler):
    kind = "iam.role"

    def read(self, res: Resource) -> Observed | None:
        role = get_role(res.name)
        if role is None:
            return None
        tags = role.get("Tags")
        if tags is None:  # GetRole leaves out Tags on some endpoints
            tags = role_tags(res.name)
        props = normalise_role(role, inline_policies(res.name), attached_policies(res.name))
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

    def delete(self, res: Resource, observed: Observed) -> None:
        # IAM deletes a role only once nothing hangs on it; listed afresh (not taken from
        # `observed`), so a run killed half-way through finishes from where it stopped.
        iam, key, name = client("iam"), res.key, res.name
        for arn in absent(key, attached_policies, name, missing=MISSING) or []:
            absent(key, iam.detach_role_policy, RoleName=name, PolicyArn=arn, missing=MISSING)
        for policy_name in absent(key, inline_policy_names, name, missing=MISSING) or []:
            absent(key, iam.delete_role_policy, RoleName=name, PolicyName=policy_name, missing=MISSING)
        for profile in absent(key, instance_profiles_of, name, missing=MISSING) or []:
            absent(key, iam.remove_role_from_instance_profile, InstanceProfileName=profile, RoleName=name,
                   missing=MISSING)
        absent(key, iam.delete_role, RoleName=name, missing=MISSING)


class ManagedPolicyHandler(Handler):
    """A customer managed policy (the runtime roles' permissions boundaries). A changed
    document becomes a new default version; the oldest spare version is deleted first,
    since IAM keeps at most five."""

    kind = "iam.policy"
    replace_paths = ("description",)

    def read(self, res: Resource) -> Observed | None:
        pol = get_policy(res.ident["arn"])
        if pol is None:
            return None
        tags = pol.get("Tags")
        if tags is None:
            tags = policy_tags(pol["Arn"])
        props = normalise_managed_policy(pol, policy_document(pol["Arn"], pol["DefaultVersionId"]))
        return Observed(props, outputs={"arn": pol["Arn"]}, tags=tag_dict(tags))

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        out = call("CreatePolicy", res.key, client("iam").create_policy, PolicyName=res.name,
                   PolicyDocument=json.dumps(props["document"]), Description=props["description"],
                   Tags=tag_list(props["tags"]))["Policy"]
        return {"arn": out["Arn"]}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        iam, arn = client("iam"), observed.outputs["arn"]
        if changed(diffs, "document"):
            # Read here, not in read(): only a new version needs room (IAM keeps five), and
            # the read-only role that plans (infra-read) is not granted iam:ListPolicyVersions.
            spare = spare_version(policy_versions(arn))
            if spare:
                call("DeletePolicyVersion", res.key, iam.delete_policy_version, PolicyArn=arn, VersionId=spare)
            call("CreatePolicyVersion", res.key, iam.create_policy_version, PolicyArn=arn,
                 PolicyDocument=json.dumps(props["document"]), SetAsDefault=True)
        if changed(diffs, "tags"):
            call("TagPolicy", res.key, iam.tag_policy, PolicyArn=arn, Tags=tag_list(props["tags"]))
        return observed.outputs

    def _users(self, res: Resource, observed: Observed) -> tuple[list[tuple[str, str, str]], str | None]:
        """Who uses the policy, and why that stops a teardown when some are not of this environment."""
        users = absent(res.key, policy_users, observed.outputs["arn"], missing=MISSING) or []
        owners = {name: role_owner(name) for kind, name, _ in users if kind == "role"}
        foreign = foreign_users(users, owners, ownership(observed.tags))
        return users, (f"{res.key} is used by {', '.join(foreign)}, not of this environment; a teardown never "
                       f"changes others' resources: detach it from them (or have their owner do so) and re-run"
                       if foreign else None)

    def delete_blocker(self, res: Resource, observed: Observed) -> str | None:
        return self._users(res, observed)[1]

    def delete(self, res: Resource, observed: Observed) -> None:
        iam, arn = client("iam"), observed.outputs["arn"]
        users, blocker = self._users(res, observed)  # again: someone may have attached it since the plan
        if blocker:
            raise InfraError(blocker)
        # Still the boundary of one of our roles: that role's deletion comes first. Removing
        # the boundary instead would widen a role that is still there.
        bounded = [name for _, name, usage in users if usage == "boundary"]
        if bounded:
            raise InfraError(f"{res.key} is still the permissions boundary of role(s) {', '.join(bounded)}; delete "
                             f"them first (they are part of this teardown: re-run it once they are gone)")
        for _, name, _ in users:  # our roles: detaching only narrows what they may do
            absent(res.key, iam.detach_role_policy, RoleName=name, PolicyArn=arn, missing=MISSING)
        # DeletePolicy deletes the default version; the others must go first.
        for v in absent(res.key, policy_versions, arn, missing=MISSING) or []:
            if not v["IsDefaultVersion"]:
                absent(res.key, iam.delete_policy_version, PolicyArn=arn, VersionId=v["VersionId"], missing=MISSING)
        absent(res.key, iam.delete_policy, PolicyArn=arn, missing=MISSING)


class OidcProviderHandler(Handler):
    """The CircleCI org's OIDC provider: created if missing, adopted if present."""

    kind = "iam.oidc_provider"
    adopt_existing = True

    def read(self, res: Resource) -> Observed | None:
        arn = oidc_provider_for(oidc_provider_arns(), res.name)
        got = get_oidc_provider(arn) if arn else None
        if got is None:
            return None
        props = {"audience_registered": res.ident["audience"] in got.get("ClientIDList", [])}
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

    def delete_blocker(self, res: Resource, observed: Observed) -> str | None:
        # One provider per CircleCI org and account: other stacks' roles may trust it even
        # when we created it. Ours (the CI roles) are deleted before it.
        owner = ownership(observed.tags)
        foreign = [r for r in roles_trusting(observed.outputs["arn"]) if owner is None or role_owner(r) != owner]
        if foreign:
            return (f"{res.key} is trusted by role(s) {', '.join(foreign)}, not of this environment: they would lose "
                    f"CircleCI access; keep it (or remove it from their trust policies first)")
        return None

    def delete(self, res: Resource, observed: Observed) -> None:
        absent(res.key, client("iam").delete_open_id_connect_provider,
               OpenIDConnectProviderArn=observed.outputs["arn"], missing=MISSING)
