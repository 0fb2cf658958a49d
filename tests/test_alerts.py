"""Drift alerts: the automation bootstrap registers when `prefect.alerts_block` names a
notification block. End to end: drift induced, the drift check run from its deployment
ends Failed, the Prefect server's triggers fire the automation, and a custom-webhook
block delivers the alert to an HTTP server in this test; an infra-update run that ends
Crashed alerts once, one that ends Completed or Failed not at all."""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any, Iterator

import pytest

from infra_tasks import aws
from infra_tasks.config import NO_ALERTS_NOTE
from infra_tasks.desired_prefect import alert_automation_name
from infra_tasks.prefect_objects import PREFECT_CALLS

from .conftest import P, run_cli
from .prefect_runs import client, run_drift

BLOCK = "custom-webhook/infra-alerts-test"
# What infra.toml would say (the test passes it as the runs' overrides and bootstrap's --set).
WITH_BLOCK = {"prefect": {"alerts_block": BLOCK}}
AUTOMATION = alert_automation_name(P, "production")


class Hook:
    """An HTTP server on 127.0.0.1 (free port) that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                received.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.received = received
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alert"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, count: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.25)
        return list(self.received)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.stop()


def webhook_block(url: str) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    CustomWebhookNotificationBlock(name="infra alerts", url=url, json_data={"subject": "{{subject}}",
                                                                            "body": "{{body}}"}).save(
        BLOCK.split("/", 1)[1], overwrite=True)


def run_from_deployment(name: str) -> Any:
    """The drift check as its deployment runs it (the run belongs to the deployment, so
    its state events name it), executed here instead of by a worker."""
    from prefect.flow_engine import run_flow

    from flows.drift_check import drift_check

    with client() as c:
        dep = c.read_deployment_by_name(name)
        run = c.create_flow_run_from_deployment(dep.id, parameters={**dep.parameters, "overrides": WITH_BLOCK})
    return run_flow(drift_check, flow_run=run, parameters=run.parameters, return_type="state")


def update_run_ending(final: Any) -> Any:
    """A run of the infra-update deployment taken through Pending and Running to `final`
    through the API, as a worker and the engine take it: the server emits the same
    `prefect.flow-run.<state>` event as for a real run (a worker that loses the process
    sets Crashed just so). Returns the flow run."""
    from prefect.states import Pending, Running

    with client() as c:
        dep = c.read_deployment_by_name(f"infra-update/{P}-production-infra-update")
        run = c.create_flow_run_from_deployment(dep.id, parameters={"request": {"environment": "production"}})
        for state in (Pending(), Running(), final):
            result = c.set_flow_run_state(run.id, state)
            assert result.status.value == "ACCEPT", (state.name, result.details)
    return run


# --- on the shared stack (no alerts block: what the plan says; a missing block) -------------

def test_plan_without_block_says_so(warm_prefect_stack, capsys) -> None:
    capsys.readouterr()
    assert run_cli("--env", "production", "--plan") == 0
    out = capsys.readouterr().out
    assert f"note: {NO_ALERTS_NOTE}" in out
    assert "prefect.automation" not in out


def test_missing_block_is_refused_naming_key_and_block(warm_prefect_stack, capsys) -> None:
    capsys.readouterr()
    PREFECT_CALLS.reset()
    assert run_cli("--env", "production", "--yes", "--set", "prefect.alerts_block=custom-webhook/nope") == 1
    err = capsys.readouterr().err
    assert "prefect.alerts_block = 'custom-webhook/nope'" in err and "no 'custom-webhook' block named 'nope'" in err
    assert "Traceback" not in err
    assert aws.CALLS.mutating() == [] and PREFECT_CALLS.mutating() == []


# --- end to end on a fresh stack ------------------------------------------------------------

@pytest.mark.timeout(300)
def test_drift_alert_reaches_the_webhook(bootstrap, boto, hook, capsys) -> None:
    from prefect.events.schemas.automations import AutomationCore

    from flows.drift_check import Status

    webhook_block(hook.url)
    with_block = ("--set", f"prefect.alerts_block={BLOCK}")
    assert bootstrap("--yes", *with_block, prefect=True) == 0
    with client() as c:
        [auto] = c.read_automations_by_name(AUTOMATION)
        drift_dep = c.read_deployment_by_name(f"drift-check/{P}-production-drift-check")
        assert f"prefect.deployment.{drift_dep.id}" in json.dumps(auto.trigger.model_dump(mode="json"))
    # A re-run writes nothing.
    capsys.readouterr()
    PREFECT_CALLS.reset()
    aws.CALLS.reset()
    assert bootstrap("--yes", *with_block, prefect=True) == 0
    assert PREFECT_CALLS.mutating() == [] and aws.CALLS.mutating() == []
    assert NO_ALERTS_NOTE not in capsys.readouterr().out

    # Drift, found by the drift check its deployment runs: one alert naming the environment.
    boto("logs").put_retention_policy(logGroupName=f"/ecs/{P}-main/agent", retentionInDays=7)
    state = run_from_deployment(f"drift-check/{P}-production-drift-check")
    assert state.is_failed()
    got = hook.wait(1, timeout=60)
    assert len(got) == 1, got
    assert "production" in got[0]["subject"] and "drift-check" in got[0]["subject"]
    assert "Environment: production" in got[0]["body"] and "Failed" in got[0]["body"]
    assert hook.wait(2, timeout=3) == got  # exactly one

    # infra-update runs: a Completed one and a Failed one (an invalid request already tells
    # its submitter) send nothing; a Crashed one sends one alert naming the environment.
    from prefect.states import Completed, Crashed, Failed

    hook.received.clear()
    update_run_ending(Completed())
    update_run_ending(Failed(message="invalid request, nothing was changed"))
    crashed = update_run_ending(Crashed(message="Flow run infrastructure exited with non-zero status code 137."))
    got = hook.wait(1, timeout=60)
    assert len(got) == 1, got
    assert got[0]["subject"] == f"[{P}] production: infra-update run {crashed.name} Crashed", got[0]
    assert "Environment: production" in got[0]["body"]
    assert f"Deployment: infra-update/{P}-production-infra-update" in got[0]["body"]
    assert "exited with non-zero status code 137" in got[0]["body"]
    assert hook.wait(2, timeout=5) == got  # exactly one: the Completed and Failed runs sent none

    # Someone edits the automation in the UI: the drift check reports it.
    with client() as c:
        [auto] = c.read_automations_by_name(AUTOMATION)
        c.update_automation(auto.id, AutomationCore(name=auto.name, description=auto.description, enabled=False,
                                                    trigger=auto.trigger, actions=auto.actions))
    boto("logs").put_retention_policy(logGroupName=f"/ecs/{P}-main/agent", retentionInDays=30)
    state, report = run_drift(overrides=WITH_BLOCK)
    assert state.is_failed()
    by_key = {f.resource: f for f in report.drifted}
    assert set(by_key) == {f"prefect.automation/{AUTOMATION}"}
    assert by_key[f"prefect.automation/{AUTOMATION}"].status is Status.MODIFIED
    assert by_key[f"prefect.automation/{AUTOMATION}"].properties == [("enabled", "True", "False")]
