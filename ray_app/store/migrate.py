"""Schema migrations of the job database: bring any database to the newest revision (Alembic).

db.make_engine() calls upgrade() on every start, before the store reads anything:

- an empty database is upgraded to head (every table created by the revisions);
- a database made before Alembic (db.metadata.create_all(): the tables, no alembic_version) is
  adopted: upgraded to the baseline 0001, which creates only the tables it lacks (none for one made
  by the code just before Alembic, so that is a stamp; job_attempts for an older one), then to head;
- a versioned database is upgraded to head: nothing to do when it is there already.

Alembic is configured in code (config()): no alembic.ini is read, and logging is left as the
platform set it up (Alembic logs through the "alembic" logger). The migrations live in the package,
ray_app/store/migrations; README.md ("Database schema migrations") says how to add one.

Several processes may start on the same database at once (the store actor, API-side readers): the
check and the upgrade run under one lock per database, so the first upgrades and the others, once
they hold the lock, find the database at head and do nothing.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from filelock import FileLock
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"
VERSION_TABLE = "vtp_schema_version"  # not Alembic's default: MLflow uses that one (migrations/env.py)
# the tables the baseline creates: any of them without an alembic_version is a pre-Alembic database
BASELINE_TABLES = ("jobs", "job_events", "job_metrics", "job_logs", "job_attempts",
                   "job_callback_keys")
# pg_advisory_xact_lock key, one per database (advisory locks are per database): "vtp_migr"
PG_LOCK_KEY = 0x7674705F6D696772
SQLITE_LOCK_TIMEOUT_S = 600.0


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code: the package's migrations folder, and the connection
    that env.py migrates (it opens none of its own when given one)."""
    cfg = Config()
    # ConfigParser interpolation: a literal % in the path must be doubled
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision in the package."""
    revision = ScriptDirectory.from_config(config()).get_current_head()
    if revision is None:
        raise RuntimeError("ray_app/store/migrations holds no revision")
    return revision


def current(conn: Connection) -> str | None:
    """The database's revision; None when it is empty or made before Alembic.

    Read directly rather than through a MigrationContext, which logs its two INFO lines ("Context
    impl", "transactional DDL") each time: a start that finds the database at head logs nothing."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    revisions = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(revisions) > 1:
        raise RuntimeError(f"job database has several schema heads {revisions}: merge them")
    return revisions[0] if revisions else None


def upgrade(engine_or_url: Engine | str) -> str:
    """Bring the database to head (see the module's docstring); returns the revision it is at."""
    engine = create_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    try:
        with _migration_lock(engine) as conn:
            before = current(conn)
            script = ScriptDirectory.from_config(config())
            if before is not None and before == script.get_current_head():
                return before
            if before is not None and before not in _known(script):
                raise RuntimeError(
                    f"the job database's schema is at revision {before!r}, which this version of "
                    f"the platform does not know (newest {script.get_current_head()!r}): it was "
                    "upgraded by a newer version; run that one")
            if before is None and _has_baseline_tables(conn):
                log.info("job database made before schema migrations: adopting it as revision %s",
                         BASELINE)
                command.upgrade(config(conn), BASELINE)
            command.upgrade(config(conn), "head")
            after = current(conn)
        if after is None:  # upgraded to head just above
            raise RuntimeError("the job database has no schema revision after upgrading it")
        if after != before:
            log.info("job database schema upgraded from %s to %s", before or "nothing", after)
        return after
    finally:
        if engine is not engine_or_url:
            engine.dispose()


def _known(script: ScriptDirectory) -> set[str]:
    return {rev.revision for rev in script.walk_revisions()}


def _has_baseline_tables(conn: Connection) -> bool:
    existing = set(inspect(conn).get_table_names())
    return any(name in existing for name in BASELINE_TABLES)


@contextmanager
def _migration_lock(engine: Engine):
    """One transaction on one connection, holding the database's migration lock.

    PostgreSQL: pg_advisory_xact_lock in the very transaction Alembic migrates in (PostgreSQL's
    DDL is transactional), released by its commit or rollback; a second process waits for it,
    then reads the committed alembic_version (READ COMMITTED: each statement sees the newest
    commits) and has nothing to do.

    SQLite: a file lock next to the database file (<db>.migrate.lock). SQLite's own locking is
    not enough: the sqlite3 driver begins a transaction only before INSERT/UPDATE/DELETE, not
    before CREATE TABLE, and Alembic treats SQLite's DDL as non-transactional, so two processes
    could both find no alembic_version and both create the tables (the second failing with
    "table already exists"). The file lock serialises the check and the upgrade across processes
    (and threads: each FileLock holds its own descriptor) on the same machine, which is all SQLite
    supports anyway. An in-memory database is private to its process: no lock.
    """
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
            yield conn
        return
    lock_path = _sqlite_lock_path(engine) if engine.dialect.name == "sqlite" else None
    if lock_path is None:
        with engine.begin() as conn:
            yield conn
        return
    with FileLock(lock_path, timeout=SQLITE_LOCK_TIMEOUT_S), engine.begin() as conn:
        yield conn


def _sqlite_lock_path(engine: Engine) -> str | None:
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None  # in memory (or a URI filename: mode=memory and the like)
    return f"{database}.migrate.lock"
