"""Progress of an apply: a live display on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO


class Reporter:
    """Thread-safe: Prefect tasks report from worker threads."""

    def __init__(self, total: int, live: bool | None = None, stream: TextIO | None = None,
                 verb: str = "applying") -> None:
        self.total = total
        self.verb = verb
        self.done_count = 0
        self.in_flight: list[str] = []
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._lock = threading.Lock()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> "Reporter":
        if self.live and self.total:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn(f"[bold]{self.verb}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("{task.description}"),
                                      console=Console(file=self.stream, force_terminal=True), transient=False)
            self._progress.start()
            self._task = self._progress.add_task("", total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _refresh(self) -> None:
        if self._progress is not None:
            waiting = ", ".join(self.in_flight[:3]) + (" ..." if len(self.in_flight) > 3 else "")
            self._progress.update(self._task, completed=self.done_count,
                                  description=f"waiting on: {waiting}" if waiting else "")

    def started(self, key: str, action: str) -> None:
        with self._lock:
            self.in_flight.append(key)
            self._refresh()

    def finished(self, key: str, action: str, error: str | None = None) -> None:
        with self._lock:
            if key in self.in_flight:
                self.in_flight.remove(key)
            self.done_count += 1
            if self._progress is None:
                status = f"FAILED {action}" if error else f"{action} done"
                print(f"[{self.done_count}/{self.total}] {status}: {key}", file=self.stream, flush=True)
            self._refresh()

    def waiting(self, what: str) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.update(self._task, description=f"waiting on: {what}")
            else:
                print(f"waiting: {what}", file=self.stream, flush=True)


_current: dict[str, Reporter | None] = {"reporter": None}


def current() -> Reporter | None:
    return _current["reporter"]


def use(reporter: Reporter | None) -> None:
    _current["reporter"] = reporter
