"""`python -m flows.sandbox` end to end: a real Prefect server, the emulator, the
bootstrap and a process worker. The scheduled drift check fires and completes with its
artifact; an infra-update run pauses for approval and applies after resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from infra_tasks.emulator import free_port

from .conftest import P, ROOT, shared_tmp
from .prefect_db import copied



def _healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _processes_using(api: str) -> list[int]:
    """Processes (the sandbox's worker and flow runs) whose environment points at `api`."""
    import glob

    found = []
    for path in glob.glob("/proc/[0-9]*/environ"):
        try:
            with open(path, "rb") as f:
                if f"PREFECT_API_URL={api}".encode() in f.read().split(b"\0"):
                    found.append(int(path.split("/")[2]))
        except OSError:
            continue
    return found


@pytest.mark.timeout(600)
def test_sandbox_schedules_drift_check_and_applies_an_approved_update(tmp_path, tmp_path_factory) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.deployments import run_deployment
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "AWS_", "INFRA_"))}
    env["PREFECT_LOGGING_LEVEL"] = "INFO"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "retry_site"), str(ROOT)])  # sooner Prefect retries
    # Its Prefect server starts from the run's migrated database (tests/prefect_db.py); a
    # sandbox's first start, migrations included, is the UI journey's (ui_tests/, in .ci/run).
    env.update(copied(shared_tmp(tmp_path_factory), tmp_path / "state" / "prefect-home" / "prefect.db"))
    log = open(tmp_path / "sandbox.out", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "flows.sandbox", "--port", str(port), "--drift-cron",
                             "* * * * *", "--state-dir", str(tmp_path / "state"), "--exit-after", "400"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def output() -> str:
        return (tmp_path / "sandbox.out").read_text(errors="replace")[-4000:]
    try:
        deadline = time.monotonic() + 240
        while "Sandbox is up." not in output():
            assert proc.poll() is None, output()
            assert time.monotonic() < deadline, output()
            time.sleep(1)
        assert _healthy(api)
        # The banner names the three management deployments, the prune with its protection.
        assert f"Prune             run deployment infra-prune/{P}-production-infra-prune the same way" in output()
        assert "after approval with the name typed." in output()
        with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as c:
            # The scheduled drift check fires (cron every minute) and completes in sync.
            deadline = time.monotonic() + 180
            done = []
            while not done:
                assert time.monotonic() < deadline, output()
                runs = c.read_flow_runs(deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=[f"{P}-production-drift-check"])))
                done = [r for r in runs if r.state_name == "Completed"]
                failed = [r for r in runs if r.state and r.state.is_failed()]
                assert not failed, (failed[0].state.message, output())
                time.sleep(2)
            assert "56 IN_SYNC" in done[0].state.message
            assert c.read_artifacts()  # the drift table and summary
            # An update triggered through the API pauses for approval and applies after resume.
            run = run_deployment(f"infra-update/{P}-production-infra-update", timeout=0, parameters={
                "request": {"environment": "production", "flow_cpu": 2048, "flow_memory": 4096}})
            deadline = time.monotonic() + 120
            while c.read_flow_run(run.id).state_name != "Paused":
                assert time.monotonic() < deadline, output()
                time.sleep(1)
            resume_flow_run(run.id, run_input={"decision": "approve", "comment": "test"})
            deadline = time.monotonic() + 120
            while not (state := c.read_flow_run(run.id).state).is_final():
                assert time.monotonic() < deadline, output()
                time.sleep(1)
            assert state.is_completed(), state.message
            pool = c.read_work_pool(f"{P}-main")
            props = pool.base_job_template["variables"]["properties"]
            assert (props["cpu"]["default"], props["memory"]["default"]) == (2048, 4096)
        # SIGTERM stops it as Ctrl-C does: its server and worker end with it.
        assert _processes_using(api), "the worker should be running"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0, output()
        assert "stopping ..." in output()
        assert _processes_using(api) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()
    # Everything it started is gone.
    assert not _healthy(api)
