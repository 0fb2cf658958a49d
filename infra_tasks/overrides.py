"""Approved UI changes, persisted as a versioned Prefect variable and merged over
infra.toml by every bootstrap, drift check and update — so that the next drift check
does not revert what someone approved in the UI.

Variable `{prefix}-{env}-overrides` holds
    {"version": N, "overrides": {...config keys...}, "history": [{version, overrides, comment, at}, ...]}
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .prefect_client import sync_client
from .prefect_objects import PREFECT_CALLS

HISTORY = 20


def variable_name(prefix: str, env: str) -> str:
    return f"{prefix}-{env}-overrides"


def read(prefix: str, env: str) -> tuple[int, dict[str, Any]]:
    """(version, overrides); (0, {}) when none were ever approved."""
    with sync_client() as c:
        var = c.read_variable_by_name(variable_name(prefix, env))
    if var is None or not isinstance(var.value, dict):
        return 0, {}
    return int(var.value.get("version", 0)), dict(var.value.get("overrides") or {})


def write(prefix: str, env: str, overrides: dict[str, Any], comment: str) -> int:
    """Store `overrides` as the new version; returns it."""
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate

    name = variable_name(prefix, env)
    with sync_client() as c:
        var = c.read_variable_by_name(name)
        old = var.value if var is not None and isinstance(var.value, dict) else {"version": 0, "history": []}
        version = int(old.get("version", 0)) + 1
        entry = {"version": version, "overrides": overrides, "comment": comment,
                 "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        value = {"version": version, "overrides": overrides,
                 "history": ([entry] + list(old.get("history") or []))[:HISTORY]}
        PREFECT_CALLS.record("prefect", "WriteVariable")
        if var is None:
            c.create_variable(VariableCreate(name=name, value=value, tags=["infra", env]))
        else:
            c.update_variable(VariableUpdate(name=name, value=value))
    return version


def flatten(overrides: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in overrides.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
