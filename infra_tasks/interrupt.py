"""Stopping an apply cleanly: once a stop is requested (Ctrl-C, or the environment's
lock was lost), no further change is started; changes already under way finish, so
what AWS did is known and a re-run continues from there."""

from __future__ import annotations

import threading

_event = threading.Event()
_reason: list[str] = []


class Interrupted(Exception):
    """An apply stopped on request; `done` and `not_started` name the changes."""

    def __init__(self, reason: str, done: list[str], not_started: list[str], text: str | None = None) -> None:
        self.reason, self.done, self.not_started, self.text = reason, done, not_started, text
        super().__init__(reason)

    @classmethod
    def from_report(cls, text: str) -> "Interrupted":
        """Rebuilt from `report()` (a flow run's Cancelled message)."""
        return cls(text.splitlines()[0], [], [], text)

    def report(self) -> str:
        if self.text:
            return self.text
        lines = [f"stopped: {self.reason}.",
                 f"  applied before stopping ({len(self.done)}): {', '.join(self.done) or 'none'}",
                 f"  not started ({len(self.not_started)}): {', '.join(self.not_started) or 'none'}",
                 "  Nothing is half-done: re-run the same command to continue (applied changes are not repeated)."]
        return "\n".join(lines)


def request(reason: str) -> None:
    if not _event.is_set():
        _reason[:] = [reason]
        _event.set()


def requested() -> str | None:
    return _reason[0] if _event.is_set() and _reason else None


def clear() -> None:
    _event.clear()
    _reason.clear()
