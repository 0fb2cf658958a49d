"""Crash consistency with the Prefect side (work pools, blocks, deployments, the lock),
and with a real SIGKILL. See test_crash_recovery.py for how a death is injected."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from .conftest import ROOT
from .crash import ENV, Death, bootstrap_dying, converges, reference


@pytest.mark.parametrize("aws_k,prefect_k", [(None, 0), (None, 5)])
def test_death_with_the_prefect_side_is_finished_by_a_rerun(aws_k, prefect_k, dev_account, moto_url,
                                                            monkeypatch, capsys) -> None:
    ref = reference(True, dev_account, moto_url)
    assert prefect_k is None or prefect_k < ref["prefect_writes"]
    death = Death(aws_k=aws_k, prefect_k=prefect_k)
    bootstrap_dying(death, monkeypatch)
    assert death.dead_after is not None
    converges(dev_account, ref, True, capsys)


# --- a real SIGKILL ------------------------------------------------------------------------

KILL_SITE = ROOT / "tests" / "kill_site"


@pytest.mark.parametrize("k", [25])
def test_killed_process_is_finished_by_a_rerun(k, dev_account, moto_url, capsys) -> None:
    """`python -m flows.bootstrap` killed with SIGKILL right after its k-th mutating AWS
    call was answered (with the Prefect side, so it held the lock), then re-run."""
    from prefect.settings import PREFECT_API_URL

    ref = reference(True, dev_account, moto_url)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(KILL_SITE), str(ROOT)]),
           "INFRA_TEST_KILL_AFTER": str(k), "PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.run([sys.executable, "-m", "flows.bootstrap", "--env", ENV, "--yes"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    converges(dev_account, ref, True, capsys)


def test_ctrl_c_during_apply_stops_cleanly_and_a_rerun_finishes(dev_account, moto_url, capsys) -> None:
    """SIGINT (Ctrl-C) arrives while changes are being applied: no further change is
    started, the ones under way finish, the lock is released, the output says what was
    done; exit 130 and no traceback. A plain re-run finishes the job."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    ref = reference(True, dev_account, moto_url)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(KILL_SITE), str(ROOT)]),
           "INFRA_TEST_KILL_AFTER": "10", "INFRA_TEST_SIGNAL": "INT", "PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.run([sys.executable, "-m", "flows.bootstrap", "--env", ENV, "--yes"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert "stopped: interrupted (Ctrl-C)" in proc.stderr
    lines = proc.stderr.splitlines()
    done = [line for line in lines if line.startswith("  applied before stopping (")]
    not_started = [line for line in lines if line.startswith("  not started (")]
    assert len(done) == 1 and len(not_started) == 1, proc.stderr[-3000:]
    done, not_started = done[0], not_started[0]
    assert int(done.split("(")[1].split(")")[0]) >= 1 and int(not_started.split("(")[1].split(")")[0]) >= 1
    assert "re-run the same command to continue" in proc.stderr
    with get_client(sync_client=True) as c:
        assert c.read_global_concurrency_limit_by_name("data-flows-dev-infra-mutations").active_slots == 0
    converges(dev_account, ref, True, capsys)


def test_ctrl_c_while_changes_are_still_being_submitted(dev_account, moto_url, monkeypatch, capsys) -> None:
    """Ctrl-C reaching the main thread while it still submits changes as tasks (the first
    ones already running): the submitting stops, what was submitted finishes or refuses to
    start, and the report counts the never-submitted changes as not started; exit 130, no
    traceback; a re-run finishes. (The real-signal test above cannot choose where it lands.)"""
    import flows.apply as apply

    ref = reference(True, dev_account, moto_url)
    real, calls = apply.submit, [0]

    def submit(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 6:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(apply, "submit", submit)
    from .conftest import run_cli

    capsys.readouterr()
    assert run_cli("--env", ENV, "--yes") == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "stopped: interrupted (Ctrl-C)" in err, err[-3000:]
    done = [line for line in err.splitlines() if line.startswith("  applied before stopping (")]
    not_started = [line for line in err.splitlines() if line.startswith("  not started (")]
    assert len(done) == 1 and len(not_started) == 1, err[-3000:]
    applied, left = (int(line.split("(")[1].split(")")[0]) for line in (done[0], not_started[0]))
    assert applied <= 5 and left >= ref["mutating"] // 4, err[-3000:]  # most of the plan was never submitted
    monkeypatch.setattr(apply, "submit", real)
    converges(dev_account, ref, True, capsys)
