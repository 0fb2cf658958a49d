"""Where AWS calls go (`--sandbox`, `--endpoint-url`) and how progress is shown."""

from __future__ import annotations

import io
import os

from infra_tasks import aws, emulator
from infra_tasks.progress import Reporter

from .conftest import run_cli


def test_endpoint_url_sends_every_call_there(moto_url, prefect_clean, capsys, monkeypatch) -> None:
    emulator.reset(moto_url)
    for var in ("AWS_ENDPOINT_URL", "INFRA_SANDBOX_ACCOUNT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    aws.reset_clients()
    aws.CALLS.reset()
    # The emulator answers as its default account when no sandbox header is sent.
    code = run_cli("--env", "production", "--endpoint-url", moto_url, "--plan", "--no-prefect",
                   "--set", 'environments.production.account_id="123456789012"')
    assert code == 2
    out = capsys.readouterr().out
    assert "Plan for production (account 123456789012, us-east-1): 45 to create" in out
    assert aws.CALLS.total > 40 and aws.CALLS.mutating() == []
    assert "AWS_ENDPOINT_URL" not in os.environ  # restored afterwards


def test_sandbox_flag_starts_its_own_emulator(moto_url, prefect_clean, capsys, monkeypatch) -> None:
    for var in ("AWS_ENDPOINT_URL", "INFRA_SANDBOX_ACCOUNT"):
        monkeypatch.delenv(var, raising=False)
    emulator.reset(moto_url)  # moto's state is per process: start from empty
    assert run_cli("--env", "dev", "--sandbox", "--plan", "--no-prefect") == 2
    captured = capsys.readouterr()
    assert "sandbox: AWS emulator at http://127.0.0.1:" in captured.err
    assert "Plan for dev (account 111111111111, us-east-1): 27 to create" in captured.out
    assert "INFRA_SANDBOX_ACCOUNT" not in os.environ and "AWS_ENDPOINT_URL" not in os.environ


def test_plain_progress_lines_off_a_terminal() -> None:
    out = io.StringIO()
    with Reporter(2, live=False, stream=out) as r:
        r.started("iam.role/a", "create")
        r.finished("iam.role/a", "create")
        r.started("ecs.service/b", "update")
        r.finished("ecs.service/b", "update", error="boom")
        r.waiting("agent service b to become stable")
    assert out.getvalue().splitlines() == [
        "[1/2] create done: iam.role/a", "[2/2] FAILED update: ecs.service/b",
        "waiting: agent service b to become stable"]


def test_live_progress_shows_done_total_and_what_is_waited_on() -> None:
    out = io.StringIO()
    with Reporter(3, live=True, stream=out) as r:
        r.started("s3.bucket/x", "create")
        r._progress.refresh()
        assert "waiting on: s3.bucket/x" in out.getvalue()
        r.finished("s3.bucket/x", "create")
    assert "1/3" in out.getvalue()


def test_no_prefect_api_gives_one_clear_line(tmp_path) -> None:
    """Without a configured Prefect API, Prefect starts a temporary local server. A start
    that does not finish within the budget (here an artificially short one) ends with one
    line naming what to set, exit 1, no traceback, nothing changed."""
    import os
    import subprocess
    import sys

    from .conftest import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "AWS_", "INFRA_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="0")
    out = subprocess.run([sys.executable, "-m", "flows.bootstrap", "--sandbox", "--env", "dev", "--yes"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "PREFECT_API_URL" in errors[0] and "Nothing was changed" in errors[0], out.stderr
    assert "(0 mutating)" in out.stderr


def test_temporary_prefect_server_gets_a_longer_start_up_budget(monkeypatch) -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    from flows.cli import EPHEMERAL_STARTUP_SECONDS, prefect_target

    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", raising=False)
    with temporary_settings(updates={PREFECT_API_URL: None}, restore_defaults={PREFECT_API_URL}), prefect_target():
        assert PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value() == EPHEMERAL_STARTUP_SECONDS == 180
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:1/api"}), prefect_target():
        assert PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value() == 20  # a configured API: untouched
