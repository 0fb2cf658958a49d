"""IAM (and resource) policy documents: one normaliser, so that equivalent documents
compare equal and only real differences show as drift.

AWS returns documents that differ textually from what was sent: URL-encoded JSON,
a single value instead of a one-item list, statements in another order, `"*"` for
`{"AWS": "*"}`, booleans and numbers as strings in conditions, a missing `Version`.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

_LISTY = ("Action", "NotAction", "Resource", "NotResource")


def parse(doc: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if doc is None or doc == "":
        return None
    if isinstance(doc, dict):
        return doc
    text = doc.strip()
    if text.startswith("%7B") or text.startswith("%7b"):
        text = unquote(text)
    return json.loads(text)


def _strs(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return sorted({_scalar(v) for v in items})


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _principal(value: Any) -> Any:
    if value == "*":
        return {"AWS": ["*"]}
    if isinstance(value, dict):
        return {k: _strs(v) for k, v in sorted(value.items())}
    return value


def _condition(cond: dict[str, Any]) -> dict[str, Any]:
    return {
        op: {key: _strs(val) for key, val in sorted(block.items())}
        for op, block in sorted(cond.items())
    }


def normalise_statement(st: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in st.items():
        if key == "Sid" and not value:
            continue
        if key in _LISTY:
            # Written back as given (AWS returns action names in the case they were sent).
            out[key] = _strs(value)
        elif key in ("Principal", "NotPrincipal"):
            out[key] = _principal(value)
        elif key == "Condition":
            out[key] = _condition(value)
        else:
            out[key] = value
    return out


def normalise(doc: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """Canonical form of a policy document (None stays None)."""
    parsed = parse(doc)
    if parsed is None:
        return None
    statements = parsed.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    norm = [normalise_statement(s) for s in statements]
    unique = {json.dumps(s, sort_keys=True): s for s in norm}
    out: dict[str, Any] = {
        "Version": parsed.get("Version", "2008-10-17"),
        "Statement": [unique[k] for k in sorted(unique)],
    }
    if parsed.get("Id"):
        out["Id"] = parsed["Id"]
    return out


def equivalent(a: Any, b: Any) -> bool:
    return normalise(a) == normalise(b)


def document(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(actions: list[str] | str, resources: list[str] | str, sid: str | None = None,
          condition: dict[str, Any] | None = None) -> dict[str, Any]:
    st: dict[str, Any] = {"Effect": "Allow", "Action": actions, "Resource": resources}
    if sid:
        st["Sid"] = sid
    if condition:
        st["Condition"] = condition
    return st
