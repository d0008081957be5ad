"""Alembic environment of the job database.

At run time ray_app/store/migrate.py builds the Config in code and hands over an open connection
(config.attributes["connection"]), already inside the transaction that holds the migration lock:
nothing here opens an engine, reads an ini file or configures logging (no fileConfig: Alembic logs
through the "alembic" logger into whatever the platform set up).

From the command line (developers: `alembic revision --autogenerate`, see README) the database is
`-x url=...`, else VTP_DATABASE_URL.
"""

from __future__ import annotations

import logging
import os

from alembic import context
from sqlalchemy import create_engine, pool

from ray_app.store import db
from ray_app.store.migrate import VERSION_TABLE

config = context.config
target_metadata = db.metadata


def render_item(type_: str, obj, autogen_context):
    """Render the UTCDateTime TypeDecorator as what it stores, DateTime(timezone=True): a revision
    must not import the application's types (they change; a revision must not)."""
    if type_ == "type" and isinstance(obj, db.UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False  # the default rendering


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: a revision's op.batch_alter_table() copies the table
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=render_item,
        # not Alembic's default `alembic_version`: MLflow's own migrations use that name, and a
        # team may well point both at one PostgreSQL database
        version_table=VERSION_TABLE,
    )


def _command_line_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("VTP_DATABASE_URL")
    if not url:
        raise SystemExit("alembic: give the database, `-x url=sqlite:////tmp/vtp-dev.db` "
                         "(or set VTP_DATABASE_URL)")
    return url


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # ray_app/store/migrate.py: its connection, its transaction
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    # the alembic command line (a developer): a process of its own, so some logging is welcome
    logging.basicConfig(level=logging.INFO, format="%(levelname)-5.5s [%(name)s] %(message)s")
    engine = create_engine(_command_line_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("alembic: offline (--sql) mode is not supported for the job database")
run_migrations_online()
