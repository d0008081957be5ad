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
        ("done", job_id, 1, {"status": "succeeded"}),  # not batchable
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
    assert isinstance(results[10], Conflict)

    # applied once, in order; the failed items wrote nothing, in the database or in memory
    assert [(m["epoch"], m["metrics"]) for m in store.metrics(job_id)] == [(0, {"loss": 1.0}), (1, {"loss": 0.5})]
    assert len(store.events(job_id)) == events_before + 1
    assert store.get_job(job_id)["state"] == "RUNNING"
    assert store.get_job(queued)["state"] == "RUNNING" and store.get_job(queued)["epoch"] == 1
    assert store.get_job(pending) == pending_before and _keys(store, pending) == 0
    assert store.get_job(finished) == finished_before
    assert _keys(store, job_id) == 3  # hb-0, hb-1, e1


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
