"""The benchmark's Prefect API: a `prefect server start` on PostgreSQL (as a hosted or
self-managed production server runs) or on SQLite (Prefect's test harness, as the test
suite and a laptop run).

SQLite takes one write at a time and answers a write that meets another with 503 (the
client then backs off for seconds), so against it the product writes one at a time and
a benchmark of parallel writes measures SQLite's lock, not the engine. PostgreSQL is
what a remote API stands on: with it, and the API declared remote (`remote_api`), the
benchmark's "+latency per Prefect API call" scenario is a remote API with that latency.

The PostgreSQL cluster is a throwaway one: initdb into a temporary directory, listening
on 127.0.0.1 only (a free port, no Unix socket outside that directory), stopped and
deleted on exit. PostgreSQL refuses to run as root: as root it runs as the `postgres`
user (Debian's package creates it).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator
from unittest import mock


def postgres_bin() -> Path | None:
    """The directory of PostgreSQL's server programs (initdb, pg_ctl), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """A new PostgreSQL cluster on 127.0.0.1; yields an asyncpg URL to its database."""
    from infra_tasks.emulator import free_port

    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL's server programs (initdb, pg_ctl) were not found: "
                           "apt-get install postgresql, or run with --prefect-db sqlite")
    as_user: list[str] = []
    data = Path(tempfile.mkdtemp(prefix="bench-postgres-"))
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(data, "postgres")
    port = free_port()

    def run(*cmd: str) -> None:
        done = subprocess.run([*as_user, *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")

    try:
        run(str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "prefect", "-E", "UTF8")
        run(str(bindir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "server.log"), "-w", "-o",
            f"-p {port} -c listen_addresses=127.0.0.1 -k {data} -c max_connections=200", "start")
        try:  # initdb's own `postgres` database
            yield f"postgresql+asyncpg://prefect@127.0.0.1:{port}/postgres"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def prefect_api(db: str) -> Iterator[str]:
    """Point this process's Prefect client at a new Prefect server on `db` ("postgres" or
    "sqlite"); yields a one-line description of it for the report."""
    if db == "sqlite":
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            yield "Prefect's test server on SQLite (subprocess)"
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.sandbox import prefect_server
    from infra_tasks.emulator import free_port

    with postgres_cluster() as url, tempfile.TemporaryDirectory(prefix="bench-prefect-") as home:
        with prefect_server(free_port(), Path(home), Path(home) / "server.log", {
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": url, "PREFECT_UI_ENABLED": "false"}) as api, \
                temporary_settings({PREFECT_API_URL: api}):
            yield "`prefect server start` on PostgreSQL (subprocesses)"


@contextlib.contextmanager
def remote_api() -> Iterator[None]:
    """Have the product treat the Prefect API as remote (its writes in parallel), as it
    would a hosted one: the benchmark's latency stands for the network in between."""
    with mock.patch("infra_tasks.prefect_objects._local_api", return_value=False):
        yield
