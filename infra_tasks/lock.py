"""The per-environment lock every mutating run holds (a Prefect global concurrency
limit of 1, held server-side): a scheduled remediation, a UI update and a local
bootstrap never apply at the same time. The second one waits up to
`prefect.lock_timeout_seconds`, then fails naming the lock."""

from __future__ import annotations

import contextlib
from typing import Iterator

from .aws import InfraError
from .config import InfraConfig
from .desired_prefect import lock_name
from .model import Resource
from .prefect_objects import ConcurrencyLimitHandler


def ensure(cfg: InfraConfig, env_name: str) -> str:
    name = lock_name(cfg, env_name)
    handler = ConcurrencyLimitHandler()
    res = Resource(handler.kind, name, {"limit": 1, "active": True})
    if handler.read(res) is None:
        handler.create(res, res.props)
    return name


@contextlib.contextmanager
def held(cfg: InfraConfig, env_name: str, timeout: float | None = None) -> Iterator[str]:
    from prefect.concurrency.sync import concurrency

    name = ensure(cfg, env_name)
    wait = cfg.prefect.lock_timeout_seconds if timeout is None else timeout
    try:
        ctx = concurrency(name, occupy=1, timeout_seconds=wait, strict=True)
        ctx.__enter__()
    except TimeoutError:
        raise InfraError(
            f"another mutating run (bootstrap, infra-update or drift remediation) of {env_name!r} holds the lock "
            f"{name!r}; waited {wait:.0f}s. Nothing was changed: retry when it has finished (see its flow run "
            f"in the Prefect UI)") from None
    try:
        yield name
    finally:
        ctx.__exit__(None, None, None)
