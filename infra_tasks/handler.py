"""The one shape every resource kind has.

A handler reads a resource (returning normalised properties, or None when absent),
and creates or updates it from resolved desired properties. Decisions are not made
here: the engine diffs and decides; handlers only translate a decision into calls.

Each AWS service module reads the same way, top to bottom: `MISSING` (how the service
says "not there", an `aws.Missing`) → thin boto3 reads through `aws.absent` (None when
missing, any other error translated) → public, pure `normalise_*` functions → desired
properties → one `Handler` subclass per resource kind. While applying, a handler reads
only what AWS itself requires (each such read says why in a comment).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from .aws import ClientError, InfraError, translate
from .model import Diff, Observed, Resource

T = TypeVar("T")


class Handler:
    kind: str = ""
    # Present but without our ownership tag: adopt silently instead of reporting a conflict
    # (shared things the stack we replace required to exist, e.g. the CircleCI OIDC provider).
    adopt_existing: bool = False
    # Whether the resource carries tags of its own; if not, ownership follows its parent.
    taggable: bool = True
    # Whether a missing ownership tag is a conflict. Task-definition revisions anyone
    # registers in our family are drift of our resource, not someone else's resource.
    ownership_checked: bool = True
    # Property paths AWS cannot change in place.
    replace_paths: tuple[str, ...] = ()
    # True when replacing creates a new version and deletes nothing (task definitions).
    replace_is_safe: bool = False
    # Holds data that a teardown keeps unless asked to delete it (`--delete-data`): a
    # bucket's objects, a registry's images, log events, the Prefect credentials.
    holds_data: bool = False

    def create_blocker(self, res: Resource, props: dict[str, Any]) -> str | None:
        """Why this resource cannot be created in this run (None: it can)."""
        return None

    def read(self, res: Resource) -> Observed | None:
        raise NotImplementedError

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def update(self, res: Resource, props: dict[str, Any], observed: Observed,
               diffs: list[Diff]) -> dict[str, Any]:
        raise NotImplementedError

    def delete_blocker(self, res: Resource, observed: Observed) -> str | None:
        """Why this resource must not be deleted by a teardown (read-only; e.g. a policy
        attached to someone else's role, a cluster still running flow runs). None: it may."""
        return None

    def delete(self, res: Resource, observed: Observed) -> None:
        """Delete the resource and what AWS requires gone first (a bucket's object versions,
        a role's policies). Idempotent: what is already gone is not an error, so a teardown
        killed half-way finishes when run again. Every wait is bounded and reported through
        `progress.current()`."""
        raise InfraError(f"{res.key}: {self.kind} cannot be deleted by this project; delete it by hand")

    def replace(self, res: Resource, props: dict[str, Any], observed: Observed,
                diffs: list[Diff]) -> dict[str, Any]:
        raise InfraError(
            f"{res.key}: {', '.join(d.path for d in diffs)} cannot change in place and bootstrap never "
            f"deletes; delete the resource by hand (after checking nothing uses it) or revert the setting"
        )


def changed(diffs: list[Diff], *paths: str) -> bool:
    """Whether any diff touches one of `paths` (a property or anything below it)."""
    return any(d.path == p or d.path.startswith(p + ".") for d in diffs for p in paths)


def call(action: str, resource: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run one boto3 call, translating AWS errors into a message naming the resource."""
    try:
        return fn(*args, **kwargs)
    except ClientError as exc:
        raise translate(exc, action, resource) from None


def tag_list(tags: dict[str, str], key: str = "Key", value: str = "Value") -> list[dict[str, str]]:
    return [{key: k, value: v} for k, v in sorted(tags.items())]


def tag_dict(tags: list[dict[str, str]] | None, key: str = "Key", value: str = "Value") -> dict[str, str]:
    return {t[key]: t[value] for t in tags or []}
