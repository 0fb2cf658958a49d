"""The thin boto3 edge: clients, retries, call accounting and error translation.

Clients are created lazily (never at import time) from one botocore session per
process, configured from the environment so that Prefect tasks in worker threads and
flow runs on the agent see the same settings:

- `AWS_ENDPOINT_URL`     botocore's own setting: every client talks to that endpoint
                         (the sandbox emulator, or any AWS-compatible endpoint).
- `INFRA_SANDBOX_ACCOUNT` sandbox only: the emulator account to act as (sent as the
                         emulator's `x-moto-account-id` header; never set against AWS).
- `INFRA_AWS_RETRY_MODE` `standard` (default) or `adaptive`; `INFRA_AWS_MAX_ATTEMPTS` (default 8).

Every API call goes through botocore's event hooks, which count it (`CALLS`) so that
idempotency — zero mutating calls on a re-run — is measured, not assumed.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

T = TypeVar("T")

READ_PREFIXES = ("Describe", "Get", "List", "Head", "Lookup", "Search", "BatchGet", "Select")


def is_mutating(operation: str) -> bool:
    return not operation.startswith(READ_PREFIXES)


@dataclass
class CallLog:
    """Thread-safe record of every AWS API call made by this process."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, service: str, operation: str) -> None:
        with self.lock:
            self.calls.append((service, operation))

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()

    def snapshot(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.calls)

    @property
    def total(self) -> int:
        return len(self.snapshot())

    def mutating(self) -> list[str]:
        return [f"{s}:{o}" for s, o in self.snapshot() if is_mutating(o)]

    def summary(self) -> dict[str, int]:
        return dict(Counter(f"{s}:{o}" for s, o in self.snapshot()))


CALLS = CallLog()
# Extra botocore handlers (event name -> callables) that tests and the benchmark use to
# inject latency or faults on the wire. Registered on every new client.
_EXTRA_HANDLERS: list[tuple[str, Callable[..., Any]]] = []
_lock = threading.Lock()
_state: dict[str, Any] = {"session": None, "clients": {}, "key": None}


def _settings_key() -> tuple[Any, ...]:
    return (
        os.environ.get("AWS_ENDPOINT_URL"),
        os.environ.get("INFRA_SANDBOX_ACCOUNT"),
        os.environ.get("INFRA_AWS_RETRY_MODE", "standard"),
        os.environ.get("INFRA_AWS_MAX_ATTEMPTS", "8"),
        os.environ.get("AWS_PROFILE"),
        os.environ.get("AWS_ACCESS_KEY_ID"),
        os.environ.get("INFRA_REGION"),
        tuple(id(h) for _, h in _EXTRA_HANDLERS),
    )


def use_region(region: str) -> None:
    """Make `region` (from infra.toml) the region of every client."""
    if os.environ.get("INFRA_REGION") != region:
        os.environ["INFRA_REGION"] = region
        reset_clients()


def reset_clients() -> None:
    """Forget cached clients (after changing endpoint, account or hooks)."""
    with _lock:
        _state.update(session=None, clients={}, key=None)


def add_handler(event: str, handler: Callable[..., Any]) -> None:
    _EXTRA_HANDLERS.append((event, handler))
    reset_clients()


def remove_handler(handler: Callable[..., Any]) -> None:
    _EXTRA_HANDLERS[:] = [(e, h) for e, h in _EXTRA_HANDLERS if h != handler]  # == : bound methods
    reset_clients()


def _count(model: Any = None, **_: Any) -> None:
    CALLS.record(model.service_model.service_name, model.name)


def _add_account_header(request: Any = None, **_: Any) -> None:
    account = os.environ.get("INFRA_SANDBOX_ACCOUNT")
    if account:
        request.headers["x-moto-account-id"] = account


def client(service: str, region: str | None = None) -> Any:
    """A cached boto3 client with retries, call counting and the configured endpoint."""
    key = _settings_key()
    with _lock:
        if _state["key"] != key:
            _state.update(session=None, clients={}, key=key)
        cache_key = (service, region)
        if cache_key in _state["clients"]:
            return _state["clients"][cache_key]
        if _state["session"] is None:
            _state["session"] = boto3.Session(botocore_session=botocore.session.Session())
        session: boto3.Session = _state["session"]
        cfg = Config(
            retries={
                "mode": os.environ.get("INFRA_AWS_RETRY_MODE", "standard"),
                "total_max_attempts": int(os.environ.get("INFRA_AWS_MAX_ATTEMPTS", "8")),
            },
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=32,
            user_agent_extra="prefect-aws-stack",
        )
        # The config's region always wins over AWS_DEFAULT_REGION: never act in the wrong region.
        c = session.client(service, region_name=region or os.environ.get("INFRA_REGION"), config=cfg)
        c.meta.events.register("before-call", _count)
        if os.environ.get("INFRA_SANDBOX_ACCOUNT"):
            c.meta.events.register("before-sign", _add_account_header)
        for event, handler in _EXTRA_HANDLERS:
            c.meta.events.register(event, handler)
        _state["clients"][cache_key] = c
        return c


# --- error translation --------------------------------------------------------------

class InfraError(Exception):
    """An error to show the user: what failed, on which resource, and what to do."""


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def error_message(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message", ""))
    return str(exc)


NOT_FOUND_CODES = {
    "NoSuchEntity", "NoSuchBucket", "RepositoryNotFoundException", "ResourceNotFoundException",
    "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NoSuchLifecyclePolicy",
    "LifecyclePolicyNotFoundException", "ServerSideEncryptionConfigurationNotFoundError",
    "NoSuchBucketPolicy", "NoSuchPublicAccessBlockConfiguration", "NoSuchLifecycleConfiguration",
    "NoSuchTagSet", "NoSuchTagSetError", "ClusterNotFoundException", "ServiceNotFoundException",
    "InvalidGroup.NotFound", "ObjectNotFoundException",
}


def not_found(exc: BaseException) -> bool:
    """Whether `exc` is one of the 'not there' codes every service shares (the table above)."""
    return error_code(exc) in NOT_FOUND_CODES


@dataclass(frozen=True)
class Missing:
    """How one AWS service says "not there" (like amazon.aws's per-service `_is_missing`):
    its own error codes, on top of the shared `NOT_FOUND_CODES`, and — only for a service
    that answers a missing thing with a generic code — (code, message fragment) pairs."""

    codes: frozenset[str] = frozenset()
    messages: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, *codes: str, messages: dict[str, str] | None = None) -> "Missing":
        return cls(frozenset(codes), tuple(sorted((messages or {}).items())))

    def __call__(self, exc: BaseException) -> bool:
        if not isinstance(exc, ClientError):
            return False
        code = error_code(exc)
        if code in self.codes or code in NOT_FOUND_CODES:
            return True
        return any(code == c and fragment in error_message(exc) for c, fragment in self.messages)


def absent(resource: str, fn: Callable[..., T], /, *args: Any, missing: Missing = Missing(),
           **kwargs: Any) -> T | None:
    """Run one boto3 read of `resource`: its answer, or None when AWS says it is not there
    (`missing`: the service's test). Any other error is raised translated, naming the
    operation, the resource and the next step."""
    try:
        return fn(*args, **kwargs)
    except ClientError as exc:
        if missing(exc):
            return None
        raise translate(exc, exc.operation_name, resource) from None
    except BotoCoreError as exc:
        raise translate(exc, "read", resource) from None


def translate(exc: BaseException, action: str, resource: str) -> InfraError:
    code = error_code(exc)
    msg = error_message(exc)
    hint = {
        "AccessDenied": "the credentials in use lack this permission; run with the write management role or an admin profile",
        "AccessDeniedException": "the credentials in use lack this permission; run with the write management role or an admin profile",
        "UnauthorizedOperation": "the credentials in use lack this permission",
        "ThrottlingException": "AWS kept throttling after all retries; re-run later or lower --parallelism",
        "Throttling": "AWS kept throttling after all retries; re-run later or lower --parallelism",
        "TooManyRequestsException": "AWS kept throttling after all retries; re-run later or lower --parallelism",
        "LimitExceededException": "an account quota is reached; raise it in Service Quotas or free capacity",
        "ExpiredToken": "the session credentials expired; refresh them (aws sso login / assume the role again)",
        "ExpiredTokenException": "the session credentials expired; refresh them (aws sso login / assume the role again)",
        "RequestExpired": "the session credentials expired; refresh them (aws sso login / assume the role again)",
        "RequestLimitExceeded": "AWS kept throttling after all retries; re-run later or lower --parallelism",
        "SlowDown": "AWS kept throttling after all retries; re-run later or lower --parallelism",
        "InternalError": "AWS kept failing with an internal error after all retries; re-run later (safe to repeat)",
        "InternalFailure": "AWS kept failing with an internal error after all retries; re-run later (safe to repeat)",
        "ServiceUnavailable": "AWS kept failing with an internal error after all retries; re-run later (safe to repeat)",
        "ServiceUnavailableException": "AWS kept failing with an internal error after all retries; re-run later "
                                       "(safe to repeat)",
        # A HEAD request (S3 HeadBucket) carries no error body: only the HTTP status.
        "403": "access denied without detail: the credentials lack the permission, or, for an S3 bucket, another "
               "AWS account owns the name (bucket names are global): change `prefix` in infra.toml",
    }.get(code, "see the AWS message above; fix the cause and re-run (runs are safe to repeat)")
    if isinstance(exc, NoCredentialsError):
        hint = "no AWS credentials found; set AWS_PROFILE or run with --sandbox"
    elif isinstance(exc, BotoCoreError):
        hint = ("AWS did not answer after all retries (network, endpoint or timeout); check connectivity and re-run: "
                "completed changes are not repeated")
    label = f"{code}: {msg}" if code else msg
    return InfraError(f"{action} failed for {resource}: {label}\n  next step: {hint}")


@functools.lru_cache(maxsize=None)
def _compiled(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(patterns), re.IGNORECASE)


# ECS, EventBridge and Application Auto Scaling reject a role for a while after IAM
# created it. These are the messages AWS uses for that; nothing else is retried here.
IAM_PROPAGATION_PATTERNS = (
    r"unable to assume (the )?role",
    r"was unable to assume",
    r"role is not valid",
    r"is not authorized to perform: sts:AssumeRole",
    r"cannot be assumed",
    r"role .* (does not exist|is invalid)",
    r"Invalid role",
    r"not authorized to perform: iam:PassRole",
)


def iam_propagation_timeout() -> float:
    return float(os.environ.get("INFRA_IAM_PROPAGATION_TIMEOUT", "120"))


def retry_iam_propagation(fn: Callable[[], T], *, action: str, resource: str,
                          timeout: float | None = None, sleep: float | None = None) -> T:
    """Call `fn`, retrying only the 'new role not usable yet' errors, for a bounded time."""
    limit = iam_propagation_timeout() if timeout is None else timeout
    sleep = float(os.environ.get("INFRA_IAM_RETRY_SLEEP", "2")) if sleep is None else sleep
    deadline = time.monotonic() + limit
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except ClientError as exc:
            msg = error_message(exc)
            if not _compiled(IAM_PROPAGATION_PATTERNS).search(msg):
                raise
            if time.monotonic() + sleep > deadline:
                raise InfraError(
                    f"{action} failed for {resource}: AWS still rejects the IAM role after {attempt} attempts "
                    f"in {limit:.0f}s ({error_code(exc)}: {msg})\n  next step: check that the role exists and "
                    f"trusts the right service, then re-run; IAM changes normally propagate within two minutes"
                ) from None
            time.sleep(min(sleep * (1.5 ** (attempt - 1)), 10.0))


def attempt(fn: Callable[..., T], /, *args: Any, busy: tuple[str, ...], missing: Missing | None = None,
            **kwargs: Any) -> T | bool | None:
    """One try of a call AWS refuses while something still uses or drains the resource:
    its answer; True when `missing` says the resource is already gone; None while AWS
    answers one of the `busy` codes. Any other error is raised as it is."""
    try:
        return fn(*args, **kwargs)
    except ClientError as exc:
        if missing is not None and missing(exc):
            return True
        if error_code(exc) in busy:
            return None
        raise


def until(check: Callable[[], T | None], *, timeout: float, interval: float, waiting: Callable[[], str],
          gave_up: Callable[[], str]) -> T:
    """Call `check` until it returns something other than None, for at most `timeout`
    seconds, `interval` apart, saying `waiting()` on the progress display meanwhile; then
    an InfraError with `gave_up()` (which names the resource, what it waited for and the
    next step). Every wait of a teardown goes through here, so none is unbounded."""
    from . import progress

    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got is not None:
            return got
        if time.monotonic() + interval > deadline:
            raise InfraError(gave_up())
        reporter = progress.current()
        if reporter:
            reporter.waiting(waiting())
        time.sleep(interval)


def paginate(c: Any, operation: str, key: str, **kwargs: Any) -> Iterator[Any]:
    for page in c.get_paginator(operation).paginate(**kwargs):
        yield from page.get(key, [])


__all__ = [
    "CALLS", "BotoCoreError", "ClientError", "InfraError", "Missing", "absent", "add_handler", "client", "error_code",
    "attempt", "is_mutating", "not_found", "paginate", "remove_handler", "reset_clients", "retry_iam_propagation",
    "translate", "until",
]
