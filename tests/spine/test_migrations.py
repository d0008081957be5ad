"""Schema migrations of the job database (ray_app/store/migrate.py, ray_app/store/migrations).

Every test gets empty databases of its own, on SQLite and on PostgreSQL (fresh_database_url,
new_database in tests/fixtures/database.py).
No Ray: a few seconds in all.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, insert, inspect, select, text

from ray_app.store import db, migrate

APP_TABLES = {t.name for t in db.metadata.sorted_tables}


@pytest.fixture
def engines():
    """Engines made by a test, disposed after it (PostgreSQL drops the database then)."""
    made = []
    yield made
    for engine in made:
        engine.dispose()


def make_engine(engines, url):
    engine = db.make_engine(url)
    engines.append(engine)
    return engine


def plain_engine(engines, url):
    engine = create_engine(url)
    engines.append(engine)
    return engine


def version(engine) -> str | None:
    with engine.connect() as conn:
        return migrate.current(conn)


def schema_diff(engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"version_table": migrate.VERSION_TABLE}), db.metadata)


def schema(engine) -> dict:
    """What the database says about the application's tables: columns (type, nullability, default,
    autoincrement), primary key, unique constraints, indexes."""
    insp = inspect(engine)
    return {
        name: {
            "columns": [(c["name"], str(c["type"]), c["nullable"], str(c.get("default")),
                         c.get("autoincrement")) for c in insp.get_columns(name)],
            "pk": insp.get_pk_constraint(name),
            "unique": insp.get_unique_constraints(name),
            "indexes": insp.get_indexes(name),
        }
        for name in sorted(insp.get_table_names()) if name != migrate.VERSION_TABLE
    }


def test_fresh_database_is_upgraded_to_head(fresh_database_url, engines):
    engine = make_engine(engines, fresh_database_url)
    assert version(engine) == migrate.head()
    # the revisions make exactly db.metadata: no table, column, type, nullability, index or
    # constraint differs (UTCDateTime is compared as its impl, DateTime(timezone=True); nothing had
    # to be ignored on either backend)
    assert schema_diff(engine) == []
    assert set(inspect(engine).get_table_names()) == APP_TABLES | {migrate.VERSION_TABLE}


def test_head_is_what_create_all_makes(new_database, engines):
    """The revisions, applied in order, make the database db.metadata.create_all() makes: beyond
    compare_metadata, server defaults and autoincrement agree too. At revision 0001 this is the
    baseline's promise: the schema the code made before Alembic, exactly."""
    migrated = make_engine(engines, new_database())
    created = plain_engine(engines, new_database())
    db.metadata.create_all(created)
    assert schema(migrated) == schema(created)


def pre_alembic_database(engines, url, *, without=()):
    """A database as the code before Alembic left it: the baseline's tables (revision 0001 is
    create_all() at that time, test above) and no alembic_version. Not db.metadata.create_all():
    db.metadata is the newest schema once a revision follows the baseline."""
    engine = plain_engine(engines, url)
    with engine.begin() as conn:
        command.upgrade(migrate.config(conn), migrate.BASELINE)
        for name in (migrate.VERSION_TABLE, *without):
            conn.execute(text(f"DROP TABLE {name}"))
    assert version(engine) is None
    return engine


T0 = datetime(2026, 11, 30, 21, 15, 3, 250000, tzinfo=UTC)

JOB = {
    "id": "job-0123456789abcdef", "trace_id": "trace-42", "state": "running", "attempt": 2,
    "max_attempts": 3, "framework": "ultralytics", "task_type": "detection",
    "model_name": "yolo11n.pt", "dataset_id": "s3://datasets/coco8.zip", "project_id": "proj-é",
    "epochs": 10, "batch_size": 16, "learning_rate": 0.001, "image_size": 640, "num_gpus": 0.5,
    "num_cpus": 2.0, "memory_mb": 4096, "config": {"epochs": 10, "nested": {"a": [1, 2.5, None]}},
    "advanced_config": {"mosaic": 0.0}, "progress": 0.35, "epoch": 3, "total_epochs": 10,
    "step": 120, "total_steps": 400, "latest_metrics": {"loss": 0.731, "map50": 0.42},
    "final_metrics": {}, "artifacts": {"best": "s3://artifacts/job/best.pt"}, "error": None,
    "error_type": None, "traceback": None, "mlflow_run_id": "run-9", "resume_from": None,
    "last_checkpoint": "s3://ckpt/job/epoch3.pt", "cancel_requested": True,
    "cancel_requested_at": T0 + timedelta(minutes=9), "done": None,
    "training_time_seconds": 533.25, "created_at": T0, "updated_at": T0 + timedelta(minutes=9),
    "queued_at": T0 + timedelta(seconds=1), "started_at": T0 + timedelta(seconds=5),
    "finished_at": None, "last_heartbeat_at": T0 + timedelta(minutes=8),
    "last_progress_at": T0 + timedelta(minutes=8),
}
EVENTS = [
    {"job_id": JOB["id"], "seq": seq, "attempt": 1 + seq // 2, "level": "info",
     "event_type": "state", "message": f"event {seq} ✓", "data": {"seq": seq, "ok": True},
     "source": "store", "created_at": T0 + timedelta(seconds=seq)}
    for seq in range(1, 5)
]
LOGS = [
    {"job_id": JOB["id"], "seq": seq, "attempt": 2, "stream": "stderr" if seq % 2 else "stdout",
     "line": f"epoch 3/10 line {seq}", "created_at": T0 + timedelta(seconds=10 + seq)}
    for seq in range(1, 4)
]
METRICS = [{"job_id": JOB["id"], "attempt": 2, "epoch": 3, "step": 120,
            "metrics": {"loss": 0.731}, "updated_at": T0 + timedelta(minutes=8)}]
ATTEMPTS = [{"job_id": JOB["id"], "attempt": 1, "outcome": "retried",
             "queued_at": T0 + timedelta(seconds=1), "started_at": T0 + timedelta(seconds=5),
             "ended_at": T0 + timedelta(minutes=2), "node_id": "node-a", "exit_code": None,
             "signal": "SIGKILL", "error_type": "infra", "reason": "node lost",
             "resume_from": None}]
KEYS = [{"job_id": JOB["id"], "key": "heartbeat:2:120", "created_at": T0 + timedelta(minutes=8)}]
ROWS = [(db.jobs, [JOB]), (db.events, EVENTS), (db.logs, LOGS), (db.metrics, METRICS),
        (db.attempts, ATTEMPTS), (db.callback_keys, KEYS)]


def insert_rows(engine, rows) -> None:
    """Through the tables as the database has them (reflected), not db's newest ones."""
    tables = MetaData()
    tables.reflect(engine)
    with engine.begin() as conn:
        for table, values in rows:
            conn.execute(insert(tables.tables[table.name]), values)


def read_all(engine) -> dict:
    with engine.connect() as conn:
        return {table.name: db.rows(conn.execute(select(table).order_by(*table.primary_key)))
                for table, _ in ROWS}


def assert_rows_kept(engine, rows) -> None:
    """Every row inserted reads back with the values it was given (columns that later revisions
    added are not compared)."""
    stored = read_all(engine)
    for table, values in rows:
        got = stored[table.name]
        assert [{k: row[k] for k in expected} for row, expected in zip(got, values)] == values
        assert len(got) == len(values)


def test_pre_alembic_database_is_adopted_with_its_rows(new_database, engines):
    """A database made by the code before migrations (create_all, no alembic_version) is stamped
    at the baseline and upgraded to head; its rows read back as they were."""
    url = new_database()
    legacy = pre_alembic_database(engines, url)
    insert_rows(legacy, ROWS)
    legacy.dispose()

    engine = make_engine(engines, url)
    assert version(engine) == migrate.head()
    assert schema_diff(engine) == []
    assert_rows_kept(engine, ROWS)  # timestamps UTC-aware, JSON, floats, text, booleans
    assert read_all(engine)["jobs"][0]["created_at"] == T0


def test_database_from_before_job_attempts_is_completed(new_database, engines):
    """Older still: a create_all() database from before job_attempts existed gets that table."""
    url = new_database()
    legacy = pre_alembic_database(engines, url, without=("job_attempts",))
    insert_rows(legacy, ROWS[:1])
    legacy.dispose()

    engine = make_engine(engines, url)
    assert version(engine) == migrate.head()
    assert schema_diff(engine) == []
    assert_rows_kept(engine, ROWS[:1])


def test_downgrade_to_base_then_upgrade_again(fresh_database_url, engines):
    engine = make_engine(engines, fresh_database_url)
    with engine.begin() as conn:
        command.downgrade(migrate.config(conn), "base")
    assert set(inspect(engine).get_table_names()) <= {migrate.VERSION_TABLE}
    assert version(engine) is None

    assert migrate.upgrade(engine) == migrate.head()
    assert set(inspect(engine).get_table_names()) == APP_TABLES | {migrate.VERSION_TABLE}
    assert schema_diff(engine) == []


def test_make_engine_again_is_a_no_op(fresh_database_url, engines, caplog):
    engine = make_engine(engines, fresh_database_url)
    insert_rows(engine, ROWS[:1])
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="alembic"):
        again = make_engine(engines, fresh_database_url)
    assert version(again) == migrate.head()
    # at head: no migration context was even configured, so Alembic logged nothing
    assert [r for r in caplog.records if r.name.startswith("alembic")] == []
    assert_rows_kept(again, ROWS[:1])


def test_concurrent_make_engine_on_an_empty_database(fresh_database_url, engines):
    """Several processes start on one empty database at once (threads here, each with its own
    engine and connection): one creates the schema, the others wait for it and find it there."""
    barrier = threading.Barrier(4)
    results: list = []

    def start():
        barrier.wait()
        try:
            results.append(db.make_engine(fresh_database_url))
        except Exception as exc:  # reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    engines.extend(r for r in results if not isinstance(r, Exception))
    assert [r for r in results if isinstance(r, Exception)] == [] and len(results) == 4
    assert version(results[0]) == migrate.head()
    assert schema_diff(results[0]) == []


def test_database_from_a_newer_version_is_refused(fresh_database_url, engines):
    engine = make_engine(engines, fresh_database_url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(RuntimeError, match="revision '9999'"):
        db.make_engine(fresh_database_url)
