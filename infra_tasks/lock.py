"""The per-environment lock every mutating run holds: a scheduled remediation, a UI
update and a local bootstrap never apply at the same time.

Mutual exclusion is a Prefect global concurrency limit of 1, taken with a lease (60 s,
Prefect's minimum) that the holder renews every few seconds. Beside it the holder keeps
a heartbeat, the Prefect variable `{prefix}-{env}-lock-holder`:

    {"lease": ID, "host": ..., "pid": ..., "started": ISO time, "beat": N, ...}

A run that finds the lock taken watches that heartbeat. The holder is dead (killed, out
of memory, a closed laptop) when the beat has not moved for `STALE_SECONDS` of the
waiter's own clock (no clock skew involved), or at once when the holder was a process on
this machine that no longer exists. The waiter then releases the dead holder's lease and
takes the lock, so a re-run after a crash proceeds within half a minute. A live holder
beats every `BEAT_SECONDS`, so it is never taken over unless it could not reach the
Prefect API for `STALE_SECONDS`; its next renewal then finds the lease gone and the run
stops submitting changes (see `interrupt`).

A run that cannot get the lock waits up to `prefect.lock_timeout_seconds`, then fails
naming the holder.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

from . import interrupt
from .aws import InfraError
from .config import InfraConfig
from .names import lock_name
from .model import Resource
from .prefect_client import sync_client
from .prefect_objects import ConcurrencyLimitHandler, translate

LEASE_SECONDS = 60  # the Prefect server's minimum lease
BEAT_SECONDS = 5.0
STALE_SECONDS = 20.0
POLL_SECONDS = 1.0


def holder_variable(name: str) -> str:
    return f"{name}-holder"


def ensure(cfg: InfraConfig, env_name: str) -> tuple[str, bool]:
    """The lock's name, and whether this call created it."""
    name = lock_name(cfg.prefix, env_name)
    handler = ConcurrencyLimitHandler()
    res = Resource(handler.kind, name, {"limit": 1, "active": True})
    if handler.read(res) is not None:
        return name, False
    handler.create(res, res.props)
    return name, True


# --- who holds it ------------------------------------------------------------------------

def _read_file(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' where /proc is absent):
    with the boot id it tells a live process from a later one that reuses its pid."""
    stat = _read_file(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[-1].split()[19] if stat else ""


def this_process() -> dict[str, Any]:
    pid = os.getpid()
    ns = ""
    with contextlib.suppress(OSError):
        ns = os.readlink("/proc/self/ns/pid")
    return {"host": socket.gethostname(), "boot": _read_file("/proc/sys/kernel/random/boot_id"), "pidns": ns,
            "pid": pid, "pid_start": _process_start(pid)}


def dead_on_this_machine(holder: dict[str, Any]) -> bool:
    """True only when the holder certainly was a process of this machine (same host, boot
    and pid namespace) that is gone. Anything else is left to the heartbeat."""
    me = this_process()
    if not me["boot"] or any(holder.get(k) != me[k] for k in ("host", "boot", "pidns")):
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # exists, another user's
    return bool(holder.get("pid_start")) and _process_start(pid) != holder.get("pid_start")


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "a run that left no holder record"
    what = holder.get("command") or "a run"
    return f"{what} (pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')})"


# --- Prefect calls -----------------------------------------------------------------------

def _client() -> Any:
    return sync_client()


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _read_holder(c: Any, name: str) -> dict[str, Any] | None:
    var = c.read_variable_by_name(holder_variable(name))
    return var.value if var is not None and isinstance(var.value, dict) else None


def _write_holder(c: Any, name: str, value: dict[str, Any]) -> None:
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate

    var = holder_variable(name)
    if c.read_variable_by_name(var) is None:
        try:
            c.create_variable(VariableCreate(name=var, value=value))
            return
        except Exception as exc:  # noqa: BLE001 - created meanwhile: update it below
            if _status(exc) != 409:
                raise
    c.update_variable(VariableUpdate(name=var, value=value))


def _release(c: Any, lease_id: str) -> None:
    try:
        c.release_concurrency_slots_with_lease(lease_id)
    except Exception as exc:  # noqa: BLE001 - already released or expired: nothing to do
        if _status(exc) not in (404, 410):
            raise


def _try_acquire(c: Any, name: str) -> str | None:
    try:
        resp = c.increment_concurrency_slots_with_lease(names=[name], slots=1, mode="concurrency",
                                                        lease_duration=LEASE_SECONDS)
    except Exception as exc:  # noqa: BLE001
        if _status(exc) == 423:
            return None
        raise
    return str(resp.json()["lease_id"])


# --- holding it --------------------------------------------------------------------------

class Heartbeat:
    """Renews the lease and advances the beat until stopped; flags the run when the lease
    was taken away."""

    def __init__(self, name: str, lease_id: str, record: dict[str, Any]) -> None:
        self.name, self.lease_id, self.record = name, lease_id, record
        self.stop = threading.Event()
        # In a copy of this context: the Prefect settings in force here (a temporary API
        # URL) must reach the heartbeat's client too.
        self.thread = threading.Thread(target=contextvars.copy_context().run, args=(self._run,),
                                       name=f"lock-heartbeat-{name}", daemon=True)

    def _run(self) -> None:
        last_ok = time.monotonic()
        with _client() as c:
            while not self.stop.wait(BEAT_SECONDS):
                try:
                    c.renew_concurrency_lease(self.lease_id, lease_duration=LEASE_SECONDS)
                    self.record = {**self.record, "beat": self.record["beat"] + 1}
                    _write_holder(c, self.name, self.record)
                    last_ok = time.monotonic()
                except Exception as exc:  # noqa: BLE001 - classified below; the thread must not die
                    gone = _status(exc) in (404, 410)
                    if gone or time.monotonic() - last_ok > LEASE_SECONDS:
                        interrupt.request(f"the lock {self.name!r} was lost (its lease "
                                          f"{'was taken over' if gone else 'could not be renewed'}): no further "
                                          f"change is started")
                        return


@dataclass
class Hold:
    """A hold of the lock. `untouched`: no other run took or released the lock between
    the moment the caller read `state()` and this hold (so nothing another run of this
    project applied can have changed what the caller read then)."""

    name: str
    untouched: bool = False


ABSENT = "absent"  # state() of a lock that does not exist yet


def state(cfg: InfraConfig, env_name: str) -> str:
    """The lock's state: it changes whenever any run takes or releases the lock (Prefect
    stamps the limit's `updated` on every slot change); ABSENT before it exists."""
    from prefect.exceptions import ObjectNotFound

    name = lock_name(cfg.prefix, env_name)
    try:
        with _client() as c:
            return _state(c, name, ObjectNotFound)
    except Exception as exc:  # noqa: BLE001 - the Prefect API not answering, named; anything else re-raised
        raise translate(exc, "read", f"prefect.concurrency_limit/{name}") from None


def _state(c: Any, name: str, not_found: type[Exception]) -> str:
    try:
        gcl = c.read_global_concurrency_limit_by_name(name)
    except not_found:
        return ABSENT
    return f"{gcl.updated.isoformat() if gcl.updated else ''}|{gcl.active_slots}"


@contextlib.contextmanager
def held(cfg: InfraConfig, env_name: str, timeout: float | None = None, command: str = "",
         unchanged_since: str | None = None) -> Iterator[Hold]:
    """Hold the environment's lock for the block. `unchanged_since`: a `state()` read
    earlier; the hold is `untouched` when the lock was free and unchanged since then, or
    did not exist then and this hold created it (every run that holds it needs it to
    exist, so none can have held it in between)."""
    name, created = ensure(cfg, env_name)
    wait = cfg.prefect.lock_timeout_seconds if timeout is None else timeout
    if unchanged_since == ABSENT:
        untouched = created
    else:  # free (no slot taken) when it was read, and not taken or released since
        untouched = bool(unchanged_since and unchanged_since.endswith("|0")
                         and state(cfg, env_name) == unchanged_since)
    lease_id, record, first_try = acquire(name, env_name, wait, command)
    hold = Hold(name, untouched and first_try)
    beat = Heartbeat(name, lease_id, record)
    beat.thread.start()
    try:
        yield hold
    finally:
        beat.stop.set()
        beat.thread.join(timeout=BEAT_SECONDS + 5)
        with _client() as c:
            _release(c, lease_id)
            if (_read_holder(c, name) or {}).get("lease") == lease_id:
                with contextlib.suppress(Exception):
                    c.delete_variable_by_name(holder_variable(name))


def acquire(name: str, env_name: str, wait: float, command: str = "") -> tuple[str, dict[str, Any], bool]:
    """Take the lock, taking it over from a dead holder; (lease id, holder record, whether
    it was free at the first try)."""
    from prefect.context import FlowRunContext

    started = time.monotonic()
    seen: Any = object()
    seen_at = started
    holder: dict[str, Any] | None = None
    first_try = True
    with _client() as c:
        while True:
            lease_id = _try_acquire(c, name)
            if lease_id is not None:
                ctx = FlowRunContext.get()
                record = {**this_process(), "lease": lease_id, "beat": 0, "command": command,
                          "flow_run": str(ctx.flow_run.id) if ctx and ctx.flow_run else None,
                          "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
                _write_holder(c, name, record)
                return lease_id, record, first_try
            first_try = False
            now = time.monotonic()
            holder = _read_holder(c, name)
            if holder != seen:
                seen, seen_at = holder, now
            if holder and holder.get("lease") and (dead_on_this_machine(holder) or now - seen_at >= STALE_SECONDS):
                logging.getLogger(__name__).warning(
                    "lock %s: its holder, %s, is gone (%s); taking the lock over", name, describe(holder),
                    "no such process on this machine" if dead_on_this_machine(holder)
                    else f"no heartbeat for {now - seen_at:.0f}s")
                _release(c, str(holder["lease"]))
                seen, seen_at = object(), now
                continue
            if now - started >= wait:
                raise InfraError(
                    f"another mutating run (bootstrap, infra-update or drift remediation) of {env_name!r} holds the "
                    f"lock {name!r}: {describe(holder)}; waited {wait:.0f}s. Nothing was changed: retry when it has "
                    f"finished (see its flow run in the Prefect UI)")
            time.sleep(POLL_SECONDS)
