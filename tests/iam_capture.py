"""Capture, on the wire, the AWS calls a job makes, labelled with the role it plays.

In-process jobs (bootstrap, plan, drift check, repairs) are captured with a botocore
`before-parameter-build` hook (the API parameters, before serialisation) on the project's clients; the principal is whatever `acting_as()`
set for the block. Subprocesses (the prefect-aws worker, a flow run) are captured by
`tests/capture_site/sitecustomize.py`, which writes the same records as JSON lines.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import threading
from pathlib import Path
from typing import Any, Iterator

from infra_tasks import aws

from .iam_requests import Call

_principal: contextvars.ContextVar[str | None] = contextvars.ContextVar("iam_principal", default=None)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._default: str | None = None

    def __call__(self, model: Any = None, params: Any = None, **_: Any) -> None:
        who = _principal.get() or self._default
        if who is None:
            return
        # Plain JSON round trip: what was sent, detached from botocore's objects.
        clean = json.loads(json.dumps(params, default=str))
        with self._lock:
            self.calls.append(Call(who, model.service_model.service_name, model.name, clean))

    def of(self, principal: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.principal == principal]

    @contextlib.contextmanager
    def acting_as(self, principal: str) -> Iterator[None]:
        """Label every call in this block (Prefect task threads copy the context, and the
        default covers threads that do not)."""
        token = _principal.set(principal)
        self._default = principal
        try:
            yield
        finally:
            self._default = None
            _principal.reset(token)


@contextlib.contextmanager
def recording() -> Iterator[Recorder]:
    rec = Recorder()
    aws.add_handler("before-parameter-build", rec)
    try:
        yield rec
    finally:
        aws.remove_handler(rec)


def read_jsonl(path: Path) -> list[Call]:
    """Calls a subprocess recorded through tests/capture_site/sitecustomize.py."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            out.append(Call(d["principal"], d["service"], d["operation"], d["params"]))
    return out
