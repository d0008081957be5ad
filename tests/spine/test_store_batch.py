"""JobStoreCore.apply_callbacks on each database: one commit, per-item results and isolation."""

from __future__ import annotations

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select

from ray_app.jobs.errors import Conflict, JobNotFound, StaleAttempt
from ray_app.store import db
from ray_app.store.core import JobStoreCore
from tests.spine.test_store_core import SPEC, running_job


@pytest.fixture
def store(database_url):
    return JobStoreCore(database_url)


def _count_commits(store) -> list[int]:
    commits = [0]
    sa_event.listen(store.engine, "commit", lambda _conn: commits.__setitem__(0, commits[0] + 1))
    return commits


def _keys(store, job_id) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(db.callback_keys)
                            .where(db.callback_keys.c.job_id == job_id)).scalar_one()


def test_mixed_batch_one_commit_each_item_its_own_result(store):
    job_id = running_job(store)
    finished = running_job(store)
    store.done(finished, 1, {"status": "succeeded"})
    queued = store.create_job(dict(SPEC))["id"]
    store.transition(queued, "QUEUED", "test", attempt=1)
    pending = store.create_job(dict(SPEC))["id"]
    store.heartbeat(job_id, 1, {"event_id": "hb-0", "epoch": 0, "metrics": {"loss": 1.0}})
    events_before = len(store.events(job_id))
    pending_before = store.get_job(pending)
    finished_before = store.get_job(finished)
    commits = _count_commits(store)

    results = store.apply_callbacks([
        ("heartbeat", job_id, 1, {"event_id": "hb-1", "epoch": 1, "metrics": {"loss": 0.5}}),
        ("heartbeat", job_id, 1, {"event_id": "hb-0", "epoch": 0, "metrics": {"loss": 9.9}}),  # retried
        ("heartbeat", job_id, 2, {"event_id": "hb-x", "epoch": 9}),  # stale attempt
        ("event", finished, 1, {"event_id": "late", "event_type": "note"}),  # terminal job
        ("heartbeat", "missing", 1, {"epoch": 1}),
        ("heartbeat", pending, 1, {"event_id": "hb-p", "epoch": 1}),  # fails after its key insert
        ("event", queued, 1, {"event_id": "s", "event_type": "started"}),
        ("heartbeat", queued, 1, {"event_id": "q1", "epoch": 1, "metrics": {"acc": 0.1}}),
        ("event", job_id, 1, {"event_id": "e1", "event_type": "validation_complete"}),
        ("heartbeat", job_id, 1, {"event_id": "hb-1", "epoch": 1, "metrics": {"loss": 7.7}}),  # dup in batch
        ("done", job_id, 1, {"status": "succeeded"}),  # the attempt's end, after its events
    ])

    assert commits == [1]
    assert results[0] == {"should_continue": True, "duplicate": False}
    assert results[1] == {"should_continue": True, "duplicate": True}
    assert isinstance(results[2], StaleAttempt)
    assert isinstance(results[3], Conflict) and "no longer accepted" in results[3].detail
    assert isinstance(results[4], JobNotFound)
    assert isinstance(results[5], Conflict) and "not been queued" in results[5].detail
    assert results[6] == {"duplicate": False}
    assert results[7] == {"should_continue": True, "duplicate": False}
    assert results[8] == {"duplicate": False}
    assert results[9]["duplicate"] is True
    assert results[10] == {"state": "SUCCEEDED", "duplicate": False}

    # applied once, in order; the failed items wrote nothing, in the database or in memory
    assert [(m["epoch"], m["metrics"]) for m in store.metrics(job_id)] == [(0, {"loss": 1.0}), (1, {"loss": 0.5})]
    assert [e["event_type"] for e in store.events(job_id)[events_before:]] == [
        "validation_complete", "done", "state_changed"]
    assert store.get_job(job_id)["state"] == "SUCCEEDED"
    assert store.get_job(queued)["state"] == "RUNNING" and store.get_job(queued)["epoch"] == 1
    assert store.get_job(pending) == pending_before and _keys(store, pending) == 0
    assert store.get_job(finished) == finished_before
    # the batch's done ended the attempt: its keys (hb-0, hb-1, e1) went with it; the live
    # queued job keeps its own (s, q1)
    assert _keys(store, job_id) == 0 and _keys(store, queued) == 2


def test_batch_results_survive_a_reload(store, database_url):
    job_id = running_job(store)
    store.apply_callbacks([("heartbeat", job_id, 1, {"event_id": f"h{i}", "epoch": i, "metrics": {"i": i}})
                           for i in range(1, 6)])
    fields = ("state", "epoch", "latest_metrics", "progress", "attempt")
    memory = {k: store.get_job(job_id)[k] for k in fields}
    second = JobStoreCore(database_url)
    assert {k: second.get_job(job_id)[k] for k in fields} == memory == {
        "state": "RUNNING", "epoch": 5, "latest_metrics": {"i": 5}, "progress": 0.0, "attempt": 1}
    assert [m["epoch"] for m in second.metrics(job_id)] == [1, 2, 3, 4, 5]
    # the idempotency keys were committed with the batch
    assert second.apply_callbacks([("heartbeat", job_id, 1, {"event_id": "h3", "epoch": 3})])[0]["duplicate"]


def test_failed_commit_undoes_the_whole_batch_in_memory(store, monkeypatch):
    job_id = running_job(store)
    queued = store.create_job(dict(SPEC))["id"]
    store.transition(queued, "QUEUED", "test", attempt=1)
    before = (store.get_job(job_id), store.get_job(queued), len(store.events(queued)))

    def boom(_conn):
        raise RuntimeError("disk full")

    sa_event.listen(store.engine, "commit", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        store.apply_callbacks([
            ("heartbeat", job_id, 1, {"event_id": "a", "epoch": 1, "metrics": {"loss": 0.5}}),
            ("event", queued, 1, {"event_id": "b", "event_type": "started"}),
        ])
    sa_event.remove(store.engine, "commit", boom)
    assert (store.get_job(job_id), store.get_job(queued), len(store.events(queued))) == before
    # nothing was committed: the same callbacks apply now, once
    results = store.apply_callbacks([
        ("heartbeat", job_id, 1, {"event_id": "a", "epoch": 1, "metrics": {"loss": 0.5}}),
        ("event", queued, 1, {"event_id": "b", "event_type": "started"}),
    ])
    assert [r["duplicate"] for r in results] == [False, False]
    assert store.get_job(queued)["state"] == "RUNNING"
    assert [e["seq"] for e in store.events(queued)] == list(range(1, len(store.events(queued)) + 1))


# ------------------------------------------------------------------ bulk heartbeats (store/bulk.py)

_JOB_FIELDS = ("state", "attempt", "epoch", "total_epochs", "step", "total_steps", "progress",
               "latest_metrics", "cancel_requested")


def _queued_job(store) -> str:
    job_id = store.create_job(dict(SPEC))["id"]
    store.transition(job_id, "QUEUED", "test", attempt=1)
    return job_id


def _state(store, job_ids) -> list:
    """What a client can see of the jobs: rows, metrics, events and keys (timestamps aside)."""
    out = []
    for job_id in job_ids:
        job = store.get_job(job_id)
        out.append(({k: job[k] for k in _JOB_FIELDS}, job["last_heartbeat_at"] is not None,
                    [(m["attempt"], m["epoch"], m["step"], m["metrics"]) for m in store.metrics(job_id)],
                    [(e["seq"], e["event_type"], e["message"]) for e in store.events(job_id)],
                    _keys(store, job_id)))
    return out


def _plan(running, queued, pending):
    return [
        ("heartbeat", running, 1, {"event_id": "a", "epoch": 1, "total_epochs": 4, "metrics": {"loss": 1.0}}),
        ("heartbeat", running, 1, {"event_id": "b", "epoch": 1, "step": 5, "metrics": {"acc": 0.2}}),
        ("heartbeat", running, 1, {"event_id": "a", "epoch": 1, "metrics": {"loss": 7.0}}),  # dup in batch
        ("heartbeat", running, 1, {"seq": 3, "epoch": 2, "metrics": {"loss": 0.9, "acc": None}}),
        ("heartbeat", running, 1, {"seq": 3, "epoch": 2, "metrics": {"loss": 5.0}}),  # dup by seq
        ("heartbeat", running, 1, {"epoch": 1, "metrics": {"late": 1}}),  # no key; an older epoch
        ("heartbeat", queued, 1, {"event_id": "q0", "epoch": 0, "metrics": {"x": 1}}),  # QUEUED -> RUNNING
        ("heartbeat", queued, 1, {"event_id": "q1", "epoch": 0, "metrics": {"y": 2}}),  # then fast
        ("heartbeat", queued, 1, {"event_id": "q0", "epoch": 0}),  # dup of the slow one
        ("event", running, 1, {"event_id": "e", "event_type": "checkpoint_saved", "data": {"checkpoint_path": "s3://c"}}),
        ("heartbeat", running, 1, {"event_id": "c", "epoch": 3, "progress": 50.0}),
        ("heartbeat", pending, 1, {"event_id": "p", "epoch": 1}),  # PENDING: refused, key not kept
        ("heartbeat", running, 2, {"event_id": "s", "epoch": 9}),  # stale attempt
        ("heartbeat", running, 1, {"epoch": -1}),  # invalid body
        ("heartbeat", running, 1, {"event_id": "d", "epoch": 3, "metrics": {"map": 0.1}}),
    ]


def _outcome(result):
    return type(result).__name__ if isinstance(result, BaseException) else result


def test_bulk_batch_matches_one_call_at_a_time(database_url, tmp_path):
    """The batch path gives the same replies and the same database as the methods called one by
    one: same merges per epoch, same duplicates, same refusals."""
    outcomes, states = [], []
    for mode in ("one by one", "batch"):
        url = database_url if mode == "batch" else f"sqlite:///{tmp_path / 'ref.db'}"
        store = JobStoreCore(url)
        running, queued, pending = running_job(store), _queued_job(store), store.create_job(dict(SPEC))["id"]
        store.heartbeat(running, 1, {"event_id": "old", "epoch": 1, "metrics": {"seed": 1}})
        plan = _plan(running, queued, pending)
        if mode == "batch":
            results = store.apply_callbacks(plan)
        else:
            results = []
            for kind, job_id, attempt, body in plan:
                try:
                    results.append(getattr(store, kind)(job_id, attempt, body))
                except Exception as exc:  # noqa: BLE001 - compared by type below
                    results.append(exc)
        outcomes.append([_outcome(r) for r in results])
        states.append(_state(store, [running, queued, pending]))
        # and after a reload from the database
        states.append(_state(JobStoreCore(url), [running, queued, pending]))
    assert outcomes[0][:13] == outcomes[1][:13]
    assert outcomes[0][13] == "ValidationError" and outcomes[1][13] == "RuntimeError"  # 422 vs 500 path
    assert outcomes[1][12] == "StaleAttempt" and outcomes[1][11] == "Conflict"
    assert states[0] == states[1] == states[2] == states[3]
    running_metrics = states[1][0][2]
    assert running_metrics == [(1, 1, None, {"seed": 1, "loss": 1.0, "acc": 0.2, "late": 1}),
                               (1, 2, None, {"loss": 0.9, "acc": None}), (1, 3, None, {"map": 0.1})]


def test_metrics_merge_across_batches_reloads_and_attempts(store, database_url):
    """Rows written by earlier batches (kept in memory), by another store instance (read from the
    database) and by the per-item path are merged into, never overwritten."""
    job_id = running_job(store)
    hb = lambda i, epoch, metrics: ("heartbeat", job_id, 1, {"event_id": f"h{i}", "epoch": epoch, "metrics": metrics})  # noqa: E731
    store.apply_callbacks([hb(1, 1, {"a": 1}), hb(2, 2, {"b": 2})])
    store.apply_callbacks([hb(3, 2, {"c": 3}), hb(4, 1, {"d": 4})])  # the last epoch, then an older one
    second = JobStoreCore(database_url)  # no hints: reads what it needs
    second.apply_callbacks([hb(5, 2, {"e": 5}), hb(6, 5, {"f": 6})])
    second.heartbeat(job_id, 1, {"event_id": "h7", "epoch": 5, "metrics": {"g": 7}})  # per-item path
    second.apply_callbacks([hb(8, 5, {"h": 8})])
    assert [(m["epoch"], m["metrics"]) for m in second.metrics(job_id)] == [
        (1, {"a": 1, "d": 4}), (2, {"b": 2, "c": 3, "e": 5}), (5, {"f": 6, "g": 7, "h": 8})]

    # a retried attempt starts its own rows, even for epochs the first attempt wrote
    second.requeue(job_id, 1, "node lost", "INFRA_ERROR")
    second.event(job_id, 2, {"event_type": "started"})
    second.apply_callbacks([("heartbeat", job_id, 2, {"event_id": "r1", "epoch": 2, "metrics": {"z": 1}})])
    assert [(m["attempt"], m["epoch"], m["metrics"]) for m in second.metrics(job_id)][-1] == (2, 2, {"z": 1})


def test_heartbeat_batch_statement_count(store):
    """A batch of heartbeats for many jobs costs a few statements, not several per heartbeat."""
    jobs = [running_job(store) for _ in range(5)]
    statements = []
    sa_event.listen(store.engine, "before_cursor_execute",
                    lambda *args: statements.append(args[2].split()[0].upper()))
    items = [("heartbeat", job_id, 1, {"event_id": f"{job_id}-{i}", "epoch": i, "metrics": {"loss": 1 / (i + 1)}})
             for i in range(20) for job_id in jobs]
    results = store.apply_callbacks(items)
    assert all(r == {"should_continue": True, "duplicate": False} for r in results)
    # BEGIN (sqlite), one key INSERT, one max-epoch SELECT per job (first time only), one metrics
    # upsert, one UPDATE (executemany)
    assert statements.count("INSERT") == 2 and statements.count("UPDATE") == 1
    assert statements.count("SELECT") == 5 and "SAVEPOINT" not in statements
    for job_id in jobs:
        assert store.get_job(job_id)["epoch"] == 19
        assert len(store.metrics(job_id)) == 20 and _keys(store, job_id) == 20
