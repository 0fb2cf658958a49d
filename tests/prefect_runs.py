"""Driving Prefect flow runs from tests the way the UI does: the drift check, an
`infra-update` or `infra-prune` run waiting for approval, its resume with the approval
input."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any


def client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def run_drift(**kwargs: Any):
    from flows.drift_check import drift_check, report_of

    state = drift_check(env="production", return_state=True, **kwargs)
    return state, report_of(state)


def run_in_thread(flow_fn: Any, **params: Any) -> tuple[threading.Thread, dict]:
    """`flow_fn(**params)` in a thread; box: "state" when done."""
    box: dict = {}

    def target() -> None:
        box["state"] = flow_fn(return_state=True, **params)
    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, box


def run_update_in_thread(request: dict, approval_timeout: int = 120) -> tuple[threading.Thread, dict]:
    from flows.update import UpdateRequest, infra_update

    return run_in_thread(infra_update, request=UpdateRequest(**request), approval_timeout=approval_timeout)


def wait_paused(timeout: float = 60, flow_name: str = "infra-update") -> Any:
    from prefect.client.schemas.filters import (FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState,
                                                FlowRunFilterStateName)

    deadline = time.monotonic() + timeout
    with client() as c:
        while time.monotonic() < deadline:
            runs = c.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                                    flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                                        name=FlowRunFilterStateName(any_=["Paused"]))))
            if runs:
                return runs[0]
            time.sleep(0.5)
    raise AssertionError(f"{flow_name} never paused for approval")


def resume(run_id: Any, decision: str, **fields: Any) -> None:
    """Answer the approval form (`fields`: more of its fields, e.g. a typed name)."""
    from prefect.flow_runs import resume_flow_run

    resume_flow_run(run_id, run_input={"decision": decision, "comment": f"{decision} in test", **fields})


def start_from_deployment(name: str, parameters: dict, flow_fn: Any = None) -> tuple[threading.Thread, dict]:
    """A run of deployment `name` created as the UI's custom-run form does (the server checks
    the parameters against the deployment's schema), then executed as a worker's process
    executes it (`prefect.engine`: the flow run's logger is the engine's error logger; the flow
    imported here rather than loaded through the pull steps), in a thread.
    box: "run" (the flow run), "state" when done, "raised" if the engine raised.
    `flow_fn`: the deployment's flow (default infra-update's)."""
    from prefect.flow_engine import flow_run_logger, run_flow

    if flow_fn is None:
        from flows.update import infra_update as flow_fn

    box: dict = {}
    with client() as c:
        dep = c.read_deployment_by_name(name)
        box["run"] = c.create_flow_run_from_deployment(dep.id, parameters=parameters)
    run = box["run"]

    def target() -> None:
        runs_logger = logging.getLogger("prefect.flow_runs")
        level = runs_logger.level
        runs_logger.setLevel(logging.INFO)  # as a worker's process logs (the suite runs at WARNING)
        try:
            run_flow(flow_fn, flow_run=run, error_logger=flow_run_logger(flow_run=run))
        except BaseException as exc:  # what the engine's process would exit with
            box["raised"] = exc
        finally:
            runs_logger.setLevel(level)
        with client() as c:
            box["state"] = c.read_flow_run(run.id).state
    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, box


def run_logs(run_id: Any) -> list[Any]:
    """The flow run's logs as the UI reads them (after flushing this process's log batch)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all()
    time.sleep(0.5)
    with client() as c:
        return c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
