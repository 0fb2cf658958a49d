"""The environment lock: taken over from a killed holder, never from a live one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from infra_tasks import interrupt, lock
from infra_tasks.aws import InfraError
from infra_tasks.config import InfraConfig

from .conftest import ROOT

NAME = "data-flows-production-infra-mutations"
HOLDER = """
import os, signal
from infra_tasks import lock
from infra_tasks.config import load_config
with lock.held(load_config(None), "production", command="a test holder"):
    print("held", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def active_slots() -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:
        return c.read_global_concurrency_limit_by_name(NAME).active_slots


def killed_holder() -> dict[str, Any]:
    """A process takes the lock and dies with SIGKILL (no clean-up); returns its record."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", HOLDER], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL and "held" in proc.stdout, proc.stderr[-2000:]
    assert active_slots() == 1  # the dead process still holds the lock
    with get_client(sync_client=True) as c:
        return c.read_variable_by_name(lock.holder_variable(NAME)).value


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock, "POLL_SECONDS", 0.2)
    interrupt.clear()
    yield
    interrupt.clear()


def test_a_killed_holder_on_this_machine_is_taken_over_at_once(prefect_clean, cfg: InfraConfig, quick) -> None:
    record = killed_holder()
    assert record["command"] == "a test holder" and record["pid"] != os.getpid()
    started = time.monotonic()
    with lock.held(cfg, "production", timeout=60):
        waited = time.monotonic() - started
        assert active_slots() == 1
    assert waited < 5
    assert active_slots() == 0


def test_a_killed_holder_elsewhere_is_taken_over_when_its_heartbeat_stops(prefect_clean, cfg: InfraConfig,
                                                                          monkeypatch, quick) -> None:
    """With the real heartbeat timing: a holder on another machine (its pid cannot be
    checked here) is declared dead after STALE_SECONDS without a beat, well inside 60 s."""
    killed_holder()
    monkeypatch.setattr(lock, "dead_on_this_machine", lambda holder: False)
    started = time.monotonic()
    with lock.held(cfg, "production", timeout=120):
        waited = time.monotonic() - started
    assert lock.STALE_SECONDS <= waited < 60


def test_a_live_holder_is_never_taken_over(prefect_clean, cfg: InfraConfig, monkeypatch, quick) -> None:
    """A live holder beats, so a waiter that gives up after several stale periods never
    takes the lock, and the holder's lease stays valid throughout."""
    monkeypatch.setattr(lock, "BEAT_SECONDS", 0.5)
    monkeypatch.setattr(lock, "STALE_SECONDS", 4.0)  # eight beats: room for a loaded machine
    monkeypatch.setattr(lock, "dead_on_this_machine", lambda holder: False)  # judge by the heartbeat alone
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock.held(cfg, "production", command="a long apply"):
            holding.set()
            done.wait(60)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert holding.wait(30)
        with pytest.raises(InfraError, match=r"holds the lock .*a long apply \(pid \d+ on .*waited 12s"):
            with lock.held(cfg, "production", timeout=12):  # three stale periods
                pass
        assert interrupt.requested() is None  # the holder's lease was renewed throughout
    finally:
        done.set()
        t.join(30)
    assert active_slots() == 0


def test_a_holder_whose_lock_was_taken_starts_no_further_change(prefect_clean, cfg: InfraConfig, monkeypatch,
                                                               quick) -> None:
    from prefect.client.orchestration import get_client

    monkeypatch.setattr(lock, "BEAT_SECONDS", 0.2)
    with lock.held(cfg, "production"):
        with get_client(sync_client=True) as c:
            lease = c.read_variable_by_name(lock.holder_variable(NAME)).value["lease"]
            c.release_concurrency_slots_with_lease(lease)  # what a waiter does to a dead holder
        deadline = time.monotonic() + 10
        while interrupt.requested() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "was lost" in (interrupt.requested() or "")


def test_reading_the_lock_without_a_prefect_api_names_it(cfg) -> None:
    """Bootstrap reads the lock's state before its plan: an API that does not answer is
    one message naming the lock and the API, not a traceback."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from infra_tasks.aws import InfraError
    from infra_tasks.emulator import free_port

    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        with pytest.raises(InfraError, match=r"read failed for prefect.concurrency_limit/data-flows-production-infra-"
                                             r"mutations: the Prefect API at http://127\.0\.0\.1:\d+/api did not answer"):
            lock.state(cfg, "production")
