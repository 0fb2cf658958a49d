"""flows/apply.in_order, the scheduler of the apply and the teardown: a change starts only
once its dependencies are done, at most `parallelism` at once, the longest chain first;
a stop request starts nothing more; a cycle is refused before anything starts."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from typing import Any, Iterator

import pytest

from flows.apply import in_order
from infra_tasks import interrupt
from infra_tasks.aws import InfraError


class Future:
    """What in_order needs of a PrefectFuture: the concurrent future it wraps."""

    def __init__(self, wrapped: cf.Future[Any]) -> None:
        self.wrapped_future = wrapped


class Recorder:
    def __init__(self, workers: int = 16, seconds: float = 0.02) -> None:
        self.pool = cf.ThreadPoolExecutor(workers)
        self.seconds = seconds
        self.started: list[str] = []
        self.done: set[str] = set()
        self.running = 0
        self.most = 0
        self.early: list[str] = []  # started before a dependency was done
        self.lock = threading.Lock()

    def starter(self, deps: dict[str, list[str]], stop_after: str | None = None) -> Any:
        def start(key: str) -> Future:
            with self.lock:
                self.started.append(key)
                self.early += [key] if not set(deps[key]) <= self.done else []
                self.running += 1
                self.most = max(self.most, self.running)

            def work() -> None:
                time.sleep(self.seconds)
                with self.lock:
                    self.running -= 1
                    self.done.add(key)
                if key == stop_after:
                    interrupt.request("interrupted (Ctrl-C)")
            return Future(self.pool.submit(work))
        return start


@pytest.fixture(autouse=True)
def no_stop_request() -> Iterator[None]:
    interrupt.clear()
    yield
    interrupt.clear()


# A diamond and a chain beside independent keys: chain c1 -> c2 -> c3 -> c4, diamond
# d -> (e, f) -> g, and x, y, z that nothing waits for.
DEPS = {"x": [], "y": [], "z": [], "d": [], "c1": [], "e": ["d"], "f": ["d"], "c2": ["c1"], "g": ["e", "f"],
        "c3": ["c2"], "c4": ["c3"]}


@pytest.mark.parametrize("parallelism", [1, 2, 3, 8])
def test_each_starts_after_its_dependencies_and_never_more_than_parallelism(parallelism: int) -> None:
    rec, futures = Recorder(), {}
    in_order(list(DEPS), DEPS, parallelism, rec.starter(DEPS), futures)
    cf.wait([f.wrapped_future for f in futures.values()])
    assert sorted(rec.started) == sorted(DEPS) and set(futures) == set(DEPS)
    assert rec.early == []
    assert rec.most <= parallelism
    if parallelism <= 3:
        assert rec.most == parallelism  # and it does use them (five are ready at the start)


def test_the_longest_chain_goes_first() -> None:
    rec, futures = Recorder(), {}
    in_order(list(DEPS), DEPS, 1, rec.starter(DEPS), futures)
    # One at a time, always the ready key with the longest chain after it (c1: 4; d, c2: 3;
    # e, f, c3: 2; the rest 1), ties in the order given.
    assert rec.started == ["c1", "d", "c2", "e", "f", "c3", "x", "y", "z", "g", "c4"]


def test_a_stop_request_starts_nothing_more() -> None:
    rec, futures = Recorder(), {}
    in_order(list(DEPS), DEPS, 1, rec.starter(DEPS, stop_after="d"), futures)
    cf.wait([f.wrapped_future for f in futures.values()])
    assert rec.started == ["c1", "d"] and set(futures) == {"c1", "d"}


def test_a_cycle_is_refused_before_anything_starts() -> None:
    rec, futures = Recorder(), {}
    deps = {"a": [], "b": ["c"], "c": ["b"]}
    with pytest.raises(InfraError, match="dependency cycle among: b, c"):
        in_order(list(deps), deps, 4, rec.starter(deps), futures)
    assert rec.started == [] and futures == {}
