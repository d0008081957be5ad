"""JobStoreCore on each database: callbacks, idempotency, compare-and-set, reload."""

from __future__ import annotations

import pytest

from ray_app.jobs.errors import Conflict, JobNotFound, StaleAttempt
from ray_app.store.core import JobStoreCore

SPEC = {"framework": "fake", "task_type": "image_classification", "model_name": "fake-a",
        "dataset_id": "ds", "project_id": "p", "epochs": 3, "batch_size": 4, "learning_rate": 0.1,
        "image_size": 32, "num_gpus": 0, "num_cpus": 1, "memory_mb": None, "config": {},
        "advanced_config": {}, "max_attempts": 2, "resume_from": None}


@pytest.fixture
def store(database_url):
    return JobStoreCore(database_url)


def running_job(store):
    job = store.create_job(dict(SPEC))
    store.transition(job["id"], "QUEUED", "test", attempt=1)
    store.event(job["id"], 1, {"event_type": "started"})
    assert store.get_job(job["id"])["state"] == "RUNNING"
    return job["id"]


def test_heartbeat_with_same_key_applied_once(store):
    job_id = running_job(store)
    body = {"event_id": "hb-1", "epoch": 1, "total_epochs": 3, "metrics": {"loss": 0.5}}
    assert store.heartbeat(job_id, 1, body) == {"should_continue": True, "duplicate": False}
    assert store.heartbeat(job_id, 1, {**body, "metrics": {"loss": 9.9}})["duplicate"] is True
    assert [m["metrics"] for m in store.metrics(job_id)] == [{"loss": 0.5}]
    # attempt+seq is the key when no event_id is sent
    store.heartbeat(job_id, 1, {"seq": 7, "epoch": 2, "metrics": {"loss": 0.4}})
    assert store.heartbeat(job_id, 1, {"seq": 7, "epoch": 2, "metrics": {"loss": 0.1}})["duplicate"]
    assert store.metrics(job_id)[-1]["metrics"] == {"loss": 0.4}


def test_metrics_upserted_per_attempt_and_epoch(store):
    job_id = running_job(store)
    store.heartbeat(job_id, 1, {"epoch": 1, "metrics": {"loss": 0.5}})
    store.heartbeat(job_id, 1, {"epoch": 1, "metrics": {"mAP50": 0.2}})
    store.heartbeat(job_id, 1, {"epoch": 2, "metrics": {"loss": 0.3}})
    rows = store.metrics(job_id)
    assert [(r["epoch"], r["metrics"]) for r in rows] == [(1, {"loss": 0.5, "mAP50": 0.2}), (2, {"loss": 0.3})]


def test_event_with_same_key_applied_once(store):
    job_id = running_job(store)
    before = len(store.events(job_id))
    store.event(job_id, 1, {"event_id": "e1", "event_type": "dataset_loaded"})
    assert store.event(job_id, 1, {"event_id": "e1", "event_type": "dataset_loaded"}) == {"duplicate": True}
    assert len(store.events(job_id)) == before + 1


def test_done_once_then_duplicate_or_conflict(store):
    job_id = running_job(store)
    done = {"event_id": "d1", "status": "succeeded", "final_metrics": {"acc": 0.9}}
    assert store.done(job_id, 1, done) == {"state": "SUCCEEDED", "duplicate": False}
    assert store.done(job_id, 1, done)["duplicate"] is True
    with pytest.raises(Conflict, match="already reported done"):
        store.done(job_id, 1, {"event_id": "d2", "status": "failed", "error": "x"})
    with pytest.raises(Conflict, match="no longer accepted"):
        store.heartbeat(job_id, 1, {"epoch": 3})
    assert store.get_job(job_id)["final_metrics"] == {"acc": 0.9}


def test_stale_attempt_and_unknown_job(store):
    job_id = running_job(store)
    with pytest.raises(StaleAttempt, match="attempt 2; the job is on attempt 1"):
        store.heartbeat(job_id, 2, {"epoch": 1})
    with pytest.raises(JobNotFound):
        store.heartbeat("missing", 1, {})


def test_terminal_state_refuses_transitions(store):
    job_id = running_job(store)
    store.transition(job_id, "FAILED", "boom", attempt=1, error_type="FRAMEWORK_ERROR")
    for target in ("RUNNING", "SUCCEEDED", "QUEUED", "CANCELLED"):
        with pytest.raises(Conflict):
            store.transition(job_id, target, "late")
    assert store.get_job(job_id)["state"] == "FAILED"


def test_retryable_failure_waits_for_controller_then_requeue_resumes(store):
    job_id = running_job(store)
    store.event(job_id, 1, {"event_type": "checkpoint_saved", "data": {"checkpoint_path": "s3://b/last.pt", "name": "last"}})
    store.event(job_id, 1, {"event_type": "checkpoint_saved", "data": {"checkpoint_path": "s3://b/best.pt", "name": "best"}})
    store.done(job_id, 1, {"status": "failed", "error": "lost GPU", "error_type": "RESOURCE_ERROR"})
    assert store.get_job(job_id)["state"] == "RUNNING"  # the controller decides once the process exits
    job = store.requeue(job_id, 1, "lost GPU", "RESOURCE_ERROR")
    assert (job["state"], job["attempt"], job["resume_from"], job["done"]) == ("QUEUED", 2, "s3://b/last.pt", None)
    with pytest.raises(StaleAttempt):
        store.event(job_id, 1, {"event_type": "late"})
    store.event(job_id, 2, {"event_type": "started"})
    # max_attempts=2: the recovery policy fails it (tests/jobs/test_recovery.py); a requeue
    # past the last attempt is refused, and changes nothing
    with pytest.raises(Conflict, match="no attempts left"):
        store.requeue(job_id, 2, "lost GPU again", "RESOURCE_ERROR")
    assert store.get_job(job_id)["state"] == "RUNNING"


def test_non_retryable_failure_is_final(store):
    job_id = running_job(store)
    store.done(job_id, 1, {"status": "failed", "error": "bad arg", "error_type": "CONFIG_ERROR"})
    job = store.get_job(job_id)
    assert job["state"] == "FAILED" and job["error_type"] == "CONFIG_ERROR"


def test_everything_reloads_from_the_database(database_url):
    first = JobStoreCore(database_url)
    job_id = running_job(first)
    first.heartbeat(job_id, 1, {"epoch": 1, "metrics": {"loss": 0.5}})
    first.append_logs(job_id, 1, [("stdout", "line one"), ("stdout", "line two")])
    first.done(job_id, 1, {"status": "succeeded", "event_id": "d"})
    first.engine.dispose()
    second = JobStoreCore(database_url)
    job = second.get_job(job_id)
    assert job["state"] == "SUCCEEDED" and job["latest_metrics"] == {"loss": 0.5}
    assert [line["line"] for line in second.logs(job_id)] == ["line one", "line two"]
    assert second.done(job_id, 1, {"status": "succeeded", "event_id": "d"})["duplicate"] is True
    # histories continue in order after a reload
    n = len(second.events(job_id))
    second.add_platform_event(job_id, "note", "after reload")
    assert [e["seq"] for e in second.events(job_id)] == list(range(1, n + 2))
    second.append_logs(job_id, 1, [("stdout", "line three")])
    assert [line["seq"] for line in second.logs(job_id)] == [1, 2, 3]


def test_failed_write_leaves_memory_as_the_database(store):
    job_id = running_job(store)
    before = store.get_job(job_id)
    with pytest.raises(Conflict):
        store.transition(job_id, "PENDING", "not allowed")
    assert store.get_job(job_id) == before


def test_attempt_history_and_the_outcome_error(store, database_url):
    """A job that succeeds after a retry shows no error; each ended attempt is a row (issue 13, 11)."""
    job_id = running_job(store)
    store.event(job_id, 1, {"event_type": "checkpoint_saved", "data": {"checkpoint_path": "s3://b/c/epoch-1.pt"}})
    ended = {"node_id": "n" * 56, "exit_code": -9, "signal": "SIGKILL"}
    job = store.requeue(job_id, 1, "trainer process killed by SIGKILL", "INFRASTRUCTURE_ERROR", ended=ended)
    assert job["error_type"] == "INFRASTRUCTURE_ERROR" and [a["outcome"] for a in job["attempts"]] == ["retried"]
    store.event(job_id, 2, {"event_type": "started"})
    store.done(job_id, 2, {"status": "succeeded"})
    job = store.get_job(job_id)
    assert (job["state"], job["error"], job["error_type"]) == ("SUCCEEDED", None, None)
    first, second = job["attempts"]
    assert first == {**first, "attempt": 1, "outcome": "retried", "exit_code": -9, "signal": "SIGKILL",
                     "node_id": "n" * 56, "error_type": "INFRASTRUCTURE_ERROR", "resume_from": None}
    assert first["reason"] == "trainer process killed by SIGKILL" and first["started_at"] <= first["ended_at"]
    assert (second["attempt"], second["outcome"], second["resume_from"]) == (2, "succeeded", "s3://b/c/epoch-1.pt")
    store.attempt_exited(job_id, 2, {"node_id": "m", "exit_code": 0, "signal": None})
    store.attempt_exited(job_id, 2, {"node_id": "other", "exit_code": 3})  # known values stay
    job = store.get_job(job_id)
    assert (job["attempts"][1]["node_id"], job["attempts"][1]["exit_code"]) == ("m", 0)
    assert JobStoreCore(database_url).get_job(job_id)["attempts"] == job["attempts"]  # durable
    # a job cancelled before it was queued ran no attempt
    pending = store.create_job(dict(SPEC))
    assert store.request_cancel(pending["id"])["attempts"] == []


def test_attempt_rows_hold_the_process_and_whether_its_output_is_complete(database_url):
    store = JobStoreCore(database_url)
    job_id = running_job(store)
    assert store.attempt_process(job_id, 1) is None  # no process reported yet
    store.attempt_started(job_id, 1, "node-a", 4321, 4321)
    rank0 = {"rank": 0, "node_id": "node-a", "pid": 4321, "pgid": 4321}
    assert store.attempt_process(job_id, 1) == {"node_id": "node-a", "pid": 4321, "pgid": 4321, "ranks": [rank0]}
    job = store.get_job(job_id)
    assert job["attempts"] == [] and job["output_complete"] is False  # the running attempt is not history yet
    store.append_logs(job_id, 1, [("stdout", "epoch 1")])
    assert store.get_job(job_id)["output_complete"] is False
    store.requeue(job_id, 1, "node lost", "INFRASTRUCTURE_ERROR", ended={"exit_code": -9, "signal": "SIGKILL"})
    # the runner's last lines arrive after the requeue: recorded on attempt 1, not on attempt 2
    store.append_logs(job_id, 1, [("runner", "trainer exited with code -9")], final=True)
    job = store.get_job(job_id)
    assert job["output_complete"] is False and job["attempt"] == 2
    [first] = job["attempts"]
    assert (first["outcome"], first["node_id"], first["pid"], first["exit_code"], first["signal"]) == (
        "retried", "node-a", 4321, -9, "SIGKILL")
    assert first["output_complete"] is True
    store.event(job_id, 2, {"event_type": "started"})
    store.attempt_started(job_id, 2, "node-b", 99, 99)
    store.append_logs(job_id, 2, [], final=True)  # an attempt may end with nothing left to say
    again = JobStoreCore(database_url)  # durable, and reloaded
    assert again.get_job(job_id)["output_complete"] is True
    assert again.attempt_process(job_id, 2) == {"node_id": "node-b", "pid": 99, "pgid": 99,
                                                "ranks": [{"rank": 0, "node_id": "node-b", "pid": 99, "pgid": 99}]}
    assert [line["line"] for line in again.logs(job_id)] == ["epoch 1", "trainer exited with code -9"]


def test_every_rank_of_a_gang_is_on_its_attempt_row_and_its_lines_carry_the_rank(database_url):
    """A gang's ranks report their processes in any order: each one is on the attempt's row
    (the controller ends them all by it), rank 0's is also the row's own, and the job shows
    where each rank runs; each rank's log lines say whose they are."""
    store = JobStoreCore(database_url)
    job_id = running_job(store)
    store.attempt_started(job_id, 1, "node-b", 202, 202, rank=1)
    assert store.attempt_process(job_id, 1) == {"node_id": None, "pid": None, "pgid": None,
                                                "ranks": [{"rank": 1, "node_id": "node-b", "pid": 202, "pgid": 202}]}
    store.attempt_started(job_id, 1, "node-a", 101, 101, rank=0)
    process = store.attempt_process(job_id, 1)
    assert (process["node_id"], process["pgid"]) == ("node-a", 101)
    assert [(r["rank"], r["node_id"], r["pgid"]) for r in process["ranks"]] == [(0, "node-a", 101), (1, "node-b", 202)]
    assert store.get_job(job_id)["ranks"] == [{"rank": 0, "node_id": "node-a", "pid": 101},
                                              {"rank": 1, "node_id": "node-b", "pid": 202}]
    events = [e for e in store.events(job_id) if e["event_type"] in ("trainer_process", "rank_process")]
    assert [(e["event_type"], e["data"]["rank"]) for e in events] == [("rank_process", 1), ("trainer_process", 0)]
    store.append_logs(job_id, 1, [("stdout", "rank 1 says")], rank=1)
    store.append_logs(job_id, 1, [("stdout", "rank 0 says")])
    assert [(line["rank"], line["line"]) for line in JobStoreCore(database_url).logs(job_id)] == [
        (1, "rank 1 says"), (0, "rank 0 says")]
