"""Plan data: desired resources, observed state, property diffs and changes.

Everything here is plain data with no AWS calls, so plans can be rendered, compared,
published as artifacts and tested as tables.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

OWNER_TAG = "managed-by"
TYPE_TAG = "deployment-type"


@dataclass(frozen=True)
class Ref:
    """A value known only from another resource's outputs (an id or ARN AWS assigns)."""

    key: str
    attr: str
    fmt: str = "{}"

    def resolve(self, value: Any) -> Any:
        return self.fmt.format(value) if self.fmt != "{}" else value

    def __repr__(self) -> str:
        return f"<{self.key}.{self.attr}>"


class _Unknown:
    _inst: "_Unknown | None" = None

    def __new__(cls) -> "_Unknown":
        if cls._inst is None:
            cls._inst = super().__new__(cls)
        return cls._inst

    def __repr__(self) -> str:
        return "(known after apply)"


UNKNOWN = _Unknown()


@dataclass(frozen=True)
class Within:
    """An integer that may float inside [low, high] (e.g. an autoscaled desired count);
    outside the range it is set to `preferred`."""

    low: int
    high: int
    preferred: int

    def matches(self, actual: Any) -> bool:
        return isinstance(actual, int) and self.low <= actual <= self.high

    def __repr__(self) -> str:
        return f"{self.preferred} (autoscaled {self.low}..{self.high})"


@dataclass(frozen=True)
class Sensitive:
    """A secret value: compared by content, never shown."""

    value: Any = field(repr=False)

    def __repr__(self) -> str:
        return "(sensitive)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sensitive) and other.value == self.value

    def __hash__(self) -> int:
        return hash("sensitive")


class Action(str, enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    NOOP = "no-op"
    CONFLICT = "conflict"
    NOT_CHECKED = "not-checked"
    # A teardown's: deleted, or left in place (data not asked for, someone else's).
    DELETE = "delete"
    KEEP = "keep"

    @property
    def mutates(self) -> bool:
        return self in (Action.CREATE, Action.UPDATE, Action.REPLACE, Action.DELETE)


@dataclass(frozen=True)
class Resource:
    """One desired resource. `props` are normalised desired properties; a value of
    None means "not managed"; `Ref`s are resolved against dependencies' outputs."""

    kind: str
    name: str
    props: dict[str, Any]
    deps: tuple[str, ...] = ()
    deployment_type: str | None = None
    # Identity needed to read the resource that is not a managed property
    # (e.g. the cluster a service belongs to).
    ident: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass
class Observed:
    """What exists in AWS, normalised by the resource's handler."""

    props: dict[str, Any]
    outputs: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Diff:
    path: str
    current: Any
    desired: Any

    def render(self) -> tuple[str, str, str]:
        return self.path, _show(self.current), _show(self.desired)


def _show(value: Any) -> str:
    if value is None:
        return "(absent)"
    if isinstance(value, (dict, list)):
        return json.dumps(_jsonable(value), sort_keys=True, default=repr)
    return repr(value) if isinstance(value, (Sensitive, Within, _Unknown, Ref)) else str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (Sensitive, Within, _Unknown, Ref)):
        return repr(value)
    return value


@dataclass
class Change:
    resource: Resource
    action: Action
    reason: str
    diffs: list[Diff] = field(default_factory=list)
    observed: Observed | None = None
    # Why this change waits for something outside the run (e.g. an image push).
    deferred: str | None = None
    # Why this create cannot be made at all in this run (stops the apply before any change).
    blocker: str | None = None
    # False for a shared resource adopted as it is: its tags stay its owner's.
    manage_tags: bool = True
    # Properties sent but not compared (the emulator does not store them).
    uncompared: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return self.resource.key


@dataclass
class Plan:
    environment: str
    account_id: str
    region: str
    changes: list[Change]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {a.value: 0 for a in Action}
        for c in self.changes:
            out[c.action.value] += 1
        return out

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action not in (Action.NOOP, Action.KEEP)]

    @property
    def empty(self) -> bool:
        return not self.pending

    @property
    def applicable(self) -> list[Change]:
        """Pending changes this run can make (deferred ones wait)."""
        return [c for c in self.pending if c.deferred is None]

    @property
    def deferred(self) -> list[Change]:
        return [c for c in self.pending if c.deferred is not None]

    @property
    def conflicts(self) -> list[Change]:
        return [c for c in self.changes if c.action is Action.CONFLICT]

    def digest(self) -> str:
        """A fingerprint of what would change; the apply step refuses a plan whose
        digest differs from the one the user confirmed."""
        # The run's own lock is created by acquiring it, between confirmation and apply.
        data = [
            (c.key, c.action.value, [d.render() for d in c.diffs]) for c in self.pending
            if c.resource.kind != "prefect.concurrency_limit"
        ]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
