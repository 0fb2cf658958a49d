"""Attributing every API call of a bootstrap to a stage and a resource, and injecting a
fixed latency before AWS and/or Prefect API calls.

Everything is hooked from the outside, nothing in the product changes: AWS calls through
botocore's event hooks (`aws.add_handler`), Prefect API calls by wrapping the `send` of
Prefect's httpx clients, stages and resources by wrapping `engine.plan`,
`engine.read_one`, `engine.apply_change` and `flows.apply.apply_plan` for the duration
of a trace. Attribution travels in context variables, which the engine's reader pool and
Prefect's task runner copy into their threads. A call made in the stage's own thread
outside any resource is serial; one in another thread outside any resource (the lock's
heartbeat, Prefect's log and event workers) is background and off the critical path.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .critical_path import Stage

AWS, PREFECT = "aws", "prefect"


@dataclass
class StageLog:
    name: str
    owner: int  # the thread that runs the stage
    serial: list[tuple[str, str]] = field(default_factory=list)
    resources: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    deps: dict[str, tuple[str, ...]] = field(default_factory=dict)
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)  # resource -> (start, end)
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None
    cpu_started: float = field(default_factory=time.process_time)
    cpu_ended: float | None = None

    def stage(self, sides: tuple[str, ...]) -> Stage:
        """The stage counting only calls to `sides` (the ones that get the latency)."""
        return Stage(self.name, sum(1 for s, _ in self.serial if s in sides),
                     {k: sum(1 for s, _ in v if s in sides) for k, v in self.resources.items()}, dict(self.deps))


_stage: contextvars.ContextVar[StageLog | None] = contextvars.ContextVar("bench_stage", default=None)
_resource: contextvars.ContextVar[str | None] = contextvars.ContextVar("bench_resource", default=None)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Tracer:
    def __init__(self, aws_latency_s: float = 0.0, prefect_latency_s: float = 0.0) -> None:
        self.aws_latency_s, self.prefect_latency_s = aws_latency_s, prefect_latency_s
        self.stages: list[StageLog] = []
        self.background: list[tuple[str, str, str]] = []
        # Prefect API round trips (seconds, injected latency excluded): the server's share.
        self.prefect_round_trips: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    # --- recording ------------------------------------------------------------------

    def record(self, side: str, op: str) -> None:
        st, res = _stage.get(), _resource.get()
        with self._lock:
            if st is not None and res is not None:
                st.resources.setdefault(res, []).append((side, op))
            elif st is not None and threading.get_ident() == st.owner:
                st.serial.append((side, op))
            else:
                self.background.append((side, op, threading.current_thread().name))

    @contextlib.contextmanager
    def stage(self, name: str, deps: dict[str, tuple[str, ...]] | None = None) -> Iterator[StageLog]:
        log = StageLog(name, threading.get_ident(), deps=dict(deps or {}))
        with self._lock:
            self.stages.append(log)
        token = _stage.set(log)
        try:
            yield log
        finally:
            log.ended, log.cpu_ended = time.perf_counter(), time.process_time()
            _stage.reset(token)

    def sides(self, sides: tuple[str, ...]) -> list[Stage]:
        return [s.stage(sides) for s in self.stages if s.serial or s.resources]

    def summary(self) -> dict[str, Any]:
        count = Counter(side for s in self.stages for side, _ in [*s.serial, *(c for v in s.resources.values()
                                                                                   for c in v)])
        return {"aws": count[AWS], "prefect": count[PREFECT], "background": len(self.background)}

    # --- hooks ------------------------------------------------------------------------

    @contextlib.contextmanager
    def installed(self) -> Iterator["Tracer"]:
        from prefect.client.base import PrefectHttpxAsyncClient, PrefectHttpxSyncClient

        import flows.apply as apply_mod
        from infra_tasks import aws, engine

        tracer = self
        root = StageLog("outside plan and apply", threading.get_ident())
        self.stages.append(root)
        root_token = _stage.set(root)

        def before_call(model: Any = None, **_: Any) -> None:
            tracer.record(AWS, f"{model.service_model.service_name}:{model.name}")

        def before_send(**_: Any) -> None:
            if tracer.aws_latency_s:
                time.sleep(tracer.aws_latency_s)

        sync_send, async_send = PrefectHttpxSyncClient.send, PrefectHttpxAsyncClient.send

        def send(client: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            op = f"{request.method} {_UUID.sub('{id}', request.url.path)}"
            tracer.record(PREFECT, op)
            if tracer.prefect_latency_s:
                time.sleep(tracer.prefect_latency_s)
            start = time.perf_counter()
            try:
                return sync_send(client, request, *args, **kwargs)
            finally:
                tracer.prefect_round_trips.append((time.perf_counter() - start, op))

        async def asend(client: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            op = f"{request.method} {_UUID.sub('{id}', request.url.path)}"
            tracer.record(PREFECT, op)
            if tracer.prefect_latency_s:
                await asyncio.sleep(tracer.prefect_latency_s)
            start = time.perf_counter()
            try:
                return await async_send(client, request, *args, **kwargs)
            finally:
                tracer.prefect_round_trips.append((time.perf_counter() - start, op))

        originals: list[tuple[Any, str, Any]] = []

        def patch(obj: Any, name: str, make: Callable[[Any], Any]) -> None:
            orig = getattr(obj, name)
            originals.append((obj, name, orig))
            setattr(obj, name, make(orig))

        def wrap_plan(orig: Callable[..., Any]) -> Callable[..., Any]:
            def plan(*args: Any, **kwargs: Any) -> Any:
                n = sum(1 for s in tracer.stages if s.name.startswith("plan"))
                with tracer.stage(f"plan {n + 1} (facts, reads)"):
                    out = orig(*args, **kwargs)
                return out
            return plan

        def wrap_apply_plan(orig: Callable[..., Any]) -> Callable[..., Any]:
            def apply_plan(plan: Any, *args: Any, **kwargs: Any) -> Any:
                pending = {c.key for c in plan.applicable}
                deps = {c.key: tuple(d for d in engine.all_deps(c.resource) if d in pending)
                        for c in plan.applicable}
                with tracer.stage("apply", deps):
                    out = orig(plan, *args, **kwargs)
                return out
            return apply_plan

        def per_resource(orig: Callable[..., Any]) -> Callable[..., Any]:
            def run(first: Any, *args: Any, **kwargs: Any) -> Any:
                token = _resource.set(first.key)
                start = time.perf_counter()
                try:
                    return orig(first, *args, **kwargs)
                finally:
                    _resource.reset(token)
                    st = _stage.get()
                    if st is not None:
                        st.spans[first.key] = (start, time.perf_counter())
            return run

        patch(engine, "plan", wrap_plan)
        patch(engine, "read_one", per_resource)
        patch(engine, "apply_change", per_resource)
        patch(apply_mod, "apply_plan", wrap_apply_plan)
        patch(PrefectHttpxSyncClient, "send", lambda _: send)
        patch(PrefectHttpxAsyncClient, "send", lambda _: asend)
        aws.add_handler("before-call", before_call)
        aws.add_handler("before-send", before_send)
        try:
            yield self
        finally:
            aws.remove_handler(before_call)
            aws.remove_handler(before_send)
            for obj, name, orig in reversed(originals):
                setattr(obj, name, orig)
            _stage.reset(root_token)
