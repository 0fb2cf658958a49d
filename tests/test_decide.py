"""`decide()` and `blocking()` as tables: what was read (and what is known) in, the
change out. Pure: no emulator, no Prefect."""

from __future__ import annotations

from typing import Any

import pytest

from infra_tasks.engine import Decision, blocking, decide, decide_all
from infra_tasks.model import OWNER_TAG, Action, Change, Observed, Ref, Resource

OWNER = "prefect-aws-stack/data-flows"
OURS = {OWNER_TAG: OWNER}
HOW = Decision(OWNER)


def res(kind: str, name: str = "x", deps: tuple[str, ...] = (), ident: dict[str, Any] | None = None,
        **props: Any) -> Resource:
    return Resource(kind, name, props, deps=deps, ident=ident or {})


def seen(tags: dict[str, str] | None = None, **props: Any) -> Observed:
    return Observed(props, outputs={"arn": "arn:aws:x"}, tags=dict(OURS if tags is None else tags))


LOG = "logs.group"
CASES = [
    # (case, resource, observed, how, expected action, expected reason fragment, expected diff paths)
    ("missing: created", res(LOG, retention=30), None, HOW, Action.CREATE, "does not exist", []),
    ("same: nothing to do", res(LOG, retention=30), seen(retention=30), HOW, Action.NOOP, "in sync", []),
    ("None is not managed", res(LOG, retention=None), seen(retention=7), HOW, Action.NOOP, "in sync", []),
    ("one property differs", res(LOG, retention=30), seen(retention=7), HOW, Action.UPDATE, "1 property differs",
     ["retention"]),
    ("two properties differ", res(LOG, retention=30, kms=None, cls="STANDARD"), seen(retention=7, cls="IA"), HOW,
     Action.UPDATE, "2 properties differ", ["cls", "retention"]),
    ("another stack's", res(LOG, retention=30), seen({OWNER_TAG: "someone-else"}, retention=30), HOW,
     Action.CONFLICT, "owned by another stack", []),
    ("another stack's, --adopt", res(LOG, retention=30), seen({OWNER_TAG: "someone-else"}, retention=30),
     Decision(OWNER, adopt=True), Action.NOOP, "adopting (adds ownership tag); in sync", []),
    ("untagged", res(LOG, retention=30), seen({}, retention=30), HOW, Action.CONFLICT,
     "exists without the ownership tag", []),
    ("untagged, --adopt, differs", res(LOG, retention=30), seen({}, retention=7), Decision(OWNER, adopt=True),
     Action.UPDATE, "adopting (adds ownership tag); 1 property differs", ["retention"]),
    ("untagged shared provider: adopted as it is", res("iam.oidc_provider", audience_registered=True,
                                                         tags={OWNER_TAG: OWNER}),
     seen({}, audience_registered=True), HOW, Action.NOOP, "adopted existing; in sync", []),
    ("our tags compared, others' left alone", res(LOG, tags={OWNER_TAG: OWNER, "env": "dev"}),
     seen({**OURS, "env": "prod", "team": "x"}), HOW, Action.UPDATE, "1 property differs", ["tags.env"]),
    ("cannot change in place", res("ec2.security_group", vpc_id="vpc-2", description="d"),
     seen(vpc_id="vpc-1", description="d"), HOW, Action.REPLACE, "vpc_id changed: cannot change in place",
     ["vpc_id"]),
    ("a new revision is safe", res("ecs.task_definition", cpu="512"), seen({}, cpu="256"), HOW, Action.REPLACE,
     "cpu changed: registers a new revision", ["cpu"]),
    ("revision drift is not a foreign resource", res("ecs.task_definition", cpu="256"), seen({}, cpu="256"), HOW,
     Action.NOOP, "in sync", []),
    ("untaggable kinds have no owner check", res("prefect.work_pool", type="ecs"), seen({}, type="ecs"), HOW,
     Action.NOOP, "in sync", []),
    ("on AWS every property is compared", res("ecs.service", deploymentConfiguration={"a": 1}),
     seen(deploymentConfiguration=None), HOW, Action.UPDATE, "1 property differs", ["deploymentConfiguration"]),
    ("on the emulator what it does not store is not", res("ecs.service", deploymentConfiguration={"a": 1}),
     seen(deploymentConfiguration=None), Decision(OWNER, emulated=True), Action.NOOP, "in sync", []),
    ("a secret without credentials cannot be created", res("secretsmanager.secret", value=None,
                                                           ident={"initial": None}),
     None, HOW, Action.CREATE, "no credentials were given", []),
]


@pytest.mark.parametrize(("case", "resource", "observed", "how", "action", "reason", "paths"), CASES,
                         ids=[c[0] for c in CASES])
def test_decide(case: str, resource: Resource, observed: Observed | None, how: Decision, action: Action,
                reason: str, paths: list[str]) -> None:
    change = decide(resource, observed, {}, how)
    assert change.action is action
    assert reason in change.reason
    assert sorted(d.path for d in change.diffs) == paths
    assert change.deferred is None


def test_references_resolve_against_what_dependencies_report() -> None:
    r = res("sqs.queue", deps=("sqs.queue/dlq",), redrive=Ref("sqs.queue/dlq", "arn"))
    assert decide(r, seen(redrive="arn:dlq"), {"sqs.queue/dlq": {"arn": "arn:dlq"}}, HOW).action is Action.NOOP
    assert decide(r, seen(redrive="arn:old"), {"sqs.queue/dlq": {"arn": "arn:dlq"}}, HOW).action is Action.UPDATE


# --- the agent image: waiting is decided here, for the task definition and what depends on it ---

TASKDEF = res("ecs.task_definition", "agent", cpu="256")
SERVICE = res("ecs.service", "svc", deps=("ecs.task_definition/agent",), taskdef=Ref("ecs.task_definition/agent", "arn"))
TARGET = res("autoscaling.target", "t", deps=("ecs.service/svc",), high=2)
NO_IMAGE = Decision(OWNER, missing_image="prefect-agent-1")


@pytest.mark.parametrize(("observed", "how", "deferred"), [
    (None, NO_IMAGE, True),                        # a new agent: waits for the push
    (seen({}, cpu="128"), NO_IMAGE, True),         # a new revision: waits too
    (seen({}, cpu="256"), NO_IMAGE, False),        # in sync: nothing to wait for
    (None, HOW, False),                            # the image is there
], ids=["create", "revision", "in-sync", "image-present"])
def test_the_agent_task_definition_waits_for_its_image(observed: Observed | None, how: Decision,
                                                       deferred: bool) -> None:
    change = decide(TASKDEF, observed, {}, how)
    assert (change.deferred is not None) is deferred
    if deferred:
        assert "prefect-agent-1" in change.deferred and "deferred:" in change.reason
        assert blocking(change) is None


def test_what_depends_on_a_waiting_change_waits_and_the_rest_does_not() -> None:
    resources = [TASKDEF, SERVICE, TARGET, res(LOG, "other", retention=30)]
    changes = {c.key: c for c in decide_all(resources, {}, NO_IMAGE)}
    assert changes["ecs.task_definition/agent"].deferred
    assert changes["ecs.service/svc"].deferred        # depends on the task definition
    assert changes["autoscaling.target/t"].deferred   # depends on the service, which waits
    assert changes[f"{LOG}/other"].deferred is None  # unrelated: applied


def test_an_unchanged_dependant_of_a_waiting_change_is_not_deferred() -> None:
    follower = res(LOG, "follower", deps=("ecs.task_definition/agent",), retention=30)
    changes = {c.key: c for c in decide_all([TASKDEF, follower], {follower.key: seen(retention=30)}, NO_IMAGE)}
    assert changes["ecs.task_definition/agent"].deferred
    assert changes[follower.key].action is Action.NOOP and changes[follower.key].deferred is None


# --- blocking(): what stops the apply before any change --------------------------------------

def change(action: Action, kind: str = LOG, **kw: Any) -> Change:
    return Change(res(kind), action, "the reason", **kw)


@pytest.mark.parametrize(("c", "blocks"), [
    (change(Action.CREATE), None),
    (change(Action.UPDATE), None),
    (change(Action.NOOP), None),
    (change(Action.CONFLICT), "logs.group/x: the reason"),
    (change(Action.NOT_CHECKED), "logs.group/x: the reason"),
    (change(Action.REPLACE, "ec2.security_group"), "ec2.security_group/x: the reason"),
    (change(Action.REPLACE, "ecs.task_definition"), None),
    (change(Action.CREATE, blocker="no credentials"), "no credentials"),
    (change(Action.CREATE, blocker="no credentials", deferred="waits for the image"), None),
    (change(Action.CONFLICT, deferred="waits for the image"), None),
], ids=["create", "update", "noop", "conflict", "not-checked", "unsafe-replace", "safe-replace", "blocker",
        "deferred-blocker", "deferred-conflict"])
def test_blocking(c: Change, blocks: str | None) -> None:
    assert blocking(c) == blocks
