"""Test-only: signal this Python process right after its k-th mutating AWS call has
been answered (INFRA_TEST_KILL_AFTER=k): SIGKILL, so no clean-up of any kind runs, or the
signal named by INFRA_TEST_SIGNAL (e.g. INT, as Ctrl-C sends), once. Put this directory
first on PYTHONPATH. Without INFRA_TEST_KILL_AFTER it does nothing."""

from __future__ import annotations

import os


def _install(k: int) -> None:
    import signal
    import threading

    import botocore.session

    sig = getattr(signal, "SIG" + os.environ.get("INFRA_TEST_SIGNAL", "KILL"))
    lock = threading.Lock()
    seen = [0]
    reads = ("Describe", "Get", "List", "Head", "Lookup", "Search", "BatchGet", "Select")

    def after_call(model: object = None, **_: object) -> None:
        if model.name.startswith(reads):  # type: ignore[attr-defined]
            return
        with lock:
            seen[0] += 1
            if seen[0] == k or (seen[0] > k and sig == signal.SIGKILL):
                os.kill(os.getpid(), sig)

    original = botocore.session.Session.create_client

    def create_client(self: botocore.session.Session, *args: object, **kwargs: object) -> object:
        client = original(self, *args, **kwargs)
        client.meta.events.register("after-call", after_call)
        return client

    botocore.session.Session.create_client = create_client  # type: ignore[method-assign]


if os.environ.get("INFRA_TEST_KILL_AFTER"):
    _install(int(os.environ["INFRA_TEST_KILL_AFTER"]))


# The sooner Prefect retries every process tests start gets (tests/retry_site): only one
# sitecustomize is imported, so this one runs that one too.
def _retry_soon() -> None:
    import runpy
    from pathlib import Path

    runpy.run_path(str(Path(__file__).resolve().parent.parent / "retry_site" / "sitecustomize.py"))


_retry_soon()
