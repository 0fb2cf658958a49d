"""A migrated Prefect database, made once per test run and copied for every test server.

A new Prefect server spends about 10 CPU seconds of its start on an empty SQLite file:
running every migration, then registering the block types. The suite starts one per
xdist worker plus the worker harness's, on two cores. Here the run's first process
(pytest's controller) makes the template in a background process while the workers
start (`start_building`: the migrations and the block registration a server's start
runs, nothing else), and every test server starts from a copy of it with migration and
block registration off (about 3.5 CPU seconds). Same Prefect, same schema: nothing a
test sees changes. If the template could not be made, the first server starts as
usual and its database becomes the template (`seeded`). Test harness only; the
product's servers (`flows.sandbox`) start as Prefect starts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Iterator

FILE = "prefect-template.db"
# The settings of a server started from a copy (Prefect's environment variable names).
FROM_COPY = {"PREFECT_API_DATABASE_MIGRATE_ON_START": "false", "PREFECT_API_BLOCKS_REGISTER_ON_START": "false"}


def _lock_file(shared: Path) -> Path:
    shared.mkdir(parents=True, exist_ok=True)
    return shared / f"{FILE}.lock"


def start_building(shared: Path) -> subprocess.Popen[bytes]:
    """Make the template in a background process, which holds the template's lock until
    it is done (taken here first, so no one can find the lock free before it starts)."""
    fd = os.open(_lock_file(shared), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        # The child inherits the locked file description and releases it when it exits.
        return subprocess.Popen([sys.executable, "-m", "tests.prefect_db", str(shared / FILE), str(fd)],
                                cwd=Path(__file__).resolve().parent.parent, pass_fds=(fd,),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        os.close(fd)


def build(made: Path) -> None:
    """Migrate a new SQLite database and register the block types, as a server's start
    does; then keep it as the template."""
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL, temporary_settings

    work = made.with_suffix(".build")
    work.unlink(missing_ok=True)

    async def create() -> None:
        from prefect.server.database import provide_database_interface
        from prefect.server.models.block_registration import run_block_auto_registration

        db = provide_database_interface()
        await db.create_db()
        async with await db.session() as session:
            await run_block_auto_registration(session=session)

    with temporary_settings({PREFECT_SERVER_DATABASE_CONNECTION_URL: f"sqlite+aiosqlite:///{work}"}):
        asyncio.run(create())
    keep(work, made)
    work.unlink()


@contextlib.contextmanager
def _held(shared: Path) -> Iterator[Path]:
    """The template's lock, held for the block (one process at a time); yields where the
    template is (or will be)."""
    with open(_lock_file(shared), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield shared / FILE
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _copy(made: Path, database: Path) -> dict[str, str]:
    database.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(made, database)
    return dict(FROM_COPY)


@contextlib.contextmanager
def seeded(shared: Path, database: Path) -> Iterator[dict[str, str]]:
    """For a server about to start on `database` (an SQLite file not yet made): if this
    run has a template, copy it there and yield the settings for a server started from a
    copy. Else yield no settings; the caller starts its server as usual inside the block,
    and its database becomes the template when the block ends without an error. One
    process at a time: the others wait for the template."""
    with _held(shared) as made:
        if made.exists():
            yield _copy(made, database)
        else:
            yield {}
            keep(database, made)


def copied(shared: Path, database: Path) -> dict[str, str]:
    """For a server another process starts on `database`: a copy of this run's template
    there (once it is made) and the settings to start from it; no settings if there is
    none (that server then migrates its own, and nothing is kept from it)."""
    with _held(shared) as made:
        return _copy(made, database) if made.exists() else {}


def keep(database: Path, made: Path) -> None:
    """A database (a running server's too) as the template: SQLite's backup API (a
    consistent copy whatever the server is writing), written aside and then renamed, so
    no one ever copies half a file."""
    part = made.with_suffix(".part")
    with contextlib.closing(sqlite3.connect(database)) as src, contextlib.closing(sqlite3.connect(part)) as dst:
        src.backup(dst)
    part.rename(made)


if __name__ == "__main__":  # start_building's background process: PATH LOCKED_FD
    try:
        build(Path(sys.argv[1]))
    finally:
        os.close(int(sys.argv[2]))
