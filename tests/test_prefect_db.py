"""tests/prefect_db.py: the first server of a run makes the template, every later one
starts from a copy of it, with migration and block registration off."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from .prefect_db import FILE, FROM_COPY, copied, seeded


def _database(path: Path, rows: int) -> None:
    with sqlite3.connect(path) as db:
        db.execute("create table t (n integer)")
        db.executemany("insert into t values (?)", [(i,) for i in range(rows)])


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("select count(*) from t").fetchone()[0]


def test_the_first_server_makes_the_template_and_the_next_starts_from_a_copy(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    with seeded(shared, tmp_path / "a" / "prefect.db") as settings:
        assert settings == {}  # no template yet: start as usual
        (tmp_path / "a").mkdir()
        _database(tmp_path / "a" / "prefect.db", 3)
    assert _rows(shared / FILE) == 3
    with seeded(shared, tmp_path / "b" / "prefect.db") as settings:
        assert settings == FROM_COPY == {"PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
                                         "PREFECT_API_BLOCKS_REGISTER_ON_START": "false"}
        assert _rows(tmp_path / "b" / "prefect.db") == 3
    assert not (shared / f"{FILE}.part").exists()


def test_a_server_that_failed_to_start_leaves_no_template(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    with pytest.raises(RuntimeError), seeded(shared, tmp_path / "a.db"):
        raise RuntimeError("the server did not come up")
    assert not (shared / FILE).exists()
    with seeded(shared, tmp_path / "b.db") as settings:  # the next one starts as usual
        assert settings == {}
        _database(tmp_path / "b.db", 1)
    assert _rows(shared / FILE) == 1


def test_others_wait_for_the_template_being_made(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    seen: list[dict[str, str]] = []
    making, waiter_done = threading.Event(), threading.Event()

    def second() -> None:
        making.wait()
        with seeded(shared, tmp_path / "second.db") as settings:
            seen.append(settings)
        waiter_done.set()

    t = threading.Thread(target=second)
    t.start()
    with seeded(shared, tmp_path / "first.db"):
        making.set()
        assert not waiter_done.wait(0.3)  # held until the template exists
        _database(tmp_path / "first.db", 2)
    t.join(10)
    assert seen == [FROM_COPY] and _rows(tmp_path / "second.db") == 2


def test_a_server_started_elsewhere_gets_a_copy_once_there_is_a_template(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    assert copied(shared, tmp_path / "early" / "prefect.db") == {}  # none yet: it migrates its own
    assert not (tmp_path / "early" / "prefect.db").exists() and not (shared / FILE).exists()
    with seeded(shared, tmp_path / "a.db"):
        _database(tmp_path / "a.db", 4)
    assert copied(shared, tmp_path / "late" / "prefect.db") == FROM_COPY
    assert _rows(tmp_path / "late" / "prefect.db") == 4
