"""The SQLite layer (registry.db): engine settings, write transactions, errors, schema revisions."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from registry.db import (
    alembic_config,
    current_revision,
    head_revision,
    is_locked_error,
    known_revision,
    make_engine,
    read_session,
    run_write,
    translate_error,
    upgrade_schema,
)
from registry.errors import DatabaseBusyError, DatabaseDamagedError, RegistryError


def _database(tmp_path: Path) -> Path:
    path = tmp_path / "registry.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (x INTEGER NOT NULL)")
    return path


def _rows(path: Path) -> list[int]:
    connection = sqlite3.connect(path)
    try:
        return [row[0] for row in connection.execute("SELECT x FROM t ORDER BY x")]
    finally:
        connection.close()


@pytest.mark.parametrize("foreign_keys", [True, False])
def test_engine_uses_wal_and_the_foreign_key_setting(tmp_path: Path, foreign_keys: bool) -> None:
    engine = make_engine(_database(tmp_path), foreign_keys=foreign_keys)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == int(foreign_keys)
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    finally:
        engine.dispose()


def test_run_write_commits_and_returns(tmp_path: Path) -> None:
    path = _database(tmp_path)
    engine = make_engine(path)
    try:

        def work(session: Session) -> int:
            session.execute(text("INSERT INTO t (x) VALUES (1), (2)"))
            return int(session.execute(text("SELECT count(*) FROM t")).scalar_one())

        assert run_write(engine, work) == 2
    finally:
        engine.dispose()
    assert _rows(path) == [1, 2]


def test_run_write_rolls_back_when_the_work_fails(tmp_path: Path) -> None:
    path = _database(tmp_path)
    engine = make_engine(path)

    def work(session: Session) -> None:
        session.execute(text("INSERT INTO t (x) VALUES (7)"))
        raise RuntimeError("half done")

    try:
        with pytest.raises(RuntimeError, match="half done"):
            run_write(engine, work)
    finally:
        engine.dispose()
    assert _rows(path) == []


def test_run_write_waits_for_another_writer(tmp_path: Path) -> None:
    """A write transaction held by another connection delays the write; it is not an error."""
    path = _database(tmp_path)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t (x) VALUES (1)")

    def release() -> None:
        time.sleep(0.4)
        holder.execute("COMMIT")

    thread = threading.Thread(target=release)
    engine = make_engine(path)
    try:
        started = time.monotonic()
        thread.start()
        run_write(engine, lambda session: session.execute(text("INSERT INTO t (x) VALUES (2)")))
        assert time.monotonic() - started >= 0.3
    finally:
        thread.join()
        holder.close()
        engine.dispose()
    assert _rows(path) == [1, 2]


def test_locked_and_other_errors_are_told_apart(tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "registry.sqlite")
    locked = sqlite3.OperationalError("database is locked")
    assert is_locked_error(locked) and is_locked_error(sqlite3.OperationalError("database table is busy"))
    assert not is_locked_error(sqlite3.OperationalError("no such table: t"))
    busy = translate_error(engine, locked, waited=12.0)
    assert isinstance(busy, DatabaseBusyError) and "registry.sqlite" in str(busy) and "12 s" in str(busy)
    damaged = translate_error(engine, sqlite3.DatabaseError("file is not a database\nmore"))
    assert isinstance(damaged, DatabaseDamagedError)
    assert "cannot be read (DatabaseError: file is not a database)" in str(damaged)
    own = RegistryError("already ours")
    assert translate_error(engine, own) is own
    engine.dispose()


def test_reading_a_file_that_is_not_a_database_is_a_damaged_database(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    path.write_bytes(b"this is not SQLite " * 300)
    engine = make_engine(path)
    try:
        with (
            pytest.raises(DatabaseDamagedError, match=r"registry\.sqlite cannot be read"),
            read_session(engine) as session,
        ):
            session.execute(text("SELECT * FROM sqlite_master")).fetchall()
    finally:
        engine.dispose()


def test_schema_revisions_from_empty_to_head(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    head = head_revision()
    assert known_revision(head) and known_revision("0001") and not known_revision("9999-nope")
    engine = make_engine(path)
    try:
        assert current_revision(engine) is None  # an empty database
        upgrade_schema(path, "0001")
        assert current_revision(engine) == "0001"
        upgrade_schema(path)
        assert current_revision(engine) == head
        with engine.connect() as connection:
            tables = {row[0] for row in connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"feature_space", "categories", "category_versions", "alembic_version"} <= tables
    finally:
        engine.dispose()
    assert alembic_config(path).get_main_option("sqlalchemy.url") == f"sqlite:///{path}"
