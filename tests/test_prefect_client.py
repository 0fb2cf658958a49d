"""The shared Prefect client plumbing: one TLS context built as Prefect builds it, the
run's own client inside a run, and Prefect writes one at a time only against an API on
this machine."""

from __future__ import annotations

import contextvars
import ssl
import threading

import pytest

from infra_tasks import prefect_client, prefect_objects


def test_one_tls_context_built_as_prefect_builds_it(tmp_path) -> None:
    import certifi
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY, temporary_settings

    ctx = prefect_client.tls_context()
    assert ctx is prefect_client.tls_context()  # built once, shared
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx is prefect_client._tls(False, PREFECT_API_SSL_CERT_FILE.value() or certifi.where())
    with temporary_settings({PREFECT_API_TLS_INSECURE_SKIP_VERIFY: True}):
        insecure = prefect_client.tls_context()
        assert insecure.verify_mode is ssl.CERT_NONE and not insecure.check_hostname
    with temporary_settings({PREFECT_API_SSL_CERT_FILE: certifi.where()}):
        assert prefect_client.tls_context().verify_mode is ssl.CERT_REQUIRED


def test_inside_a_run_the_runs_own_client(prefect_api) -> None:
    from prefect.context import SyncClientContext

    outside = prefect_client.sync_client()
    assert outside is not prefect_client.sync_client()  # a new client each time, sharing one TLS context
    with SyncClientContext() as run:
        assert prefect_client.sync_client() is run.client


@pytest.mark.parametrize("url,local", [
    ("http://127.0.0.1:4200/api", True), ("http://localhost:4200/api", True), ("http://[::1]:4200/api", True),
    ("", True),  # Prefect's ephemeral server
    ("https://api.prefect.cloud/api/accounts/a/workspaces/w", False), ("http://prefect.internal:4200/api", False),
])
def test_writes_one_at_a_time_only_against_a_local_api(url, local) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    done = threading.Event()
    write = prefect_objects._one_at_a_time(lambda: done.set())
    with temporary_settings({PREFECT_API_URL: url}):
        assert prefect_objects._local_api() is local
        with prefect_objects._WRITES:  # another write under way in this process
            t = threading.Thread(target=contextvars.copy_context().run, args=(write,))
            t.start()
            t.join(1)
            assert done.is_set() is (not local)  # a local write waits its turn, a remote one does not
        t.join(5)
        assert done.is_set()
