"""The registry database: engines with the right SQLite settings, Alembic, write retries.

Every connection runs with ``journal_mode=WAL`` (readers never block the writer),
``busy_timeout`` (a writer waits for another instead of failing) and ``foreign_keys=ON``.
Transactions are explicit: the driver's own implicit transaction handling is switched off and
each transaction starts with ``BEGIN`` (reads) or ``BEGIN IMMEDIATE`` (writes, so the write
lock is taken up front and a read-then-write transaction can never fail half-way with
"database is locked"). Writes that still meet a locked database are retried with back-off.

The schema is owned by the Alembic revisions in the installed :mod:`migrations` package; the
:class:`alembic.config.Config` is built in code (no ``alembic.ini`` is needed).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

import migrations
from registry.errors import DatabaseBusyError, DatabaseDamagedError, RegistryError
from registry.records import DB_FILE

#: How long one statement waits for another writer's lock (SQLite ``busy_timeout``), in ms.
BUSY_TIMEOUT_MS = 30_000
#: Total time a write transaction is retried on "database is locked", in seconds.
WRITE_RETRY_SECONDS = 120.0

T = TypeVar("T")


def _url(target: str | Path) -> str:
    text_target = str(target)
    if text_target.startswith("sqlite:"):
        return text_target
    return f"sqlite:///{Path(text_target)}"


def make_engine(target: str | Path, *, foreign_keys: bool = True) -> Engine:
    """An engine on a SQLite file (path or ``sqlite:///`` URL) with the registry's settings.

    Args:
        target: database file path or SQLAlchemy URL.
        foreign_keys: enforce foreign keys (off only for migrations, which may recreate tables).
    """
    engine = create_engine(_url(target), connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun explicitly below
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())

    return engine


def writer(engine: Engine) -> Engine:
    """A view of ``engine`` whose transactions start with ``BEGIN IMMEDIATE``."""
    return engine.execution_options(sqlite_begin="IMMEDIATE")


def is_locked_error(error: BaseException) -> bool:
    """True for SQLite's "database is locked" / "busy" errors (worth retrying)."""
    message = str(getattr(error, "orig", error)).lower()
    return "locked" in message or "busy" in message


#: What a damaged database raises while its rows are fetched and decoded: SQLite's own errors
#: ("malformed", "not a database", "could not decode to UTF-8"), and the JSON / date / row
#: decoding errors of a row whose bytes were changed.
ROW_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    DBAPIError,
    sqlite3.DatabaseError,
    json.JSONDecodeError,
    UnicodeError,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
)


def database_path(engine: Engine) -> str:
    """The database file of ``engine`` (for messages)."""
    return str(engine.url.database or engine.url)


def translate_error(engine: Engine, error: BaseException, waited: float | None = None) -> RegistryError:
    """The registry error for a low-level error met while using the database."""
    if isinstance(error, RegistryError):
        return error
    if isinstance(error, DBAPIError | sqlite3.Error) and is_locked_error(error):
        return DatabaseBusyError(database_path(engine), waited if waited is not None else BUSY_TIMEOUT_MS / 1000)
    reason = str(getattr(error, "orig", None) or error).splitlines()[0]
    return DatabaseDamagedError(database_path(engine), f"cannot be read ({type(error).__name__}: {reason})")


@contextmanager
def database_errors(engine: Engine) -> Iterator[None]:
    """Turn the errors of a damaged or busy database into :class:`DatabaseDamagedError` / :class:`DatabaseBusyError`."""
    try:
        yield
    except RegistryError:
        raise
    except ROW_DECODE_ERRORS as error:
        raise translate_error(engine, error) from error


def run_write(engine: Engine, work: Callable[[Session], T], retry_seconds: float = WRITE_RETRY_SECONDS) -> T:
    """Run ``work(session)`` in one short ``BEGIN IMMEDIATE`` transaction; retry when locked.

    ``work`` must not have side effects outside the session that cannot be repeated. A database
    still locked after ``retry_seconds`` raises :class:`DatabaseBusyError`; one that cannot be
    read raises :class:`DatabaseDamagedError`.
    """
    started = time.monotonic()
    deadline = started + retry_seconds
    delay = 0.05
    while True:
        try:
            with Session(writer(engine), expire_on_commit=False) as session, session.begin():
                return work(session)
        except OperationalError as error:
            if is_locked_error(error) and time.monotonic() <= deadline:
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            raise translate_error(engine, error, time.monotonic() - started) from error
        except RegistryError:
            raise
        except (DBAPIError, sqlite3.DatabaseError, json.JSONDecodeError, UnicodeError) as error:
            raise translate_error(engine, error) from error


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A session in one read transaction (a consistent snapshot), rolled back at the end.

    Errors of a damaged database raised inside the block (SQLite errors, rows that do not
    decode) become :class:`DatabaseDamagedError`; the registry's own errors pass unchanged.
    """
    with database_errors(engine), Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


# ------------------------------------------------------------------------------- alembic
def migrations_dir() -> Path:
    """Folder of the installed ``migrations`` package (Alembic's script location)."""
    return Path(migrations.__file__).resolve().parent


def alembic_config(database: str | Path | None = None) -> Config:
    """An Alembic config built in code; ``database`` (path or URL) sets ``sqlalchemy.url``.

    Pass an open connection instead through ``config.attributes["connection"]``.
    """
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()).replace("%", "%%"))
    if database is not None:
        config.set_main_option("sqlalchemy.url", _url(database).replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest schema revision this library knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def known_revision(revision: str) -> bool:
    """True when ``revision`` is one of this library's schema revisions."""
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def current_revision(engine: Engine) -> str | None:
    """The schema revision stamped in the database (``None`` for an empty database)."""
    with database_errors(engine), engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
        connection.rollback()
    if revision is not None and not isinstance(revision, str):
        raise DatabaseDamagedError(database_path(engine), f"has a damaged schema revision ({revision!r})")
    return revision


def upgrade_schema(database: str | Path, target: str = "head") -> None:
    """Migrate the database to ``target`` in one transaction, then check its foreign keys.

    Foreign keys are off during the migration (batch mode may recreate a table, and SQLite
    would cascade the implied deletes); ``PRAGMA foreign_key_check`` runs before commit.
    """
    engine = make_engine(database, foreign_keys=False)
    try:
        with writer(engine).begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, target)
            problems = connection.execute(text("PRAGMA foreign_key_check")).fetchall()
            if problems:
                msg = f"foreign key violations after migrating to {target}: {problems[:5]}"
                raise RuntimeError(msg)
    finally:
        engine.dispose()


__all__ = [
    "BUSY_TIMEOUT_MS",
    "DB_FILE",
    "alembic_config",
    "current_revision",
    "database_errors",
    "database_path",
    "head_revision",
    "is_locked_error",
    "known_revision",
    "make_engine",
    "migrations_dir",
    "read_session",
    "run_write",
    "translate_error",
    "upgrade_schema",
    "writer",
]
