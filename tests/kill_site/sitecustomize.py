"""Test-only: SIGKILL this Python process right after its k-th mutating AWS call has
been answered (INFRA_TEST_KILL_AFTER=k), so no clean-up of any kind runs. Put this
directory first on PYTHONPATH. Without INFRA_TEST_KILL_AFTER it does nothing."""

from __future__ import annotations

import os


def _install(k: int) -> None:
    import signal
    import threading

    import botocore.session

    lock = threading.Lock()
    seen = [0]
    reads = ("Describe", "Get", "List", "Head", "Lookup", "Search", "BatchGet", "Select")

    def after_call(model: object = None, **_: object) -> None:
        if model.name.startswith(reads):  # type: ignore[attr-defined]
            return
        with lock:
            seen[0] += 1
            if seen[0] >= k:
                os.kill(os.getpid(), signal.SIGKILL)

    original = botocore.session.Session.create_client

    def create_client(self: botocore.session.Session, *args: object, **kwargs: object) -> object:
        client = original(self, *args, **kwargs)
        client.meta.events.register("after-call", after_call)
        return client

    botocore.session.Session.create_client = create_client  # type: ignore[method-assign]


if os.environ.get("INFRA_TEST_KILL_AFTER"):
    _install(int(os.environ["INFRA_TEST_KILL_AFTER"]))
