"""Plan once per run: bootstrap applies the plan it showed without reading everything
again, but only when that is safe; otherwise it reads again and refuses a changed plan.
One stack, its cases chained (each one induces a change, then applies it)."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from infra_tasks import aws, engine, lock
from infra_tasks.config import load_config

from .conftest import P, ROOT
from .prefect_runs import client

GROUP = f"/ecs/{P}-main/agent"


@pytest.fixture
def plans(monkeypatch) -> list[str]:
    """Every engine.plan() of the run: "plan" (bootstrap's, before the apply) then the
    apply's ("reread" when it reads everything again, "verify")."""
    seen: list[str] = []
    real = engine.plan

    def counted(*args: Any, **kwargs: Any) -> Any:
        seen.append("plan")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "plan", counted)
    return seen


def drift(boto: Callable[[str], Any], days: int) -> None:
    boto("logs").put_retention_policy(logGroupName=GROUP, retentionInDays=days)


def retention(boto: Callable[[str], Any]) -> int:
    return boto("logs").describe_log_groups(logGroupNamePrefix=GROUP)["logGroups"][0]["retentionInDays"]


def test_the_plan_shown_is_applied_unless_the_lock_moved_or_it_is_old(bootstrap, boto, plans, monkeypatch,
                                                                     capsys) -> None:
    import flows.apply
    import flows.bootstrap

    cfg = load_config(ROOT / "infra.toml")
    want = cfg.logs.retention_days
    # Cold: the lock did not exist before the plan and this run created it, so no other run
    # can have held it in between: the plan shown is applied; only the verify reads again.
    assert bootstrap("--yes", prefect=True) == 0
    assert len(plans) == 2

    # 0. The lock did not exist before the plan, and another run created, took and released
    # it in between: read again.
    def another_run_meanwhile(plan: Any, assume_yes: bool) -> bool:
        with lock.held(cfg, "production", command="another run"):
            pass
        return True

    with client() as c:
        c.delete_global_concurrency_limit_by_name(lock.lock_name(P, "production"))
    confirm = flows.bootstrap.confirm
    monkeypatch.setattr(flows.bootstrap, "confirm", another_run_meanwhile)
    drift(boto, 7)
    plans.clear()
    assert bootstrap("--yes", prefect=True) == 0
    assert len(plans) == 3 and retention(boto) == want
    monkeypatch.setattr(flows.bootstrap, "confirm", confirm)

    # 1. Nothing else happened: the plan shown is applied; only the verify reads again.
    drift(boto, 7)
    plans.clear()
    aws.CALLS.reset()
    assert bootstrap("--yes", prefect=True) == 0
    assert len(plans) == 2
    assert aws.CALLS.mutating() == ["logs:PutRetentionPolicy"]
    assert retention(boto) == want

    # 2. Another run took and released the lock between the plan and the apply: read again.
    monkeypatch.setattr(flows.bootstrap, "confirm", another_run_meanwhile)
    drift(boto, 7)
    plans.clear()
    assert bootstrap("--yes", prefect=True) == 0
    assert len(plans) == 3 and retention(boto) == want

    # 3. ... and it changed what the plan showed: nothing is applied.
    def another_run_changes_it(plan: Any, assume_yes: bool) -> bool:
        with lock.held(cfg, "production", command="another run"):
            drift(boto, 14)
        return True

    monkeypatch.setattr(flows.bootstrap, "confirm", another_run_changes_it)
    drift(boto, 7)
    capsys.readouterr()
    aws.CALLS.reset()
    assert bootstrap("--yes", prefect=True) == 1
    assert "changed between the plan you confirmed and the apply" in capsys.readouterr().err
    assert aws.CALLS.mutating() == [] and retention(boto) == 14

    # 4. A plan older than REUSE_SECONDS (a slow answer at the prompt) is read again.
    monkeypatch.setattr(flows.bootstrap, "confirm", lambda plan, assume_yes: True)
    monkeypatch.setattr(flows.apply, "REUSE_SECONDS", 0.0)
    plans.clear()
    assert bootstrap("--yes", prefect=True) == 0
    assert len(plans) == 3 and retention(boto) == want


def test_without_the_prefect_side_a_fresh_plan_is_applied_as_shown(bootstrap, boto, plans) -> None:
    """No lock (it lives in Prefect): `--yes` applies the plan it just read."""
    assert bootstrap("--yes") == 0
    drift(boto, 7)
    plans.clear()
    assert bootstrap("--yes") == 0
    assert len(plans) == 2
