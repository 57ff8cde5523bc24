"""Alembic environment of the registry database.

Run programmatically (no ``alembic.ini``): :func:`registry.db.alembic_config` builds the
:class:`alembic.config.Config` in code. When the caller passes an open connection in
``config.attributes["connection"]`` (the registry does, inside its own transaction, so a migration
is all-or-nothing), that connection is used; otherwise an engine is made from the
``sqlalchemy.url`` option with the registry's own connection settings (the ``alembic`` command line
with ``-x``-less config, or ``alembic.command`` calls from tests).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from registry.db import make_engine
from registry.models import Base

config = context.config
target_metadata = Base.metadata


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things: recreate tables in batch mode
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade --sql``)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        render_as_batch=True,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through the caller's connection, or through a fresh engine on ``sqlalchemy.url``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        msg = "no database: set config.attributes['connection'] or the sqlalchemy.url option"
        raise RuntimeError(msg)
    engine = make_engine(url, foreign_keys=False)
    try:
        # One explicit SQLite transaction around the whole migration (DDL included).
        with engine.begin() as conn:
            _configure_and_run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
