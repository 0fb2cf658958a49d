"""Static least-privilege analysis, with cloudsplaining, of every policy that the project
gives a role in the `production` environment of infra.toml.

cloudsplaining flags *restrictable* actions granted on `"Resource": "*"` (and escalation
combinations such as iam:PassRole + ecs:RunTask); it says nothing of actions scoped to
ARNs, which `test_iam_eval` / `test_iam_runtime` judge instead. A finding is accepted only
when it is listed in JUSTIFIED with its reason."""

from __future__ import annotations

import re
from typing import Any

import pytest
from cloudsplaining.scan.policy_document import PolicyDocument

from infra_tasks.config import load_config
from infra_tasks.desired import desired_state
from infra_tasks.facts import Facts
from infra_tasks.ec2 import NetworkFacts
from infra_tasks.model import Ref

from .conftest import PROD_ACCOUNT as ACCOUNT
from .conftest import REGION, ROOT
from .iam_eval import MANAGED_POLICIES

FINDING_TYPES = ("privilege-escalation", "resource-exposure", "infrastructure-modification", "data-exfiltration")

# (role name without the config prefix, finding type, action) -> why it is acceptable.
# For privilege-escalation the "action" is cloudsplaining's method name (e.g. "PassExistingRoleToNewEcsTask").
JUSTIFIED: dict[tuple[str, str, str], str] = {}


def static_findings(policy_document: dict[str, Any]) -> dict[str, list[str]]:
    """cloudsplaining's findings for one policy document, by finding type.

    flag_conditional_statements=True: by default cloudsplaining skips every statement
    that has a Condition, so `"Resource": "*"` plus any condition would hide a write on
    everything; a condition that really bounds the grant goes to JUSTIFIED instead."""
    doc = PolicyDocument(policy_document, flag_conditional_statements=True)
    return {
        "privilege-escalation": sorted(e["type"] for e in doc.allows_privilege_escalation),
        "resource-exposure": sorted(set(doc.permissions_management_without_constraints)),
        "infrastructure-modification": sorted(set(doc.infrastructure_modification)),
        "data-exfiltration": sorted(set(doc.allows_data_exfiltration_actions)),
    }


def _placeholders(value: Any) -> Any:
    """Replace each unresolved Ref (an ARN or id AWS assigns at apply) with a specific ARN:
    a Ref names one resource, so it must not read as a wildcard."""
    if isinstance(value, Ref):
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{value.key}.{value.attr}")
        return value.resolve(f"arn:aws:placeholder:{REGION}:{ACCOUNT}:ref/{safe}")
    if isinstance(value, dict):
        return {k: _placeholders(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_placeholders(v) for v in value]
    return value


def _role_policies() -> list[Any]:
    cfg = load_config(ROOT / "infra.toml")
    facts = Facts(account_id=ACCOUNT, region=REGION,
                  network=NetworkFacts(vpc_id="vpc-0fake0000000000001",
                                       subnet_ids=("subnet-0fake00000000001", "subnet-0fake00000000002"),
                                       public_subnets=()))
    resources = desired_state(cfg, "production", facts)
    managed = dict(MANAGED_POLICIES)
    managed.update({f"arn:aws:iam::{ACCOUNT}:policy/{r.name}": r.props["document"]
                    for r in resources if r.kind == "iam.policy"})
    out = []
    for role in (r for r in resources if r.kind == "iam.role"):
        suffix = role.name.removeprefix(f"{cfg.prefix}-")
        for name, doc in role.props["inline_policies"].items():
            out.append(pytest.param(suffix, name, _placeholders(doc), id=f"{suffix}/{name}"))
        for arn in role.props["managed_policies"]:
            # None (an attachment this test cannot read) fails the test rather than skipping it.
            out.append(pytest.param(suffix, arn, _placeholders(managed.get(arn)), id=f"{suffix}/{arn.rsplit('/', 1)[-1]}"))
    return out


ROLE_POLICIES = _role_policies()


@pytest.mark.parametrize("role,policy_name,document", ROLE_POLICIES)
def test_role_policy_has_no_unjustified_findings(role: str, policy_name: str, document: dict[str, Any] | None) -> None:
    assert document is not None, f"{role}: managed policy {policy_name} is unknown to this test"
    found = static_findings(document)
    unjustified = [f"{kind}: {action}" for kind, actions in found.items() for action in actions
                   if (role, kind, action) not in JUSTIFIED]
    assert not unjustified, (f"role {role}, policy {policy_name}: cloudsplaining findings not in JUSTIFIED:\n  "
                             + "\n  ".join(unjustified))


def test_justified_entries_are_still_needed() -> None:
    """A JUSTIFIED entry whose finding went away is stale: remove it."""
    seen = {(role, kind, action) for role, _, doc in (p.values for p in ROLE_POLICIES) if doc is not None
            for kind, actions in static_findings(doc).items() for action in actions}
    assert not set(JUSTIFIED) - seen, f"stale JUSTIFIED entries: {sorted(set(JUSTIFIED) - seen)}"
    assert all(kind in FINDING_TYPES for _, kind, _ in JUSTIFIED)


def test_static_findings_detects_known_bad_policy() -> None:
    """The gate is only as good as cloudsplaining's action database: a policy with every
    kind of finding must yield every kind, and a scoped one none."""
    bad = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*", "Action": [
        "iam:PassRole", "ecs:RunTask", "ecs:RegisterTaskDefinition", "iam:PutRolePolicy", "s3:GetObject"]}]}
    found = static_findings(bad)
    assert set(found) == set(FINDING_TYPES)
    assert all(found[k] for k in FINDING_TYPES), found
    assert "iam:PutRolePolicy" in found["resource-exposure"]
    assert "s3:GetObject" in found["data-exfiltration"]
    # The same grant behind a condition is still flagged (see static_findings).
    conditional = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*",
                   "Action": "iam:PutRolePolicy", "Condition": {"StringEquals": {"aws:RequestTag/x": "y"}}}]}
    assert static_findings(conditional)["resource-exposure"] == ["iam:PutRolePolicy"]
    scoped = {"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": ["iam:PutRolePolicy", "s3:GetObject"],
              "Resource": [f"arn:aws:iam::{ACCOUNT}:role/x", "arn:aws:s3:::b/*"]}}
    assert static_findings(scoped) == {k: [] for k in FINDING_TYPES}
