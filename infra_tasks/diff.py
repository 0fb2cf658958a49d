"""Property-level diff of normalised desired vs actual state (pure)."""

from __future__ import annotations

from typing import Any

from .model import UNKNOWN, Diff, Ref, Within


def diff(desired: dict[str, Any], actual: dict[str, Any] | None, prefix: str = "") -> list[Diff]:
    """Differences between two normalised property trees.

    - a desired value of None is "not managed" and never compared;
    - a key present only in `actual` is reported (desired shown as absent);
    - `Within` matches any integer inside its range;
    - `UNKNOWN` (an id AWS assigns during this apply) always differs;
    - lists are compared whole: handlers sort the ones AWS treats as unordered.
    """
    actual = actual or {}
    out: list[Diff] = []
    for key in sorted(set(desired) | set(actual), key=str):
        path = f"{prefix}{key}"
        want = desired.get(key, _MISSING)
        have = actual.get(key)
        if want is None:
            continue
        if want is _MISSING:
            if have not in (None, {}, []):
                out.append(Diff(path, have, None))
            continue
        out.extend(diff_value(path, want, have))
    return out


def diff_value(path: str, want: Any, have: Any) -> list[Diff]:
    if isinstance(want, Within):
        return [] if want.matches(have) else [Diff(path, have, want)]
    if want is UNKNOWN or isinstance(want, Ref):
        return [Diff(path, have, UNKNOWN)]
    if isinstance(want, dict) and isinstance(have, dict):
        return diff(want, have, prefix=f"{path}.")
    if want != have:
        return [Diff(path, have, want)]
    return []


class _Missing:
    def __repr__(self) -> str:
        return "(missing)"


_MISSING = _Missing()
