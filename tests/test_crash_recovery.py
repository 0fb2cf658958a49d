"""Crash consistency: a bootstrap that dies after any mutating AWS call, its answer
lost, is finished by a plain re-run, which leaves exactly what a clean run leaves (see
tests/crash.py for how a death is injected)."""

from __future__ import annotations

import pytest

from .crash import Death, bootstrap_dying, converges, reference


# Every ninth mutating call of a cold dev bootstrap (AWS only); the windows right after
# each kind of create are hit exactly below. The Prefect side: test_crash_recovery_prefect.
AWS_ONLY_POINTS = list(range(1, 47, 9))


@pytest.mark.parametrize("k", AWS_ONLY_POINTS)
def test_death_after_any_mutating_call_is_finished_by_a_rerun(k, dev_account, moto_url, monkeypatch,
                                                              capsys) -> None:
    ref = reference(False, dev_account, moto_url)
    if k > ref["mutating"]:
        pytest.fail(f"the clean run makes only {ref['mutating']} mutating calls: lower the crash points")
    death = Death(aws_k=k)
    bootstrap_dying(death, monkeypatch, "--no-prefect")
    assert death.dead_after is not None
    converges(dev_account, ref, False, capsys)


# The windows between creating a resource and finishing it (tags, policies, rules,
# targets), each hit exactly. A bucket is tagged in its create call: before that, dying
# here left a bucket the re-run refused without --adopt.
WINDOWS = ["s3:CreateBucket", "ec2:CreateSecurityGroup", "iam:CreateRole", "iam:CreatePolicy",
           "sqs:CreateQueue", "events:PutRule", "ecs:RegisterTaskDefinition", "ecs:CreateService"]


@pytest.mark.parametrize("op", WINDOWS)
def test_death_right_after_a_create_is_finished_by_a_rerun(op, dev_account, moto_url, monkeypatch, capsys) -> None:
    ref = reference(False, dev_account, moto_url)
    death = Death(after_op=op)
    bootstrap_dying(death, monkeypatch, "--no-prefect")
    assert death.dead_after is not None and death.dead_after.startswith(op)
    converges(dev_account, ref, False, capsys)


def test_crash_points_cover_the_whole_cold_run(dev_account, moto_url) -> None:
    ref = reference(False, dev_account, moto_url)
    # The points above reach the last few calls of a cold run (the agent service and its
    # scaling come last); if the run grows, the points must follow.
    assert ref["mutating"] - 9 < AWS_ONLY_POINTS[-1] <= ref["mutating"], ref["mutating"]


