"""One way to get a synchronous Prefect client, for every Prefect read and write here.

Inside a flow or task run this is the run's own client (what `get_client` returns
there). Outside one (the CLI's plan, the readers' threads) Prefect builds a new client
per call, and each new client builds a new TLS context, loading the whole CA bundle
from disk — about a tenth of a plan's CPU when profiled. Here the TLS context is built
once per (verify setting, CA file), exactly as Prefect builds it
(`PREFECT_API_TLS_INSECURE_SKIP_VERIFY`, `PREFECT_API_SSL_CERT_FILE`, else certifi's
bundle), and shared: an `ssl.SSLContext` is safe to share between threads.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any


@functools.lru_cache(maxsize=None)
def _tls(insecure: bool, cafile: str) -> ssl.SSLContext:
    if insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=cafile)


def tls_context() -> ssl.SSLContext:
    import certifi
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY

    return _tls(bool(PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value()), PREFECT_API_SSL_CERT_FILE.value() or certifi.where())


def sync_client() -> Any:
    """`get_client(sync_client=True)`, reusing the run's client or one TLS context."""
    from prefect.client.orchestration import get_client
    from prefect.context import SyncClientContext

    run = SyncClientContext.get()
    if run is not None and run.client is not None and getattr(run, "_httpx_settings", None) is None:
        return get_client(sync_client=True)
    return get_client(sync_client=True, httpx_settings={"verify": tls_context()})
