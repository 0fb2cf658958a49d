"""Network: resolving the configured VPC and subnets (facts), and security groups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .aws import InfraError, client, paginate
from .config import Network
from .handler import Handler, call, changed, tag_dict, tag_list
from .model import Diff, Observed, Resource


@dataclass(frozen=True)
class NetworkFacts:
    vpc_id: str
    subnet_ids: tuple[str, ...]
    public_subnets: tuple[str, ...]


def resolve_network(net: Network, where: str) -> NetworkFacts:
    """Find the VPC and subnets `net` selects; an error names the selector and the fix."""
    ec2 = client("ec2")
    sel = net.vpc
    if sel.id:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [sel.id]}])["Vpcs"]
        what = f"{where}.network.vpc.id = {sel.id!r}"
    elif sel.name:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": [sel.name]}])["Vpcs"]
        what = f"{where}.network.vpc.name = {sel.name!r}"
    else:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
        what = f"{where}.network.vpc.default = true"
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
    subnets = list(paginate(ec2, "describe_subnets", "Subnets", Filters=filters))
    if net.subnets.ids:
        missing = sorted(set(net.subnets.ids) - {s["SubnetId"] for s in subnets})
        if missing:
            raise InfraError(f"{where}.network.subnets.ids: {', '.join(missing)} not found in {vpc_id}")
    if not subnets:
        raise InfraError(f"{where}.network.subnets: no subnet of {vpc_id} matches {net.subnets.model_dump(exclude_defaults=True)}")
    ids = tuple(sorted(s["SubnetId"] for s in subnets))
    public = tuple(sorted(s["SubnetId"] for s in subnets if s.get("MapPublicIpOnLaunch")))
    return NetworkFacts(vpc_id, ids, public)


# --- security groups ---------------------------------------------------------------

ALL_EGRESS = [{"protocol": "-1", "from": None, "to": None, "cidr": "0.0.0.0/0"}]


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


def sg_props(description: str, vpc_id: str, tags: dict[str, str]) -> dict[str, Any]:
    return {"description": description, "vpc_id": vpc_id, "ingress": [], "egress": list(ALL_EGRESS), "tags": tags}


class SecurityGroupHandler(Handler):
    kind = "ec2.security_group"
    replace_paths = ("description", "vpc_id")

    def read(self, res: Resource) -> Observed | None:
        groups = client("ec2").describe_security_groups(Filters=[
            {"Name": "group-name", "Values": [res.name]},
            {"Name": "vpc-id", "Values": [res.ident["vpc_id"]]},
        ])["SecurityGroups"]
        if not groups:
            return None
        g = groups[0]
        props = {"description": g.get("Description"), "vpc_id": g["VpcId"],
                 "ingress": flatten_rules(g.get("IpPermissions")),
                 "egress": flatten_rules(g.get("IpPermissionsEgress"))}
        return Observed(props, outputs={"id": g["GroupId"]}, tags=tag_dict(g.get("Tags")))

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        ec2 = client("ec2")
        out = call("CreateSecurityGroup", res.key, ec2.create_security_group, GroupName=res.name,
                   Description=props["description"], VpcId=props["vpc_id"],
                   TagSpecifications=[{"ResourceType": "security-group", "Tags": tag_list(props["tags"])}])
        gid = out["GroupId"]
        # AWS adds allow-all IPv4 egress to a new group; reconcile to exactly what is declared.
        obs = self.read(res)
        if obs is not None:
            self._rules(res, gid, props, obs.props)
        return {"id": gid}

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
