"""`--endpoint-url` against a standalone moto server (`moto_server`, another process,
none of the sandbox's emulator patches): bootstrap, a second run with zero mutating
calls, `--plan` exit 0 and a drift check in sync. The emulator is recognised from the
endpoint itself (no flag), so its known gaps are allowed for and no stability wait runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from infra_tasks import aws, emulator

ACCOUNT = "123456789012"  # moto's default account: a standalone server is asked without a header


@pytest.fixture
def standalone(prefect_clean, monkeypatch) -> Iterator[str]:
    port = emulator.free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/config", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        for var in ("AWS_ENDPOINT_URL", "INFRA_SANDBOX_ACCOUNT", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "standalone")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "standalone")
        # Outside the sandbox the credentials secret is created from these (never printed).
        from prefect.settings import PREFECT_API_URL

        monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
        monkeypatch.setenv("PREFECT_API_KEY", "pnu_standalone_test_key")
        aws.reset_clients()
        yield url
    finally:
        server.terminate()
        server.wait(30)
        aws.reset_clients()


def push_image(url: str, repository: str, tag: str) -> None:
    from .worker_harness import push_image as put

    put(url, {"AWS_ACCESS_KEY_ID": "standalone", "AWS_SECRET_ACCESS_KEY": "standalone"}, repository, tag)


def test_bootstrap_rerun_plan_and_drift_check_against_moto_server(standalone, capsys) -> None:
    from flows import drift_check

    from .conftest import run_cli

    account = ("--set", f'environments.dev.account_id="{ACCOUNT}"')
    common = ("--env", "dev", "--endpoint-url", standalone, *account)
    # First run: everything but the agent, which waits for its image (as on AWS).
    assert run_cli(*common, "--yes") == 0, capsys.readouterr().err
    assert "Waiting, not applied: ecs.task_definition/data-flows-dev-agent" in capsys.readouterr().out
    push_image(standalone, "data-flows", "prefect-agent-0.1.0")  # what CI's docker push leaves in ECR
    assert run_cli(*common, "--yes") == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "stable" not in err  # no wait for services an emulator never runs
    aws.CALLS.reset()
    assert run_cli(*common, "--yes") == 0
    assert aws.CALLS.mutating() == []
    assert run_cli(*common, "--plan") == 0
    assert drift_check.main(["--env", "dev", "--endpoint-url", standalone, *account]) == 0
    out = capsys.readouterr().out
    assert "34 IN_SYNC, 0 MODIFIED, 0 DELETED, 0 UNMANAGED, 0 NOT_CHECKED" in out
    assert "In sync: everything matches the configuration." in out
    assert "AWS_ENDPOINT_URL" not in os.environ
