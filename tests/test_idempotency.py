"""The four-step check for every resource kind: plan shows changes -> apply ->
plan is clean -> a second apply makes zero mutating AWS calls."""

from __future__ import annotations

from collections import Counter

import pytest

from flows.bootstrap import run_apply
from infra_tasks import aws, engine
from infra_tasks.config import load_config
from infra_tasks.model import Action
from infra_tasks.prefect_objects import PREFECT_CALLS

from .conftest import ROOT

# Every kind a bootstrap creates (prefect.variable is only read and deleted, by a teardown).
KINDS = sorted(k for k in engine.HANDLERS if k != "prefect.variable")


@pytest.fixture
def four_steps(aws_env, prefect_clean):
    from .test_alerts import BLOCK, WITH_BLOCK, webhook_block

    # The alerts automation exists only with a notification block configured (never called here).
    webhook_block("http://127.0.0.1:9/unused")
    cfg = load_config(ROOT / "infra.toml", WITH_BLOCK)
    first = engine.plan(cfg, "production", include_prefect=True)
    args = {"env": "production", "config_path": str(ROOT / "infra.toml"), "overrides": WITH_BLOCK}
    run_apply(args, first, parallelism=8, live=False)
    second = engine.plan(cfg, "production", include_prefect=True)
    aws.CALLS.reset()
    PREFECT_CALLS.reset()
    # The second apply: through the same CLI path a user takes.
    from .conftest import run_cli
    code = run_cli("--env", "production", "--yes", "--set", f"prefect.alerts_block={BLOCK}")  # with the Prefect side
    return first, second, code, aws.CALLS.mutating() + PREFECT_CALLS.mutating(), aws.CALLS.total


def test_every_kind_is_planned_applied_and_then_quiet(four_steps) -> None:
    first, second, code, mutating, total = four_steps
    created = Counter(c.resource.kind for c in first.changes if c.action is Action.CREATE)
    assert set(created) == set(KINDS), f"kinds without a create in a cold plan: {set(KINDS) - set(created)}"
    for kind in KINDS:
        in_sync = [c for c in second.changes if c.resource.kind == kind]
        assert in_sync and all(c.action is Action.NOOP for c in in_sync), \
            [(c.key, c.reason, c.diffs) for c in in_sync if c.action is not Action.NOOP]
    assert code == 0
    assert mutating == [], f"a re-run made mutating calls: {mutating}"
    aws_resources = [c for c in second.changes if not c.resource.kind.startswith("prefect.")]
    assert total >= len(aws_resources)  # it read every AWS resource again (at least one call each)


def test_plan_exit_codes(bootstrap, capsys) -> None:
    assert bootstrap("--plan") == 2
    assert "45 to create" in capsys.readouterr().out
    assert aws.CALLS.mutating() == []  # a plan never mutates
    assert bootstrap("--yes") == 0
    assert bootstrap("--plan") == 0
    assert "No changes" in capsys.readouterr().out


def test_plan_exit_1_on_aws_error(bootstrap, capsys, monkeypatch) -> None:
    # A VPC that does not exist: the plan cannot be computed.
    assert bootstrap("--plan", "--set", 'environments.production.network.vpc={id="vpc-0000000000000dead"}') == 1
    err = capsys.readouterr().err
    assert "environments.production.network.vpc.id = 'vpc-0000000000000dead'" in err
    assert aws.CALLS.mutating() == []


def test_apply_refuses_without_terminal_or_yes(bootstrap, capsys, monkeypatch) -> None:
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert bootstrap() == 1
    assert "pass --yes" in capsys.readouterr().err
    assert aws.CALLS.mutating() == []


def test_stale_plan_is_refused(aws_env, prefect_clean, boto) -> None:
    """If AWS changes between the confirmed plan and the apply, nothing is applied."""
    from infra_tasks.aws import InfraError

    cfg = load_config(ROOT / "infra.toml")
    plan = engine.plan(cfg, "production", include_prefect=True)
    boto("logs").create_log_group(logGroupName="/ecs/data-flows-main/agent")
    aws.CALLS.reset()
    PREFECT_CALLS.reset()
    with pytest.raises(InfraError, match="changed between the plan you confirmed and the apply"):
        run_apply({"env": "production", "config_path": str(ROOT / "infra.toml")}, plan, 4, live=False)
    assert aws.CALLS.mutating() == []
    assert PREFECT_CALLS.mutating() == ["prefect:CreateGlobalConcurrencyLimit"]  # only the run's own lock, made new
