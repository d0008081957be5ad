"""Upgrading to teams (issue 29, migration 0009): a database at revision 0008 with jobs, their
histories, datasets and a platform used with static tokens (VTP_API_TOKENS) migrates; everything
is readable by the bootstrap admin the static tokens act as, every job lands in the project its
project_id names (odd names included: any text was a project id before), datasets go to
`default`, and no row is lost.

The database is built at 0008 the way tests/spine/test_migrations.py builds one (Alembic to that
revision, rows through the tables as the database has them), then the real store starts on it
(JobStoreCore: db.make_engine upgrades it) and the API runs in process on it (create_app over the
store without Ray), driven over ASGI with a static token. SQLite and PostgreSQL. No Ray.
"""

from __future__ import annotations

from urllib.parse import quote

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, create_engine, func, insert, select

from ray_app.api.app import create_app
from ray_app.config import Settings
from ray_app.store import migrate
from ray_app.store.core import JobStoreCore
from ray_app.teams.policy import BOOTSTRAP_USER, DEFAULT_PROJECT
from tests.fixtures.local_store import local_client

BEFORE_TEAMS = "0008"
STATIC_TOKEN = "static-token-from-before-teams-0123456789"
OTHER_STATIC_TOKEN = "a-second-static-token-9876543210"
ODD_PROJECT = "team a/1"  # a space and a slash: accepted as a job's project_id before teams
T0 = datetime(2026, 12, 1, 9, 30, 0, tzinfo=UTC)

# (project, state) of each job made before the upgrade, oldest first
JOBS = [("alpha", "SUCCEEDED"), ("alpha", "FAILED"), ("beta", "SUCCEEDED"), ("alpha", "RUNNING"),
        (ODD_PROJECT, "SUCCEEDED"), ("beta", "CANCELLED"), (DEFAULT_PROJECT, "QUEUED"), ("beta", "SUCCEEDED")]
DATASETS = {"shapes": 2, "coco-mini": 1, "empty-upload": 0}  # name: versions
# the tables that hold what a platform had before teams, each counted before and after
KEPT_TABLES = ("jobs", "job_events", "job_logs", "job_metrics", "job_attempts", "job_callback_keys",
               "datasets", "dataset_versions", "job_exports")


def job_rows(i: int, project: str, state: str) -> dict[str, list[dict[str, Any]]]:
    """Job i and its history as the 0008 platform wrote them (the columns that existed then)."""
    job_id = f"job-{i:04d}-before-teams"
    created = T0 + timedelta(minutes=10 * i)
    final = state in ("SUCCEEDED", "FAILED", "CANCELLED")
    running = state == "RUNNING"
    epochs_done = 3 if final or running else 0
    job = {
        "id": job_id, "trace_id": f"trace-{i}", "state": state, "attempt": 1, "max_attempts": 3,
        "framework": "ultralytics" if i % 2 else "timm", "task_type": "object_detection",
        "model_name": "yolo11n", "dataset_id": "shapes", "project_id": project, "epochs": 3, "batch_size": 16,
        "learning_rate": 0.01, "image_size": 128, "num_gpus": 0.0, "num_cpus": 1.0, "memory_mb": None,
        "config": {"nbs": 16, "seed": i}, "advanced_config": {}, "progress": epochs_done / 3,
        "epoch": epochs_done or None, "total_epochs": 3, "step": None, "total_steps": None,
        "latest_metrics": {"loss": 0.5} if epochs_done else {},
        "final_metrics": {"mAP50": 0.7} if state == "SUCCEEDED" else {},
        "artifacts": {"best": f"s3://vision-platform/checkpoints/{job_id}/best.pt"} if state == "SUCCEEDED" else {},
        "error": "dataset unreadable" if state == "FAILED" else None,
        "error_type": "DATASET_ERROR" if state == "FAILED" else None,
        "traceback": None, "mlflow_run_id": None, "resume_from": None, "last_checkpoint": None,
        "cancel_requested": state == "CANCELLED", "cancel_requested_at": created + timedelta(minutes=2)
        if state == "CANCELLED" else None, "done": None, "training_time_seconds": 60.0 if final else None,
        "created_at": created, "updated_at": created + timedelta(minutes=5),
        "queued_at": created + timedelta(seconds=1) if state != "PENDING" else None,
        "started_at": created + timedelta(seconds=3) if epochs_done else None,
        "finished_at": created + timedelta(minutes=5) if final else None,
        "last_heartbeat_at": created + timedelta(minutes=4) if epochs_done else None,
        "last_progress_at": created + timedelta(minutes=4) if epochs_done else None,
        "dataset_version": "a" * 64, "dataset_uri": "s3://vision-platform/datasets/shapes/" + "a" * 64 + ".zip",
        "register_as": None, "mlflow_model": None, "wait_reason": None, "retry_at": None,
        "workers": 1, "placement_strategy": "PACK",
    }
    events = [{"job_id": job_id, "seq": s, "attempt": 1, "level": "info", "event_type": kind,
               "message": f"{kind} ✓", "data": {"n": s}, "source": "platform",
               "created_at": created + timedelta(seconds=s)}
              for s, kind in enumerate(("created", "queued", "started", "epoch_end")[: 2 + 2 * bool(epochs_done)], 1)]
    logs = [{"job_id": job_id, "seq": s, "attempt": 1, "stream": "stdout", "line": f"epoch {s}/3 loss=0.{s}",
             "created_at": created + timedelta(seconds=10 + s), "rank": 0} for s in range(1, 1 + 2 * epochs_done)]
    metrics = [{"job_id": job_id, "attempt": 1, "epoch": e, "step": None, "metrics": {"loss": 1 / e},
                "updated_at": created + timedelta(seconds=20 + e)} for e in range(1, 1 + epochs_done)]
    attempts = ([{"job_id": job_id, "attempt": 1, "outcome": state.lower() if final else None,
                  "queued_at": created + timedelta(seconds=1), "started_at": created + timedelta(seconds=3),
                  "ended_at": created + timedelta(minutes=5) if final else None, "node_id": "node-a",
                  "exit_code": 0 if final else None, "signal": None, "error_type": job["error_type"],
                  "reason": None, "resume_from": None, "pid": 1000 + i, "pgid": 1000 + i,
                  "output_complete": final, "ranks": None}] if epochs_done else [])
    keys = [{"job_id": job_id, "key": f"hb:{job_id}-{e}", "created_at": created + timedelta(seconds=20 + e)}
            for e in range(1, 1 + epochs_done)]
    exports = ([{"id": f"exp-{i}", "job_id": job_id, "format": "onnx", "options": {"half": False},
                 "state": "succeeded", "files": [{"name": "best.onnx", "size_bytes": 10, "uri": "s3://x/best.onnx"}],
                 "error": None, "created_at": created + timedelta(minutes=6), "started_at": None,
                 "finished_at": created + timedelta(minutes=7)}] if state == "SUCCEEDED" else [])
    return {"jobs": [job], "job_events": events, "job_logs": logs, "job_metrics": metrics,
            "job_attempts": attempts, "job_callback_keys": keys, "job_exports": exports}


def dataset_rows(name: str, versions: int) -> dict[str, list[dict[str, Any]]]:
    versions_rows = [{
        "dataset_id": name, "version": f"{n:x}" * 64 if n else "a" * 64, "state": "valid",
        "filename": f"{name}-{n}.zip", "size_bytes": 1000 + n, "key": f"datasets/{name}/{n}.zip", "upload_id": None,
        "part_size": 8 << 20, "format": "dice", "task_type": "object_detection", "classes": ["circle", "square"],
        "splits": {"train": 16, "val": 4}, "images": 20, "report": None,
        "created_at": T0 + timedelta(hours=n), "completed_at": T0 + timedelta(hours=n, seconds=5),
        "validated_at": T0 + timedelta(hours=n, seconds=9)} for n in range(versions)]
    return {"datasets": [{"id": name, "description": f"the {name} set", "created_at": T0,
                          "updated_at": T0 + timedelta(hours=versions)}],
            "dataset_versions": versions_rows}


def database_before_teams(url: str) -> None:
    """A database at revision 0008 holding JOBS and DATASETS with their histories."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(migrate.config(conn), BEFORE_TEAMS)
        with engine.connect() as conn:
            assert migrate.current(conn) == BEFORE_TEAMS
        tables = MetaData()
        tables.reflect(engine)  # the tables as they are at 0008, not db's newest ones
        assert "projects" not in tables.tables and "project_id" not in tables.tables["datasets"].c
        groups = [job_rows(i, project, state) for i, (project, state) in enumerate(JOBS)]
        groups += [dataset_rows(name, n) for name, n in DATASETS.items()]
        with engine.begin() as conn:
            for name in KEPT_TABLES:  # datasets before their versions (a foreign key)
                rows = [row for group in groups for row in group.get(name, [])]
                if rows:
                    conn.execute(insert(tables.tables[name]), rows)
    finally:
        engine.dispose()


def counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        tables = MetaData()
        tables.reflect(engine, only=KEPT_TABLES)
        with engine.connect() as conn:
            return {name: conn.execute(select(func.count()).select_from(tables.tables[name])).scalar_one()
                    for name in KEPT_TABLES}
    finally:
        engine.dispose()


@pytest.fixture
def upgraded(new_database, tmp_path):
    """(client with a static token, core, url, counts at 0008): the 0008 database upgraded by
    the store's start, the API in process on it."""
    url = new_database()
    database_before_teams(url)
    before = counts(url)
    core = JobStoreCore(url)  # db.make_engine: 0008 -> head
    settings = Settings(data_dir=tmp_path, database_url=url, api_tokens=f"{STATIC_TOKEN},{OTHER_STATIC_TOKEN}",
                        jwt_secret="x" * 40, controller_enabled=False, mlflow_tracking_uri=None)
    app = create_app(settings, store=local_client(core, settings))
    with TestClient(app, headers={"Authorization": f"Bearer {STATIC_TOKEN}"}) as client:
        yield client, core, url, before
    app.state.ctx.reads.reader.dispose()
    core.engine.dispose()


def as_token(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_database_before_teams_migrates_and_stays_readable(upgraded):
    client, core, url, before = upgraded
    with core.engine.connect() as conn:
        assert migrate.current(conn) == migrate.head()
    job_ids = {f"job-{i:04d}-before-teams": project for i, (project, _) in enumerate(JOBS)}

    # the static tokens are the bootstrap admin, a platform admin
    for token in (STATIC_TOKEN, OTHER_STATIC_TOKEN):
        me = client.get("/v1/whoami", headers=as_token(token))
        assert me.status_code == 200, me.text
        assert me.json()["user_id"] == BOOTSTRAP_USER and me.json()["platform_admin"] is True

    # every job made before teams is listed, and each is readable with its history
    listed = client.get("/v1/jobs", params={"limit": 500})
    assert listed.status_code == 200, listed.text
    assert {j["id"]: j["project_id"] for j in listed.json()["items"]} == job_ids
    assert [j["id"] for j in listed.json()["items"]] == sorted(job_ids, reverse=True)  # newest first, as before
    for i, (project, state) in enumerate(JOBS):
        job_id = f"job-{i:04d}-before-teams"
        got = client.get(f"/v1/jobs/{job_id}")
        assert got.status_code == 200, got.text
        job = got.json()
        assert (job["project_id"], job["state"], job["created_by"], job["cancelled_by"]) == (project, state, None, None)
        assert job["config"] == {"nbs": 16, "seed": i}
        expected = job_rows(i, project, state)
        events = client.get(f"/v1/jobs/{job_id}/events").json()["items"]
        assert [e["message"] for e in events] == [e["message"] for e in expected["job_events"]]
        assert len(client.get(f"/v1/jobs/{job_id}/logs").json()["items"]) == len(expected["job_logs"])
        assert len(client.get(f"/v1/jobs/{job_id}/metrics").json()["items"]) == len(expected["job_metrics"])
    # a project filter with the odd name still finds its job
    odd = client.get("/v1/jobs", params={"project_id": ODD_PROJECT}).json()["items"]
    assert [j["id"] for j in odd] == [j for j, p in job_ids.items() if p == ODD_PROJECT]

    # every job's project_id is a project record; `default` exists even with no job in it before
    projects = client.get("/v1/projects")
    assert projects.status_code == 200, projects.text
    names = {p["id"] for p in projects.json()["items"]}
    assert names == {"alpha", "beta", ODD_PROJECT, DEFAULT_PROJECT}
    assert set(job_ids.values()) <= names
    for p in projects.json()["items"]:
        assert p["created_by"] == BOOTSTRAP_USER and p["members"] == [] and p["your_role"] is None

    # datasets, which had no project, are in `default`, with their versions
    datasets = client.get("/v1/datasets")
    assert datasets.status_code == 200, datasets.text
    assert {d["id"]: (d["project_id"], len(d["versions"])) for d in datasets.json()["items"]} == {
        name: (DEFAULT_PROJECT, n) for name, n in DATASETS.items()}
    shapes = client.get("/v1/datasets/shapes").json()
    assert shapes["latest_valid_version"] is not None and shapes["created_by"] is None

    # nothing was lost: the same rows in every table that existed before
    assert counts(url) == before
    assert before["job_events"] > 0 and before["job_logs"] > 0 and before["dataset_versions"] == 3


def test_a_member_made_after_the_upgrade_sees_only_their_project(upgraded):
    client, _core, url, before = upgraded
    made = client.post("/v1/admin/users", json={"id": "alice"})
    assert made.status_code == 201, made.text
    alice = as_token(made.json()["token"]["token"])
    added = client.put("/v1/projects/alpha/members/alice", json={"role": "member"})
    assert added.status_code == 200, added.text

    me = client.get("/v1/whoami", headers=alice).json()
    assert (me["user_id"], me["platform_admin"], me["projects"]) == (
        "alice", False, [{"project_id": "alpha", "role": "member"}])
    alpha = sorted(f"job-{i:04d}-before-teams" for i, (p, _) in enumerate(JOBS) if p == "alpha")
    listed = client.get("/v1/jobs", params={"limit": 500}, headers=alice)
    assert listed.status_code == 200, listed.text
    assert sorted(j["id"] for j in listed.json()["items"]) == alpha
    for i, (project, _) in enumerate(JOBS):
        got = client.get(f"/v1/jobs/job-{i:04d}-before-teams", headers=alice)
        assert got.status_code == (200 if project == "alpha" else 404), (project, got.text)
    # another project's jobs are exactly as absent as a job that never existed
    beta_job, never_made = f"job-{JOBS.index(('beta', 'SUCCEEDED')):04d}-before-teams", "job-9999-never-made"
    hidden = client.get(f"/v1/jobs/{beta_job}", headers=alice)
    missing = client.get(f"/v1/jobs/{never_made}", headers=alice)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["detail"].replace(beta_job, "X") == missing.json()["detail"].replace(never_made, "X")
    assert [p["id"] for p in client.get("/v1/projects", headers=alice).json()["items"]] == ["alpha"]
    # the datasets went to `default`, which alice is not in
    assert client.get("/v1/datasets", headers=alice).json()["items"] == []
    assert client.get("/v1/datasets/shapes", headers=alice).status_code == 404
    # a project migrated with a name no new project may have (a space, a slash) is still managed
    odd = quote(ODD_PROJECT, safe="")
    assert client.get(f"/v1/projects/{odd}").json()["id"] == ODD_PROJECT
    assert client.put(f"/v1/projects/{odd}/members/alice", json={"role": "viewer"}).status_code == 200
    assert {p["id"] for p in client.get("/v1/projects", headers=alice).json()["items"]} == {"alpha", ODD_PROJECT}
    assert client.delete(f"/v1/projects/{odd}/members/alice").json()["members"] == []

    # the admin's calls were audited; no job's history changed
    audit = client.get("/v1/audit").json()["items"]
    assert {(e["action"], e["user_id"], e["outcome"]) for e in audit} >= {
        ("create_user", BOOTSTRAP_USER, 201), ("set_member", BOOTSTRAP_USER, 200)}
    assert counts(url) == before
