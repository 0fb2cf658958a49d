"""Network: resolving the configured VPC and subnets (facts), and security groups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .aws import InfraError, Missing, absent, attempt, client, paginate, until
from .config import Network
from .handler import Handler, call, changed, tag_dict, tag_list
from .model import Diff, Observed, Resource

# Describe calls filtered by name answer an empty list; by id, these codes.
MISSING = Missing.of("InvalidGroup.NotFound", "InvalidVpcID.NotFound", "InvalidSubnetID.NotFound")

# A security group stays in use for minutes after what used it went: AWS releases the
# network interfaces of stopped Fargate tasks late. A teardown retries its deletion so long.
SG_DELETE_TIMEOUT = 600.0
SG_DELETE_INTERVAL = 15.0

# --- thin calls: "not there" is None ----------------------------------------------------


def describe_vpcs(what: str, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return (absent(what, client("ec2").describe_vpcs, Filters=filters, missing=MISSING) or {}).get("Vpcs", [])


def describe_subnets(filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list(paginate(client("ec2"), "describe_subnets", "Subnets", Filters=filters))


def describe_security_group(name: str, vpc_id: str) -> dict[str, Any] | None:
    out = absent(f"ec2.security_group/{name}", client("ec2").describe_security_groups, Filters=[
        {"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}], missing=MISSING)
    return next(iter((out or {}).get("SecurityGroups", [])), None)


def security_group_users(group_id: str) -> list[str]:
    """What keeps a security group from being deleted: network interfaces in it, and other
    groups whose rules refer to it."""
    ec2 = client("ec2")
    enis = [f"network interface {n['NetworkInterfaceId']} "
            f"({n.get('Description') or n.get('InterfaceType') or 'no description'}, {n.get('Status')})"
            for n in paginate(ec2, "describe_network_interfaces", "NetworkInterfaces",
                              Filters=[{"Name": "group-id", "Values": [group_id]}])]
    referring = {g["GroupId"]: g.get("GroupName", "")
                 for flt in ("ip-permission.group-id", "egress.ip-permission.group-id")
                 for g in paginate(ec2, "describe_security_groups", "SecurityGroups",
                                   Filters=[{"Name": flt, "Values": [group_id]}]) if g["GroupId"] != group_id}
    return enis + [f"rules of {gid} ({name})" for gid, name in sorted(referring.items())]


# --- facts: the configured network, resolved once per run -----------------------------


@dataclass(frozen=True)
class NetworkFacts:
    vpc_id: str
    subnet_ids: tuple[str, ...]
    public_subnets: tuple[str, ...]


def resolve_network(net: Network, where: str) -> NetworkFacts:
    """Find the VPC and subnets `net` selects; an error names the selector and the fix."""
    sel = net.vpc
    if sel.id:
        what, flt = f"{where}.network.vpc.id = {sel.id!r}", {"Name": "vpc-id", "Values": [sel.id]}
    elif sel.name:
        what, flt = f"{where}.network.vpc.name = {sel.name!r}", {"Name": "tag:Name", "Values": [sel.name]}
    else:
        what, flt = f"{where}.network.vpc.default = true", {"Name": "is-default", "Values": ["true"]}
    vpcs = describe_vpcs(what, [flt])
    if len(vpcs) != 1:
        found = ", ".join(v["VpcId"] for v in vpcs) or "none"
        raise InfraError(f"{what}: expected exactly one VPC, found {found}; set network.vpc to an existing VPC's "
                         f"id or Name tag")
    vpc_id = vpcs[0]["VpcId"]
    filters = [{"Name": "vpc-id", "Values": [vpc_id]}]
    if net.subnets.ids:
        filters.append({"Name": "subnet-id", "Values": list(net.subnets.ids)})
    for k, v in (net.subnets.tags or {}).items():
        filters.append({"Name": f"tag:{k}", "Values": [v]})
    subnets = describe_subnets(filters)
    if net.subnets.ids:
        missing = sorted(set(net.subnets.ids) - {s["SubnetId"] for s in subnets})
        if missing:
            raise InfraError(f"{where}.network.subnets.ids: {', '.join(missing)} not found in {vpc_id}")
    if not subnets:
        raise InfraError(f"{where}.network.subnets: no subnet of {vpc_id} matches {net.subnets.model_dump(exclude_defaults=True)}")
    ids = tuple(sorted(s["SubnetId"] for s in subnets))
    public = tuple(sorted(s["SubnetId"] for s in subnets if s.get("MapPublicIpOnLaunch")))
    return NetworkFacts(vpc_id, ids, public)


# --- normalisers (pure) -------------------------------------------------------------


def flatten_rules(perms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """IpPermissions -> one sorted dict per (protocol, ports, target)."""
    out = []
    for p in perms or []:
        proto = str(p.get("IpProtocol"))
        base = {"protocol": proto,
                "from": None if proto == "-1" else p.get("FromPort"),
                "to": None if proto == "-1" else p.get("ToPort")}
        for r in p.get("IpRanges", []):
            out.append({**base, "cidr": r["CidrIp"]})
        for r in p.get("Ipv6Ranges", []):
            out.append({**base, "cidr": r["CidrIpv6"]})
        for r in p.get("UserIdGroupPairs", []):
            out.append({**base, "cidr": "sg:" + r["GroupId"]})
        for r in p.get("PrefixListIds", []):
            out.append({**base, "cidr": "pl:" + r["PrefixListId"]})
    return sorted(out, key=lambda r: (r["protocol"], str(r["from"]), str(r["to"]), r["cidr"]))


def to_permission(rule: dict[str, Any]) -> dict[str, Any]:
    perm: dict[str, Any] = {"IpProtocol": rule["protocol"]}
    if rule["protocol"] != "-1":
        perm.update(FromPort=rule["from"], ToPort=rule["to"])
    cidr = rule["cidr"]
    if cidr.startswith("sg:"):
        perm["UserIdGroupPairs"] = [{"GroupId": cidr[3:]}]
    elif cidr.startswith("pl:"):
        perm["PrefixListIds"] = [{"PrefixListId": cidr[3:]}]
    elif ":" in cidr:
        perm["Ipv6Ranges"] = [{"CidrIpv6": cidr}]
    else:
        perm["IpRanges"] = [{"CidrIp": cidr}]
    return perm


def normalise_security_group(g: dict[str, Any]) -> dict[str, Any]:
    return {"description": g.get("Description"), "vpc_id": g["VpcId"],
            "ingress": flatten_rules(g.get("IpPermissions")),
            "egress": flatten_rules(g.get("IpPermissionsEgress"))}


# --- desired properties -------------------------------------------------------------

ALL_EGRESS = [{"protocol": "-1", "from": None, "to": None, "cidr": "0.0.0.0/0"}]


def sg_props(description: str, vpc_id: str, tags: dict[str, str]) -> dict[str, Any]:
    return {"description": description, "vpc_id": vpc_id, "ingress": [], "egress": list(ALL_EGRESS), "tags": tags}


# --- the handler --------------------------------------------------------------------


class SecurityGroupHandler(Handler):
    kind = "ec2.security_group"
    replace_paths = ("description", "vpc_id")

    def read(self, res: Resource) -> Observed | None:
        g = describe_security_group(res.name, res.ident["vpc_id"])
        if g is None:
            return None
        return Observed(normalise_security_group(g), outputs={"id": g["GroupId"]}, tags=tag_dict(g.get("Tags")))

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        out = call("CreateSecurityGroup", res.key, client("ec2").create_security_group, GroupName=res.name,
                   Description=props["description"], VpcId=props["vpc_id"],
                   TagSpecifications=[{"ResourceType": "security-group", "Tags": tag_list(props["tags"])}])
        # AWS gives every new VPC security group exactly one rule, allow-all IPv4 egress, and
        # no ingress: reconcile from that known state to what is declared (no read needed).
        self._rules(res, out["GroupId"], props, {"ingress": [], "egress": list(ALL_EGRESS)})
        return {"id": out["GroupId"]}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        gid = observed.outputs["id"]
        if changed(diffs, "ingress", "egress"):
            self._rules(res, gid, props, observed.props)
        if changed(diffs, "tags"):
            call("CreateTags", res.key, client("ec2").create_tags, Resources=[gid], Tags=tag_list(props["tags"]))
        return observed.outputs

    def _rules(self, res: Resource, gid: str, props: dict[str, Any], have: dict[str, Any]) -> None:
        ec2 = client("ec2")
        for direction, revoke, authorize in (
            ("ingress", ec2.revoke_security_group_ingress, ec2.authorize_security_group_ingress),
            ("egress", ec2.revoke_security_group_egress, ec2.authorize_security_group_egress),
        ):
            want, cur = props[direction], have.get(direction) or []
            extra = [r for r in cur if r not in want]
            missing = [r for r in want if r not in cur]
            if extra:
                call(f"Revoke{direction.title()}", res.key, revoke, GroupId=gid,
                     IpPermissions=[to_permission(r) for r in extra])
            if missing:
                call(f"Authorize{direction.title()}", res.key, authorize, GroupId=gid,
                     IpPermissions=[to_permission(r) for r in missing])

    def delete(self, res: Resource, observed: Observed) -> None:
        gid = observed.outputs["id"]

        def gave_up() -> str:
            users = "; ".join(security_group_users(gid)) or "nothing AWS lists (yet)"
            return (f"DeleteSecurityGroup failed for {res.key} ({gid}): still in use after {SG_DELETE_TIMEOUT:.0f}s "
                    f"by {users}\n  next step: network interfaces of stopped ECS tasks are released within minutes: "
                    f"re-run the teardown later; or stop what else uses the group (remove the rules that refer to it)")

        call("DeleteSecurityGroup", res.key, until,
             lambda: attempt(client("ec2").delete_security_group, GroupId=gid, busy=("DependencyViolation",),
                             missing=MISSING),
             timeout=SG_DELETE_TIMEOUT, interval=SG_DELETE_INTERVAL, gave_up=gave_up,
             waiting=lambda: f"{res.key}: still in use (network interfaces of stopped tasks are released late); "
                             f"retrying for up to {SG_DELETE_TIMEOUT:.0f}s")
