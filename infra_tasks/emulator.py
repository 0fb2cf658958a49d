"""The embedded AWS emulator behind `--sandbox`: moto in server mode on loopback.

Our code talks real boto3 over HTTP to it. Everything specific to the emulator lives
here and in the `INFRA_SANDBOX_ACCOUNT` header hook; nothing weakens what real AWS gets.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from typing import Iterator

from .aws import reset_clients

SANDBOX_ENV = ("AWS_ENDPOINT_URL", "INFRA_SANDBOX_ACCOUNT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
               "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
               "MOTO_IAM_LOAD_MANAGED_POLICIES")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def scoped_environ(updates: dict[str, str], remove: tuple[str, ...] = ()) -> Iterator[None]:
    """Set (and unset) environment variables for a block; restore them after it."""
    saved = {k: os.environ.get(k) for k in {*updates, *remove}}
    for k in remove:
        os.environ.pop(k, None)
    os.environ.update(updates)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def sandbox_env(endpoint: str, account_id: str, region: str) -> Iterator[None]:
    """Point every client at `endpoint` acting as `account_id`, with fake credentials."""
    with scoped_environ({
        "AWS_ENDPOINT_URL": endpoint, "INFRA_SANDBOX_ACCOUNT": account_id,
        "AWS_ACCESS_KEY_ID": "sandbox", "AWS_SECRET_ACCESS_KEY": "sandbox",
        "AWS_DEFAULT_REGION": region, "AWS_REGION": region,
    }, remove=("AWS_PROFILE", "AWS_SESSION_TOKEN")):
        reset_clients()
        try:
            yield
        finally:
            reset_clients()


@contextlib.contextmanager
def moto_server(port: int | None = None, managed_policies: bool = False) -> Iterator[str]:
    """Start moto's threaded server on 127.0.0.1 (a free port); yields its URL.

    Without AWS managed policies unless asked: the stack attaches none (its roles'
    policies are its own, scoped ones), and loading them costs about a second for every
    account after a reset. Without moto's catalogue of public AMIs either (nothing here
    launches an instance; Fargate needs none), which EC2 loads, with a snapshot per
    image, for every account and region after a reset."""
    with scoped_environ({"MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
                         **({"MOTO_IAM_LOAD_MANAGED_POLICIES": "true"} if managed_policies else {})},
                        remove=() if managed_policies else ("MOTO_IAM_LOAD_MANAGED_POLICIES",)):
        with _moto_server(port) as url:
            yield url


@contextlib.contextmanager
def _moto_server(port: int | None) -> Iterator[str]:
    """moto's application (the one its `moto_server` runs) served by waitress.

    moto's own server (werkzeug's) closes the connection after every response and starts
    a thread per connection: every call paid a TCP handshake and a thread start, about a
    quarter of a plain call's CPU, client and server together. AWS's endpoints keep
    connections alive, and so does waitress, with a fixed pool of request threads (more
    than the engine's default parallelism). One difference from moto's own server:
    waitress drops request headers with an underscore in their name (S3 metadata keys
    could have one; nothing here sends such a header)."""
    try:
        import waitress
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("the sandbox needs the emulator: pip install -e '.[sandbox]'") from exc
    import logging
    import threading

    from waitress import wasyncore

    # waitress logs a queue depth warning whenever all its threads are busy for a moment.
    logging.getLogger("waitress").setLevel(logging.ERROR)
    _thread_safe_role_lookup()
    _bucket_tags_on_create()
    _service_modules_listed_once()
    server = waitress.create_server(DomainDispatcherApplication(create_backend_app), host="127.0.0.1",
                                    port=port or 0, threads=16, connection_limit=1000, channel_timeout=60,
                                    ident="moto")
    thread = threading.Thread(target=server.run, name="emulator", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        # The listening socket and every open connection, closed in the loop's own thread
        # (closing them under its select() fails it with EBADF): the loop then ends with
        # nothing to watch. waitress has no public stop for a loop run in a thread.
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))  # noqa: SLF001
        thread.join(10)
        server.task_dispatcher.shutdown()


def _service_modules_listed_once() -> None:
    """moto's server lists its own package directory (about 200 `isdir` calls) on every
    request to recognise the service from the Host header; the list never changes while
    it runs. List it once (speed only: which service answers is unchanged)."""
    from moto import backends

    if isinstance(backends.list_of_moto_modules, functools.partial):
        return
    modules = frozenset(backends.list_of_moto_modules())
    backends.list_of_moto_modules = functools.partial(lambda m: m, modules)  # type: ignore[assignment]


def _thread_safe_role_lookup() -> None:
    """moto's IAM finds a role by iterating over the live dict of roles, which fails with
    "dictionary changed size during iteration" (HTTP 500) while a parallel request creates
    one; the apply creates roles in parallel. Iterate over a snapshot instead (emulator
    only: AWS has no such problem)."""
    from moto.iam.models import IAMBackend, NotFoundException

    if getattr(IAMBackend.get_role, "_snapshot", False):
        return

    def get_role(self: IAMBackend, role_name: str) -> object:
        for role in list(self.roles.values()):
            if role.name == role_name:
                return role
        raise NotFoundException(f"Role {role_name} not found")

    get_role._snapshot = True  # type: ignore[attr-defined]
    IAMBackend.get_role = get_role  # type: ignore[method-assign]


def _bucket_tags_on_create() -> None:
    """AWS sets `CreateBucketConfiguration.Tags` in the CreateBucket call itself (so a
    bucket never exists without its ownership tag); moto 5.2 ignores them. Store them as
    AWS does (emulator only)."""
    import xmltodict
    from moto.s3.responses import S3Response

    original = S3Response._bucket_response_put  # noqa: SLF001
    if getattr(original, "_tags_on_create", False):
        return

    def put(self: S3Response, request: object, bucket_name: str, querystring: dict) -> object:
        out = original(self, request, bucket_name, querystring)
        if not querystring and self.body:
            try:
                conf = xmltodict.parse(self.body).get("CreateBucketConfiguration") or {}
            except Exception:  # noqa: BLE001 - not XML: nothing to add
                conf = {}
            tags = (conf.get("Tags") or {}).get("Tag") or []
            tags = tags if isinstance(tags, list) else [tags]
            if tags:
                self.backend.put_bucket_tagging(bucket_name, {t["Key"]: t.get("Value") or "" for t in tags})
        return out

    put._tags_on_create = True  # type: ignore[attr-defined]
    S3Response._bucket_response_put = put  # type: ignore[method-assign]  # noqa: SLF001


@contextlib.contextmanager
def embedded(account_id: str, region: str) -> Iterator[str]:
    with moto_server() as url, sandbox_env(url, account_id, region):
        yield url


def reset(endpoint: str) -> None:
    """Clear all emulator state (tests use this between cases)."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30).read()


# Properties the emulator accepts but does not store or return (moto 5.2). Against the
# emulator only, they are sent but not compared — otherwise every plan would show them
# as drift. Against AWS (no emulator detected) everything is compared.
UNSTORED_PROPERTIES: dict[str, tuple[str, ...]] = {
    "ecs.service": ("deploymentConfiguration", "enableECSManagedTags"),
}


def unstored_properties(kind: str) -> tuple[str, ...]:
    if not detected():
        return ()
    return UNSTORED_PROPERTIES.get(kind, ())


@functools.lru_cache(maxsize=16)
def _is_moto(endpoint: str) -> bool:
    import json
    import urllib.error
    import urllib.request

    # /moto-api/config is a few bytes whatever the emulator holds (data.json dumps all state).
    try:
        with urllib.request.urlopen(f"{endpoint.rstrip('/')}/moto-api/config", timeout=10) as r:
            return r.status < 300 and isinstance(json.loads(r.read(4096)), dict)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def detected() -> bool:
    """Is the AWS endpoint in use the moto emulator? The embedded sandbox always is; a
    `--endpoint-url` is asked once (moto answers `/moto-api/`), so its gaps are allowed
    for without a flag the user might forget. Real AWS never has an endpoint override
    that answers there."""
    if os.environ.get("INFRA_SANDBOX_ACCOUNT"):
        return True
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    return bool(endpoint) and _is_moto(endpoint)
