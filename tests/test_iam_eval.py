"""Known allow/deny cases for `iam_eval`, one table row each, taken from AWS's documented
policy evaluation logic ("Policy evaluation logic", "IAM JSON policy elements: Condition
operators", "Conditions with multiple context keys or values", "Single-valued vs.
multivalued context keys"). Every row has a twin that flips the outcome, so no row
passes by accident."""

from __future__ import annotations

from typing import Any

import pytest

from .iam_eval import MANAGED_POLICIES, Decision, Request, evaluate, evaluate_trust, explain_denials

ACCT = "111122223333"
CLUSTER = f"arn:aws:ecs:us-east-1:{ACCT}:cluster/main"
OTHER_CLUSTER = f"arn:aws:ecs:us-east-1:{ACCT}:cluster/other"
TASKDEF = f"arn:aws:ecs:us-east-1:{ACCT}:task-definition/flows:7"
ROLE = f"arn:aws:iam::{ACCT}:role/data-flows-main-flow-task"
BUCKET = "arn:aws:s3:::data-flows-main"
OIDC = f"arn:aws:iam::{ACCT}:oidc-provider/oidc.circleci.com/org/O"

# CircleCI OIDC `sub`: org/<org>/project/<project>/user/<user-id>/vcs-origin/<origin>/vcs-ref/<ref>.
USER = "0f1e2d3c-4b5a-4987-8654-3210fedcba98"          # 36 characters, as CircleCI issues them
ORIGIN = "github.com/acme/data-flows"
LEGIT_SUB = f"org/O/project/P/user/{USER}/vcs-origin/{ORIGIN}/vcs-ref/refs/heads/main-v2"
# A branch named "feature/vcs-ref/refs/heads/main-v2" ends its sub the way main-v2's does.
CRAFTED_SUB = f"org/O/project/P/user/{USER}/vcs-origin/{ORIGIN}/vcs-ref/refs/heads/feature/vcs-ref/refs/heads/main-v2"
LOOSE_PATTERN = "org/O/project/P/user/*/vcs-origin/*/vcs-ref/refs/heads/main-v2"
EXACT_PATTERN = f"org/O/project/P/user/{'?' * 8}-{'?' * 4}-{'?' * 4}-{'?' * 4}-{'?' * 12}/vcs-origin/{ORIGIN}/vcs-ref/refs/heads/main-v2"


def st(action: Any = "ecs:RunTask", resource: Any = "*", effect: str = "Allow", sid: str = "S",
       condition: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"Sid": sid, "Effect": effect, **extra}
    if action is not None:
        out["Action"] = action
    if resource is not None:
        out["Resource"] = resource
    if condition is not None:
        out["Condition"] = condition
    return out


def pol(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def req(action: str = "ecs:RunTask", resource: str = "*", **context: Any) -> Request:
    return Request(action, resource, context)


def cond_case(condition: dict[str, Any], context: dict[str, Any], expected: bool) -> tuple[Any, ...]:
    """One statement allowing everything under `condition`, asked with `context`."""
    return [pol(st("*", "*", sid="Cond", condition=condition))], Request("ecs:RunTask", TASKDEF, context), expected


# --- Effect, Action, Resource -------------------------------------------------------------------
ELEMENT_CASES: list[tuple[str, list[dict[str, Any]], Request, bool, str]] = [
    ("exact-allow", [pol(st("ecs:RunTask", TASKDEF, sid="Run"))], req(resource=TASKDEF), True, "Run"),
    ("explicit-deny-beats-allow-same-policy",
     [pol(st("ecs:*", "*", sid="All"), st("ecs:RunTask", TASKDEF, "Deny", sid="NoRun"))],
     req(resource=TASKDEF), False, "explicit deny"),
    ("explicit-deny-beats-allow-other-policy",
     [pol(st("ecs:RunTask", TASKDEF, sid="Run")), pol(st("ecs:*", "*", "Deny", sid="NoEcs"))],
     req(resource=TASKDEF), False, "NoEcs"),
    ("deny-elsewhere-other-action-still-allows",
     [pol(st("ecs:RunTask", TASKDEF, sid="Run")), pol(st("ecs:StopTask", "*", "Deny", sid="NoStop"))],
     req(resource=TASKDEF), True, "Run"),
    ("deny-with-false-condition-does-not-deny",
     [pol(st("ecs:RunTask", TASKDEF, sid="Run"),
          st("ecs:RunTask", "*", "Deny", sid="NoOther", condition={"ArnNotEquals": {"ecs:cluster": CLUSTER}}))],
     req(resource=TASKDEF, **{"ecs:cluster": CLUSTER}), True, "Run"),
    ("deny-with-true-condition-denies",
     [pol(st("ecs:RunTask", TASKDEF, sid="Run"),
          st("ecs:RunTask", "*", "Deny", sid="NoOther", condition={"ArnNotEquals": {"ecs:cluster": CLUSTER}}))],
     req(resource=TASKDEF, **{"ecs:cluster": OTHER_CLUSTER}), False, "NoOther"),
    ("implicit-deny-no-statement", [pol(st("ecs:StopTask", "*"))], req(resource=TASKDEF), False, "implicit deny"),
    ("implicit-deny-no-policies", [], req(resource=TASKDEF), False, "implicit deny"),
    ("statement-as-single-dict", [{"Version": "2012-10-17", "Statement": st("ecs:RunTask", TASKDEF, sid="One")}],
     req(resource=TASKDEF), True, "One"),
    ("action-and-resource-as-strings-or-lists",
     [pol(st(["ecs:StopTask", "ecs:RunTask"], [CLUSTER, TASKDEF], sid="L"))], req(resource=TASKDEF), True, "L"),
    ("action-case-insensitive-policy", [pol(st("ECS:runtask", TASKDEF, sid="Lc"))], req(resource=TASKDEF), True, "Lc"),
    ("action-case-insensitive-request", [pol(st("ecs:RunTask", TASKDEF, sid="Lc"))],
     req("ECS:RUNTASK", TASKDEF), True, "Lc"),
    ("action-service-wildcard", [pol(st("ecs:*", "*", sid="W"))], req(resource=TASKDEF), True, "W"),
    ("action-service-wildcard-other-service", [pol(st("ecs:*", "*"))], req("ecr:BatchGetImage", "*"), False,
     "implicit deny"),
    ("action-prefix-wildcard", [pol(st("ecs:Describe*", "*", sid="D"))], req("ecs:DescribeTasks", "*"), True, "D"),
    ("action-prefix-wildcard-miss", [pol(st("ecs:Describe*", "*"))], req(resource=TASKDEF), False, "implicit deny"),
    ("action-star", [pol(st("*", "*", sid="Any"))], req("iam:PassRole", ROLE), True, "Any"),
    ("action-question-mark", [pol(st("ecs:?unTask", "*", sid="Q"))], req(resource=TASKDEF), True, "Q"),
    ("action-no-implicit-prefix", [pol(st("ecs:Run", "*"))], req(resource=TASKDEF), False, "implicit deny"),
    ("notaction-allows-others", [pol(st(None, "*", sid="NotIam", NotAction="iam:*"))],
     req("s3:GetObject", f"{BUCKET}/k"), True, "NotIam"),
    ("notaction-excludes-listed", [pol(st(None, "*", NotAction=["iam:*"]))], req("iam:PassRole", ROLE), False,
     "implicit deny"),
    ("deny-notaction-denies-the-rest",
     [pol(st("*", "*", sid="All"), st(None, "*", "Deny", sid="OnlyEcs", NotAction="ecs:*"))],
     req("s3:GetObject", f"{BUCKET}/k"), False, "OnlyEcs"),
    ("deny-notaction-spares-listed",
     [pol(st("*", "*", sid="All"), st(None, "*", "Deny", sid="OnlyEcs", NotAction="ecs:*"))],
     req(resource=TASKDEF), True, "All"),
    ("resource-mismatch", [pol(st("ecs:RunTask", TASKDEF))], req(resource=TASKDEF.replace(":7", ":8")), False,
     "implicit deny"),
    ("resource-case-sensitive", [pol(st("s3:ListBucket", BUCKET.upper()))], req("s3:ListBucket", BUCKET), False,
     "implicit deny"),
    ("resource-star-spans-slash", [pol(st("iam:PassRole", f"arn:aws:iam::{ACCT}:role/p-*", sid="P"))],
     req("iam:PassRole", f"arn:aws:iam::{ACCT}:role/p-a/b"), True, "P"),
    ("resource-star-spans-colon", [pol(st("logs:PutLogEvents", "arn:aws:logs:*", sid="Logs"))],
     req("logs:PutLogEvents", f"arn:aws:logs:us-east-1:{ACCT}:log-group:/ecs/x:log-stream:s"), True, "Logs"),
    ("resource-star-prefix-miss", [pol(st("iam:PassRole", f"arn:aws:iam::{ACCT}:role/p-*"))],
     req("iam:PassRole", f"arn:aws:iam::{ACCT}:role/q-a"), False, "implicit deny"),
    ("resource-question-one-char", [pol(st("ecs:RunTask", f"arn:aws:ecs:us-east-1:{ACCT}:task-definition/flows:?",
                                           sid="Q"))], req(resource=TASKDEF), True, "Q"),
    ("resource-question-not-two-chars",
     [pol(st("ecs:RunTask", f"arn:aws:ecs:us-east-1:{ACCT}:task-definition/flows:?"))],
     req(resource=TASKDEF.replace(":7", ":17")), False, "implicit deny"),
    ("request-star-needs-statement-star", [pol(st("ecr:GetAuthorizationToken", "*", sid="Tok"))],
     req("ecr:GetAuthorizationToken", "*"), True, "Tok"),
    ("request-star-not-matched-by-arn-pattern", [pol(st("ecr:GetAuthorizationToken", "arn:aws:ecr:*"))],
     req("ecr:GetAuthorizationToken", "*"), False, "implicit deny"),
    ("notresource-allows-others", [pol(st("s3:*", None, sid="NotSecret", NotResource=f"{BUCKET}/secret/*"))],
     req("s3:GetObject", f"{BUCKET}/public/k"), True, "NotSecret"),
    ("notresource-excludes-listed", [pol(st("s3:*", None, NotResource=[f"{BUCKET}/secret/*"]))],
     req("s3:GetObject", f"{BUCKET}/secret/k"), False, "implicit deny"),
    ("notresource-arn-matches-request-star", [pol(st("ecr:*", None, sid="NR", NotResource=BUCKET))],
     req("ecr:GetAuthorizationToken", "*"), True, "NR"),
    ("notresource-star-excludes-request-star", [pol(st("ecr:*", None, NotResource="*"))],
     req("ecr:GetAuthorizationToken", "*"), False, "implicit deny"),
]


@pytest.mark.parametrize("policies,request_,allowed,reason", [c[1:] for c in ELEMENT_CASES],
                         ids=[c[0] for c in ELEMENT_CASES])
def test_elements(policies: list[dict[str, Any]], request_: Request, allowed: bool, reason: str) -> None:
    d = evaluate(policies, request_)
    assert isinstance(d, Decision)
    assert d.allowed is allowed, d.reason
    assert reason in d.reason, d.reason


# --- Condition operators ------------------------------------------------------------------------
# Missing keys follow the AWS doc: "If the key that you specify in a policy condition is not
# present in the request context, the values do not match and the condition is false. If the
# policy condition requires that the key is not matched, such as StringNotLike or ArnNotLike,
# and the right key is not present, the condition is true." (except ...IfExists and Null).
PT = "iam:PassedToService"
SVC = "ecs-tasks.amazonaws.com"
CONDITION_CASES: dict[str, tuple[Any, ...]] = {
    # String
    "StringEquals-match": cond_case({"StringEquals": {PT: SVC}}, {PT: SVC}, True),
    "StringEquals-mismatch": cond_case({"StringEquals": {PT: SVC}}, {PT: "ec2.amazonaws.com"}, False),
    "StringEquals-case-sensitive-value": cond_case({"StringEquals": {PT: SVC}}, {PT: SVC.upper()}, False),
    "StringEquals-missing": cond_case({"StringEquals": {PT: SVC}}, {}, False),
    "StringEquals-values-ored": cond_case({"StringEquals": {PT: ["ec2.amazonaws.com", SVC]}}, {PT: SVC}, True),
    "StringNotEquals-differs": cond_case({"StringNotEquals": {PT: SVC}}, {PT: "ec2.amazonaws.com"}, True),
    "StringNotEquals-equal": cond_case({"StringNotEquals": {PT: SVC}}, {PT: SVC}, False),
    "StringNotEquals-values-nored": cond_case({"StringNotEquals": {PT: ["a", SVC]}}, {PT: SVC}, False),
    "StringNotEquals-none-of-values": cond_case({"StringNotEquals": {PT: ["a", "b"]}}, {PT: SVC}, True),
    "StringNotEquals-missing-is-true": cond_case({"StringNotEquals": {PT: SVC}}, {}, True),
    "StringEqualsIgnoreCase-match": cond_case({"StringEqualsIgnoreCase": {PT: SVC.upper()}}, {PT: SVC}, True),
    "StringEqualsIgnoreCase-mismatch": cond_case({"StringEqualsIgnoreCase": {PT: "ec2"}}, {PT: SVC}, False),
    "StringEqualsIgnoreCase-missing": cond_case({"StringEqualsIgnoreCase": {PT: SVC}}, {}, False),
    "StringNotEqualsIgnoreCase-equal": cond_case({"StringNotEqualsIgnoreCase": {PT: SVC.upper()}}, {PT: SVC}, False),
    "StringNotEqualsIgnoreCase-differs": cond_case({"StringNotEqualsIgnoreCase": {PT: "ec2"}}, {PT: SVC}, True),
    "StringNotEqualsIgnoreCase-missing-is-true": cond_case({"StringNotEqualsIgnoreCase": {PT: SVC}}, {}, True),
    "StringLike-star-spans-slash-crafted-branch": cond_case({"StringLike": {"sub": LOOSE_PATTERN}},
                                                            {"sub": CRAFTED_SUB}, True),
    "StringLike-exact-pattern-rejects-crafted-branch": cond_case({"StringLike": {"sub": EXACT_PATTERN}},
                                                                 {"sub": CRAFTED_SUB}, False),
    "StringLike-exact-pattern-admits-main-v2": cond_case({"StringLike": {"sub": EXACT_PATTERN}},
                                                         {"sub": LEGIT_SUB}, True),
    "StringLike-question-is-one-char": cond_case({"StringLike": {"sub": EXACT_PATTERN}},
                                                 {"sub": LEGIT_SUB.replace(USER, USER[1:])}, False),
    "StringLike-other-origin": cond_case({"StringLike": {"sub": EXACT_PATTERN}},
                                         {"sub": LEGIT_SUB.replace(ORIGIN, "github.com/evil/data-flows")}, False),
    "StringLike-missing": cond_case({"StringLike": {"sub": "*"}}, {}, False),
    "StringNotLike-matches": cond_case({"StringNotLike": {"sub": "org/O/*"}}, {"sub": LEGIT_SUB}, False),
    "StringNotLike-differs": cond_case({"StringNotLike": {"sub": "org/X/*"}}, {"sub": LEGIT_SUB}, True),
    "StringNotLike-missing-is-true": cond_case({"StringNotLike": {"sub": "org/O/*"}}, {}, True),
    # ARN: each of the six colon-separated components is matched on its own.
    "ArnEquals-match": cond_case({"ArnEquals": {"ecs:cluster": CLUSTER}}, {"ecs:cluster": CLUSTER}, True),
    "ArnEquals-mismatch": cond_case({"ArnEquals": {"ecs:cluster": CLUSTER}}, {"ecs:cluster": OTHER_CLUSTER}, False),
    "ArnEquals-missing": cond_case({"ArnEquals": {"ecs:cluster": CLUSTER}}, {}, False),
    "ArnLike-wildcard-in-component": cond_case({"ArnLike": {"ecs:cluster": f"arn:aws:ecs:*:{ACCT}:cluster/*"}},
                                               {"ecs:cluster": CLUSTER}, True),
    "ArnLike-star-does-not-span-colon": cond_case(
        {"ArnLike": {"ecs:cluster": f"arn:aws:ecs:*:{ACCT}:cluster/main"}},
        {"ecs:cluster": f"arn:aws:ecs:us-east-1:999999999999:{ACCT}:cluster/main"}, False),
    "ArnLike-star-in-resource-spans-slash": cond_case(
        {"ArnLike": {"aws:SourceArn": f"arn:aws:iam::{ACCT}:role/p-*"}},
        {"aws:SourceArn": f"arn:aws:iam::{ACCT}:role/p-a/b"}, True),
    "ArnLike-account-mismatch": cond_case({"ArnLike": {"ecs:cluster": f"arn:aws:ecs:*:{ACCT}:cluster/*"}},
                                          {"ecs:cluster": CLUSTER.replace(ACCT, "999999999999")}, False),
    "ArnLike-missing": cond_case({"ArnLike": {"ecs:cluster": "arn:aws:ecs:*:*:cluster/*"}}, {}, False),
    "ArnNotEquals-differs": cond_case({"ArnNotEquals": {"ecs:cluster": CLUSTER}}, {"ecs:cluster": OTHER_CLUSTER}, True),
    "ArnNotEquals-equal": cond_case({"ArnNotEquals": {"ecs:cluster": CLUSTER}}, {"ecs:cluster": CLUSTER}, False),
    "ArnNotLike-matches": cond_case({"ArnNotLike": {"ecs:cluster": "arn:aws:ecs:*:*:cluster/m*"}},
                                    {"ecs:cluster": CLUSTER}, False),
    "ArnNotLike-differs": cond_case({"ArnNotLike": {"ecs:cluster": "arn:aws:ecs:*:*:cluster/m*"}},
                                    {"ecs:cluster": OTHER_CLUSTER}, True),
    "ArnNotLike-missing-is-true": cond_case({"ArnNotLike": {"ecs:cluster": CLUSTER}}, {}, True),
    # Bool
    "Bool-true": cond_case({"Bool": {"aws:SecureTransport": "true"}}, {"aws:SecureTransport": True}, True),
    "Bool-false": cond_case({"Bool": {"aws:SecureTransport": "true"}}, {"aws:SecureTransport": False}, False),
    "Bool-string-context": cond_case({"Bool": {"aws:SecureTransport": "false"}}, {"aws:SecureTransport": "false"},
                                     True),
    "Bool-missing": cond_case({"Bool": {"aws:SecureTransport": "true"}}, {}, False),
    "BoolIfExists-missing": cond_case({"BoolIfExists": {"aws:SecureTransport": "true"}}, {}, True),
    "BoolIfExists-present-false": cond_case({"BoolIfExists": {"aws:SecureTransport": "true"}},
                                            {"aws:SecureTransport": False}, False),
    # Null tests presence: "true" = the key must be absent.
    "Null-true-absent": cond_case({"Null": {"aws:RequestTag/owner": "true"}}, {}, True),
    "Null-true-present": cond_case({"Null": {"aws:RequestTag/owner": "true"}}, {"aws:RequestTag/owner": "x"}, False),
    "Null-false-present": cond_case({"Null": {"aws:RequestTag/owner": "false"}}, {"aws:RequestTag/owner": "x"}, True),
    "Null-false-absent": cond_case({"Null": {"aws:RequestTag/owner": "false"}}, {}, False),
    # Numeric
    "NumericEquals-match": cond_case({"NumericEquals": {"n": "3"}}, {"n": 3}, True),
    "NumericEquals-mismatch": cond_case({"NumericEquals": {"n": "3"}}, {"n": 4}, False),
    "NumericEquals-missing": cond_case({"NumericEquals": {"n": "3"}}, {}, False),
    "NumericNotEquals-differs": cond_case({"NumericNotEquals": {"n": "3"}}, {"n": 4}, True),
    "NumericNotEquals-equal": cond_case({"NumericNotEquals": {"n": "3"}}, {"n": "3"}, False),
    "NumericNotEquals-missing-is-true": cond_case({"NumericNotEquals": {"n": "3"}}, {}, True),
    "NumericLessThan-true": cond_case({"NumericLessThan": {"n": "3600"}}, {"n": 900}, True),
    "NumericLessThan-equal-false": cond_case({"NumericLessThan": {"n": "3600"}}, {"n": 3600}, False),
    "NumericLessThanEquals-equal": cond_case({"NumericLessThanEquals": {"n": "3600"}}, {"n": 3600}, True),
    "NumericLessThanEquals-above": cond_case({"NumericLessThanEquals": {"n": "3600"}}, {"n": 3601}, False),
    "NumericGreaterThan-true": cond_case({"NumericGreaterThan": {"n": "1"}}, {"n": "2"}, True),
    "NumericGreaterThan-equal-false": cond_case({"NumericGreaterThan": {"n": "1"}}, {"n": 1}, False),
    "NumericGreaterThanEquals-equal": cond_case({"NumericGreaterThanEquals": {"n": "1"}}, {"n": 1}, True),
    "NumericGreaterThanEquals-below": cond_case({"NumericGreaterThanEquals": {"n": "1"}}, {"n": 0}, False),
    "NumericLessThan-missing": cond_case({"NumericLessThan": {"n": "3600"}}, {}, False),
    # ...IfExists: true when the key is absent, the base operator when present.
    "StringEqualsIfExists-missing": cond_case({"StringEqualsIfExists": {PT: SVC}}, {}, True),
    "StringEqualsIfExists-present-match": cond_case({"StringEqualsIfExists": {PT: SVC}}, {PT: SVC}, True),
    "StringEqualsIfExists-present-mismatch": cond_case({"StringEqualsIfExists": {PT: SVC}}, {PT: "x"}, False),
    "ArnLikeIfExists-missing": cond_case({"ArnLikeIfExists": {"ecs:cluster": CLUSTER}}, {}, True),
    "ArnLikeIfExists-present-mismatch": cond_case({"ArnLikeIfExists": {"ecs:cluster": CLUSTER}},
                                                  {"ecs:cluster": OTHER_CLUSTER}, False),
    "NumericLessThanIfExists-missing": cond_case({"NumericLessThanIfExists": {"n": "1"}}, {}, True),
    "NumericLessThanIfExists-present-false": cond_case({"NumericLessThanIfExists": {"n": "1"}}, {"n": 5}, False),
    # Set operators on the multivalued aws:TagKeys.
    "ForAnyValue-one-matches": cond_case({"ForAnyValue:StringEquals": {"aws:TagKeys": ["managed-by"]}},
                                         {"aws:TagKeys": ["env", "managed-by"]}, True),
    "ForAnyValue-none-matches": cond_case({"ForAnyValue:StringEquals": {"aws:TagKeys": ["managed-by"]}},
                                          {"aws:TagKeys": ["env", "team"]}, False),
    "ForAnyValue-missing": cond_case({"ForAnyValue:StringEquals": {"aws:TagKeys": ["managed-by"]}}, {}, False),
    "ForAnyValue-empty": cond_case({"ForAnyValue:StringEquals": {"aws:TagKeys": ["managed-by"]}},
                                   {"aws:TagKeys": []}, False),
    "ForAllValues-all-in-set": cond_case({"ForAllValues:StringEquals": {"aws:TagKeys": ["env", "managed-by"]}},
                                         {"aws:TagKeys": ["managed-by", "env"]}, True),
    "ForAllValues-one-outside": cond_case({"ForAllValues:StringEquals": {"aws:TagKeys": ["env", "managed-by"]}},
                                          {"aws:TagKeys": ["managed-by", "owner"]}, False),
    "ForAllValues-missing-is-true": cond_case({"ForAllValues:StringEquals": {"aws:TagKeys": ["env"]}}, {}, True),
    "ForAllValues-empty-is-true": cond_case({"ForAllValues:StringEquals": {"aws:TagKeys": ["env"]}},
                                            {"aws:TagKeys": []}, True),
    "ForAllValues-StringLike": cond_case({"ForAllValues:StringLike": {"aws:TagKeys": ["team-*"]}},
                                         {"aws:TagKeys": ["team-a", "team-b"]}, True),
    "ForAllValues-StringNotLike-all-differ": cond_case({"ForAllValues:StringNotLike": {"aws:TagKeys": "key1*"}},
                                                       {"aws:TagKeys": ["key2:audit"]}, True),
    "ForAllValues-StringNotLike-one-matches": cond_case({"ForAllValues:StringNotLike": {"aws:TagKeys": "key1*"}},
                                                        {"aws:TagKeys": ["key1:hr", "key2:x"]}, False),
    "ForAllValues-with-Null-false-guard-missing": cond_case(
        {"ForAllValues:StringEquals": {"aws:TagKeys": ["env"]}, "Null": {"aws:TagKeys": "false"}}, {}, False),
    # Condition keys are case-insensitive; all operators and all keys are ANDed.
    "condition-key-case-insensitive-policy": cond_case({"StringEquals": {"IAM:PASSEDTOSERVICE": SVC}}, {PT: SVC}, True),
    "condition-key-case-insensitive-context": cond_case({"StringEquals": {PT: SVC}}, {"Iam:passedtoservice": SVC},
                                                        True),
    "operators-anded-one-false": cond_case({"StringEquals": {PT: SVC}, "ArnEquals": {"ecs:cluster": CLUSTER}},
                                           {PT: SVC, "ecs:cluster": OTHER_CLUSTER}, False),
    "operators-anded-all-true": cond_case({"StringEquals": {PT: SVC}, "ArnEquals": {"ecs:cluster": CLUSTER}},
                                          {PT: SVC, "ecs:cluster": CLUSTER}, True),
    "keys-anded-one-false": cond_case({"StringEquals": {PT: SVC, "aws:RequestTag/managed-by": "x"}},
                                      {PT: SVC, "aws:RequestTag/managed-by": "y"}, False),
    "keys-anded-all-true": cond_case({"StringEquals": {PT: SVC, "aws:RequestTag/managed-by": "x"}},
                                     {PT: SVC, "aws:RequestTag/managed-by": "x"}, True),
}


@pytest.mark.parametrize("policies,request_,allowed", CONDITION_CASES.values(), ids=CONDITION_CASES.keys())
def test_conditions(policies: list[dict[str, Any]], request_: Request, allowed: bool) -> None:
    d = evaluate(policies, request_)
    assert d.allowed is allowed, d.reason
    assert ("Cond" in d.reason) if allowed else ("implicit deny" in d.reason), d.reason


def test_tag_key_guard_denies_reserved_prefix() -> None:
    """A Deny on ForAnyValue:StringLike aws:TagKeys ["aws:*"] removes an otherwise allowed tag."""
    policies = [pol(st("ecs:TagResource", "*", sid="Tag"),
                    st("ecs:TagResource", "*", "Deny", sid="NoAwsTags",
                       condition={"ForAnyValue:StringLike": {"aws:TagKeys": ["aws:*"]}}))]
    assert evaluate(policies, req("ecs:TagResource", TASKDEF, **{"aws:TagKeys": ["env"]})).allowed
    d = evaluate(policies, req("ecs:TagResource", TASKDEF, **{"aws:TagKeys": ["env", "aws:x"]}))
    assert not d.allowed and "NoAwsTags" in d.reason, d.reason


# --- Malformed input never allows --------------------------------------------------------------
MALFORMED: dict[str, dict[str, Any]] = {
    "unknown-operator": pol(st("*", "*", condition={"StringEqualz": {PT: SVC}})),
    "unknown-set-operator": pol(st("*", "*", condition={"ForSomeValues:StringEquals": {PT: SVC}})),
    "unknown-element": pol(st("*", "*", Actions="ecs:RunTask")),
    "bad-effect": pol(st("*", "*", effect="Permit")),
    "no-statement": {"Version": "2012-10-17"},
    "no-action": pol(st(None, "*")),
    "identity-statement-without-resource": pol(st("*", None)),
    "action-and-notaction": pol(st("*", "*", NotAction="iam:*")),
    "resource-and-notresource": pol(st("*", "*", NotResource=BUCKET)),
    "condition-block-not-a-mapping": pol(st("*", "*", condition={"StringEquals": [PT, SVC]})),
}


@pytest.mark.parametrize("policy", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_raises(policy: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        evaluate([policy], req(resource=TASKDEF, **{PT: SVC}))


@pytest.mark.parametrize("principal", ["ecs-tasks.amazonaws.com", ["*"]])
def test_malformed_principal_raises(principal: Any) -> None:
    policy = {"Statement": [{"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}]}
    with pytest.raises(ValueError):
        evaluate_trust(policy, Request("sts:AssumeRole", "*", {}, {"Service": SVC}))


# --- Permissions boundary: identity ∩ boundary ---------------------------------------------------
BOUNDARY = pol(st(["ecs:*", "logs:*"], "*", sid="BoundaryAllows"),
               st("ecs:DeleteCluster", "*", "Deny", sid="BoundaryDenies"))
# (id, identity policy, request, allowed with the boundary, reason, allowed without it)
BOUNDARY_CASES: list[tuple[str, dict[str, Any], Request, bool, str, bool]] = [
    ("both-allow", pol(st("ecs:RunTask", TASKDEF, sid="Id")), req(resource=TASKDEF), True, "Id", True),
    ("identity-allows-boundary-does-not", pol(st("iam:PassRole", ROLE)), req("iam:PassRole", ROLE), False, "boundary",
     True),
    ("boundary-allows-identity-does-not", pol(st("ecs:StopTask", "*")), req(resource=TASKDEF), False, "implicit deny",
     False),
    ("boundary-explicit-deny", pol(st("ecs:*", "*")), req("ecs:DeleteCluster", CLUSTER), False, "BoundaryDenies",
     True),
    ("identity-explicit-deny", pol(st("ecs:*", "*"), st("ecs:RunTask", "*", "Deny", sid="IdDeny")),
     req(resource=TASKDEF), False, "IdDeny", False),
]


@pytest.mark.parametrize("identity,request_,allowed,reason,alone", [c[1:] for c in BOUNDARY_CASES],
                         ids=[c[0] for c in BOUNDARY_CASES])
def test_boundary(identity: dict[str, Any], request_: Request, allowed: bool, reason: str, alone: bool) -> None:
    d = evaluate([identity], request_, boundary=BOUNDARY)
    assert d.allowed is allowed, d.reason
    assert reason in d.reason, d.reason
    assert evaluate([identity], request_).allowed is alone


# --- Trust policies: the Principal must match --------------------------------------------------
def trust(principal: Any, action: str = "sts:AssumeRole", effect: str = "Allow",
          condition: dict[str, Any] | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {"Sid": "T", "Effect": effect, "Principal": principal, "Action": action}
    if condition:
        s["Condition"] = condition
    return {"Version": "2012-10-17", "Statement": [s]}


WEB = "sts:AssumeRoleWithWebIdentity"
SUB_COND = {"StringLike": {"oidc.circleci.com/org/O:sub": EXACT_PATTERN},
            "StringEquals": {"oidc.circleci.com/org/O:aud": "O"}}
TRUST_CASES: list[tuple[str, dict[str, Any], Request, bool]] = [
    ("federated-exact-sub", trust({"Federated": OIDC}, WEB, condition=SUB_COND),
     Request(WEB, "*", {"oidc.circleci.com/org/O:sub": LEGIT_SUB, "oidc.circleci.com/org/O:aud": "O"},
             {"Federated": OIDC}), True),
    ("federated-crafted-branch", trust({"Federated": OIDC}, WEB, condition=SUB_COND),
     Request(WEB, "*", {"oidc.circleci.com/org/O:sub": CRAFTED_SUB, "oidc.circleci.com/org/O:aud": "O"},
             {"Federated": OIDC}), False),
    ("federated-loose-pattern-admits-crafted-branch",
     trust({"Federated": OIDC}, WEB, condition={"StringLike": {"oidc.circleci.com/org/O:sub": LOOSE_PATTERN}}),
     Request(WEB, "*", {"oidc.circleci.com/org/O:sub": CRAFTED_SUB}, {"Federated": OIDC}), True),
    ("federated-other-provider", trust({"Federated": OIDC}, WEB),
     Request(WEB, "*", {}, {"Federated": OIDC + "X"}), False),
    ("federated-wrong-action", trust({"Federated": OIDC}, WEB), Request("sts:AssumeRole", "*", {}, {"Federated": OIDC}),
     False),
    ("service-match", trust({"Service": SVC}), Request("sts:AssumeRole", "*", {}, {"Service": SVC}), True),
    ("service-list", trust({"Service": ["ecs.amazonaws.com", SVC]}), Request("sts:AssumeRole", "*", {}, {"Service": SVC}),
     True),
    ("service-other", trust({"Service": SVC}), Request("sts:AssumeRole", "*", {}, {"Service": "ec2.amazonaws.com"}),
     False),
    ("service-vs-aws-kind", trust({"Service": SVC}), Request("sts:AssumeRole", "*", {}, {"AWS": SVC}), False),
    ("aws-arn-match", trust({"AWS": ROLE}), Request("sts:AssumeRole", "*", {}, {"AWS": ROLE}), True),
    ("aws-arn-other", trust({"AWS": ROLE}), Request("sts:AssumeRole", "*", {}, {"AWS": ROLE + "2"}), False),
    ("principal-star", trust("*"), Request("sts:AssumeRole", "*", {}, {"AWS": ROLE}), True),
    ("principal-aws-star", trust({"AWS": "*"}), Request("sts:AssumeRole", "*", {}, {"AWS": ROLE}), True),
    ("principal-none-given", trust({"Service": SVC}), Request("sts:AssumeRole", "*", {}, None), False),
    ("trust-deny", {"Version": "2012-10-17", "Statement": [
        {"Sid": "A", "Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole"},
        {"Sid": "D", "Effect": "Deny", "Principal": {"Service": SVC}, "Action": "sts:*"}]},
     Request("sts:AssumeRole", "*", {}, {"Service": SVC}), False),
]


@pytest.mark.parametrize("policy,request_,allowed", [c[1:] for c in TRUST_CASES], ids=[c[0] for c in TRUST_CASES])
def test_trust(policy: dict[str, Any], request_: Request, allowed: bool) -> None:
    d = evaluate_trust(policy, request_)
    assert d.allowed is allowed, d.reason


# --- Helpers ----------------------------------------------------------------------------------
def test_explain_denials_lists_only_denied_requests() -> None:
    policies = [pol(st("ecs:RunTask", TASKDEF, sid="Run"))]
    lines = explain_denials(policies, [Request("ecs:RunTask", TASKDEF, why="worker RunTask"),
                                       Request("ecs:StopTask", TASKDEF, why="worker StopTask")])
    assert len(lines) == 1
    assert "ecs:StopTask" in lines[0] and "worker StopTask" in lines[0] and "implicit deny" in lines[0]
    assert explain_denials(policies, [Request("ecs:StopTask", TASKDEF)], boundary=pol(st("ecs:StopTask", "*")))
    assert explain_denials([pol(st("ecs:*", "*"))], [Request("ecs:RunTask", TASKDEF)], boundary=pol(st("logs:*", "*")))


ECS_EXEC = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"


@pytest.mark.parametrize("action,resource,allowed", [
    ("ecr:GetAuthorizationToken", "*", True),
    ("ecr:BatchGetImage", f"arn:aws:ecr:us-east-1:{ACCT}:repository/data-flows", True),
    ("ecr:GetDownloadUrlForLayer", f"arn:aws:ecr:us-east-1:{ACCT}:repository/data-flows", True),
    ("ecr:BatchCheckLayerAvailability", f"arn:aws:ecr:us-east-1:{ACCT}:repository/data-flows", True),
    ("logs:CreateLogStream", f"arn:aws:logs:us-east-1:{ACCT}:log-group:/ecs/x", True),
    ("logs:PutLogEvents", f"arn:aws:logs:us-east-1:{ACCT}:log-group:/ecs/x:log-stream:s", True),
    ("ecr:PutImage", f"arn:aws:ecr:us-east-1:{ACCT}:repository/data-flows", False),
    ("logs:CreateLogGroup", f"arn:aws:logs:us-east-1:{ACCT}:log-group:/ecs/x", False),
    ("secretsmanager:GetSecretValue", "*", False),
])
def test_ecs_task_execution_managed_policy(action: str, resource: str, allowed: bool) -> None:
    assert evaluate([MANAGED_POLICIES[ECS_EXEC]], Request(action, resource)).allowed is allowed
