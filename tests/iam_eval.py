"""A small evaluator of AWS IAM policies, following AWS's documented evaluation logic
("Policy evaluation logic", "IAM JSON policy elements: Condition operators"), for the
tests: moto enforces no IAM worth the name.

Scope: identity policies, permissions boundaries and trust (resource) policies of one
account. An explicit Deny in any applicable policy wins; otherwise an Allow is needed in
the identity policies and, when the role has a boundary, in the boundary too; anything
else is an implicit deny. Unknown operators or elements raise ValueError: the
evaluator never allows by not understanding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

Value = str | bool | int | list[str]


@dataclass(frozen=True)
class Request:
    action: str                        # "ecs:RunTask"
    resource: str                      # one ARN, or "*" for actions without a resource
    context: Mapping[str, Value] = field(default_factory=dict)
    principal: Mapping[str, str] | None = None   # trust policies: {"Federated": arn} / {"Service": ...} / {"AWS": arn}
    why: str = ""                      # which captured call it came from


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


# The one AWS managed policy the project's history used; kept for evaluating documents
# that still attach it (the tests read a role's attachments back from IAM).
MANAGED_POLICIES: dict[str, dict[str, Any]] = {
    "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy": {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Resource": "*", "Action": [
            "ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer",
            "ecr:BatchGetImage", "logs:CreateLogStream", "logs:PutLogEvents"]}],
    },
}

_ELEMENTS = {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Principal", "NotPrincipal",
             "Condition"}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(policy: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    sts = policy.get("Statement")
    if sts is None:
        raise ValueError("policy without Statement")
    out = _list(sts)
    for st in out:
        unknown = set(st) - _ELEMENTS
        if unknown:
            raise ValueError(f"unknown policy element(s) {sorted(unknown)}")
        for a, b in (("Action", "NotAction"), ("Resource", "NotResource"), ("Principal", "NotPrincipal")):
            if a in st and b in st:
                raise ValueError(f"a statement has both {a} and {b}")
        cond = st.get("Condition", {})
        if not isinstance(cond, Mapping) or not all(isinstance(v, Mapping) for v in cond.values()):
            raise ValueError("Condition must map operators to {key: values} blocks")
        if st.get("Effect") not in ("Allow", "Deny"):
            raise ValueError(f"Effect must be Allow or Deny, not {st.get('Effect')!r}")
    return out


def _glob(pattern: str, value: str, case: bool) -> bool:
    # IAM wildcards: `*` any run of characters (including none), `?` exactly one.
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, 0 if case else re.IGNORECASE | re.DOTALL) is not None


def _action_matches(patterns: Iterable[str], action: str) -> bool:
    return any(_glob(p, action, case=False) for p in patterns)


def _resource_matches(patterns: Iterable[str], resource: str) -> bool:
    # A request on "*" (actions without a resource type) is matched only by "*".
    if resource == "*":
        return any(p == "*" for p in patterns)
    return any(_glob(p, resource, case=True) for p in patterns)


def _arn_like(pattern: str, value: str) -> bool:
    # ArnLike compares the six colon-delimited parts separately: a wildcard in one part
    # cannot reach into the next (the resource part may itself contain colons).
    p_parts, v_parts = pattern.split(":", 5), value.split(":", 5)
    if len(p_parts) != 6 or len(v_parts) != 6:
        return pattern == "*" or _glob(pattern, value, case=True)
    return all(_glob(p, v, case=True) for p, v in zip(p_parts, v_parts))


def _lookup(context: Mapping[str, Value], key: str) -> Value | None:
    # Condition keys are case-insensitive.
    lowered = key.lower()
    for k, v in context.items():
        if k.lower() == lowered:
            return v
    return None


def _str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


_BASE: dict[str, Any] = {
    "StringEquals": lambda c, v: c == v,
    "StringNotEquals": lambda c, v: c != v,
    "StringEqualsIgnoreCase": lambda c, v: c.lower() == v.lower(),
    "StringNotEqualsIgnoreCase": lambda c, v: c.lower() != v.lower(),
    "StringLike": lambda c, v: _glob(v, c, case=True),
    "StringNotLike": lambda c, v: not _glob(v, c, case=True),
    "ArnEquals": lambda c, v: _arn_like(v, c),
    "ArnLike": lambda c, v: _arn_like(v, c),
    "ArnNotEquals": lambda c, v: not _arn_like(v, c),
    "ArnNotLike": lambda c, v: not _arn_like(v, c),
    "Bool": lambda c, v: c.lower() == v.lower(),
    "NumericEquals": lambda c, v: float(c) == float(v),
    "NumericNotEquals": lambda c, v: float(c) != float(v),
    "NumericLessThan": lambda c, v: float(c) < float(v),
    "NumericLessThanEquals": lambda c, v: float(c) <= float(v),
    "NumericGreaterThan": lambda c, v: float(c) > float(v),
    "NumericGreaterThanEquals": lambda c, v: float(c) >= float(v),
}
# For negated operators, AWS evaluates "none of the policy values matches": a value list
# is ORed for positive operators and NORed for negated ones.
_NEGATED = {"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "ArnNotEquals", "ArnNotLike",
            "NumericNotEquals"}


def _condition_holds(operator: str, key: str, wanted: Any, context: Mapping[str, Value]) -> bool:
    prefix, _, op = operator.rpartition(":")
    if prefix not in ("", "ForAnyValue", "ForAllValues"):
        raise ValueError(f"unknown condition set operator {prefix!r}")
    if_exists = op.endswith("IfExists")
    op = op.removesuffix("IfExists")
    present = _lookup(context, key)
    values = [_str(w) for w in _list(wanted)]
    if op == "Null":
        # Null: "true" means the key must be absent, "false" that it must be present.
        return (present is None) == (values[0].lower() == "true")
    if op not in _BASE:
        raise ValueError(f"unknown condition operator {operator!r}")
    if present is None:
        # "If the key that you specify in a policy condition is not present in the request
        # context, the values do not match": false for a positive operator, true for a
        # negated one (nothing matched, which is what it asks) — and true with ...IfExists,
        # or ForAllValues (an empty set).
        return if_exists or prefix == "ForAllValues" or (op in _NEGATED and prefix == "")
    test = _BASE[op]
    have = [_str(p) for p in _list(present)]

    def one(c: str) -> bool:
        if op in _NEGATED:
            return all(test(c, v) for v in values)
        return any(test(c, v) for v in values)

    if prefix == "ForAllValues":
        return all(one(c) for c in have)
    if prefix == "ForAnyValue" or len(have) == 1:
        return any(one(c) for c in have)
    # A multivalued key without a set operator: AWS compares it as a single value, which
    # never equals a list; treat as no match (policies should use ForAnyValue/ForAllValues).
    return False


def _conditions_hold(cond: Mapping[str, Mapping[str, Any]] | None, context: Mapping[str, Value]) -> bool:
    for operator, block in (cond or {}).items():
        for key, wanted in block.items():
            if not _condition_holds(operator, key, wanted, context):
                return False
    return True


def _principal_matches(element: Any, principal: Mapping[str, str] | None) -> bool:
    if element == "*":
        return True
    if not isinstance(element, Mapping):
        raise ValueError(f"Principal must be \"*\" or a mapping such as {{\"Service\": ...}}, not {element!r}")
    if principal is None:
        return False
    for kind, who in principal.items():
        for p in _list(element.get(kind, [])):
            if p == "*" or p == who:
                return True
            if kind == "AWS" and re.fullmatch(r"\d{12}", p) and f":{p}:" in who:
                return True  # an account id stands for the account's root principal
    return False


def _applies(st: Mapping[str, Any], req: Request, trust: bool) -> bool:
    if "Action" in st:
        if not _action_matches(_list(st["Action"]), req.action):
            return False
    elif "NotAction" in st:
        if _action_matches(_list(st["NotAction"]), req.action):
            return False
    else:
        raise ValueError("statement without Action or NotAction")
    if "Resource" in st:
        if not _resource_matches(_list(st["Resource"]), req.resource):
            return False
    elif "NotResource" in st:
        if _resource_matches(_list(st["NotResource"]), req.resource):
            return False
    elif not trust:
        raise ValueError("identity statement without Resource or NotResource")
    if trust:
        if "Principal" in st:
            if not _principal_matches(st["Principal"], req.principal):
                return False
        elif "NotPrincipal" in st:
            if _principal_matches(st["NotPrincipal"], req.principal):
                return False
        else:
            raise ValueError("trust statement without Principal")
    return _conditions_hold(st.get("Condition"), req.context)


def _verdict(policies: Sequence[Mapping[str, Any]], req: Request, trust: bool = False) -> tuple[str, str]:
    """("deny" | "allow" | "none", the deciding statement's Sid)."""
    allow_sid = None
    for policy in policies:
        for st in _statements(policy):
            if _applies(st, req, trust):
                sid = st.get("Sid", "(no Sid)")
                if st["Effect"] == "Deny":
                    return "deny", sid
                allow_sid = allow_sid or sid
    return ("allow", allow_sid) if allow_sid else ("none", "")


def evaluate(policies: Sequence[Mapping[str, Any]], request: Request, *,
             boundary: Mapping[str, Any] | None = None) -> Decision:
    verdict, sid = _verdict(policies, request)
    if verdict == "deny":
        return Decision(False, f"explicit deny by statement {sid}")
    if boundary is not None:
        b_verdict, b_sid = _verdict([boundary], request)
        if b_verdict == "deny":
            return Decision(False, f"explicit deny in the permissions boundary ({b_sid})")
        if b_verdict == "none":
            return Decision(False, f"implicit deny: the permissions boundary does not allow {request.action} "
                                   f"on {request.resource}")
    if verdict == "none":
        return Decision(False, f"implicit deny: no statement allows {request.action} on {request.resource}")
    return Decision(True, f"allowed by statement {sid}")


def evaluate_trust(trust_policy: Mapping[str, Any], request: Request) -> Decision:
    verdict, sid = _verdict([trust_policy], request, trust=True)
    if verdict == "allow":
        return Decision(True, f"trusted by statement {sid}")
    if verdict == "deny":
        return Decision(False, f"explicit deny by statement {sid}")
    return Decision(False, f"implicit deny: the trust policy does not admit {dict(request.principal or {})} "
                           f"with {dict(request.context)}")


def resource_policy_verdict(policy: Mapping[str, Any], request: Request) -> str:
    """"deny", "allow" or "none" from a resource policy (e.g. a bucket policy)."""
    return _verdict([policy], request, trust=True)[0]


def explain_denials(policies: Sequence[Mapping[str, Any]], requests: Iterable[Request],
                    boundary: Mapping[str, Any] | None = None) -> list[str]:
    out = []
    for r in requests:
        d = evaluate(policies, r, boundary=boundary)
        if not d.allowed:
            ctx = f" {dict(r.context)}" if r.context else ""
            out.append(f"{r.action} on {r.resource}{ctx} ({r.why}): {d.reason}")
    return sorted(set(out))


__all__ = ["Decision", "MANAGED_POLICIES", "Request", "evaluate", "evaluate_trust", "explain_denials",
           "resource_policy_verdict"]
