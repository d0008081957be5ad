"""Datasets in the store (ray_app/store/datasets.py) on each database: a version's states
compare-and-set, the version a job gets, and the two checks that must not interleave (a job's
creation on a dataset, the dataset's deletion), which hold because both run in the single writer."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from ray_app.jobs.errors import Conflict
from ray_app.store import datasets as ds
from ray_app.store import db
from ray_app.store.core import JobStoreCore
from tests.spine.test_store_core import SPEC

A, B = "a" * 64, "ab" + "c" * 62


@pytest.fixture
def store(database_url):
    return JobStoreCore(database_url)


@pytest.fixture
def n():
    """Dataset names of this test's own (the PostgreSQL database is the session's)."""
    prefix = uuid.uuid4().hex[:8]
    return lambda name: f"{prefix}-{name}"


def version(sha: str, **extra) -> dict:
    return {"version": sha, "filename": "d.zip", "size_bytes": 10, "key": f"datasets/d@{sha}.zip",
            "upload_id": "u1", "part_size": 8 << 20, **extra}


def read(store, fn, *args):
    with store.engine.connect() as conn:
        return fn(conn, *args)


def validated(store, dataset_id: str, sha: str, problems: list | None = None) -> dict:
    store.open_dataset_version(dataset_id, "", version(sha))
    store.dataset_upload_completed(dataset_id, sha)
    report = {"format": "dice", "task_type": "object_detection", "classes": ["c"], "splits": {"train": 3},
              "images": 3, "problems": problems or [], "problems_total": len(problems or [])}
    return store.dataset_validated(dataset_id, sha, report)


def test_a_version_moves_uploading_validating_valid_and_never_back(store, n):
    shapes = n("shapes")
    row, created = store.open_dataset_version(shapes, "coloured shapes", version(A))
    assert created and row["state"] == "uploading"
    again, created = store.open_dataset_version(shapes, "", version(A))
    assert not created and again["upload_id"] == "u1"  # the same content: the same version
    with pytest.raises(Conflict, match="uploading, not validating"):
        store.dataset_validated(shapes, A, {"problems": []})
    assert store.dataset_upload_completed(shapes, A)["state"] == "validating"
    assert store.dataset_upload_completed(shapes, A)["state"] == "validating"  # repeated: harmless
    done = store.dataset_validated(shapes, A, {"format": "yolo", "classes": ["x"], "splits": {"train": 1},
                                                 "images": 1, "problems": [], "problems_total": 0})
    assert (done["state"], done["format"], done["images"], done["upload_id"]) == ("valid", "yolo", 1, None)
    with pytest.raises(Conflict):
        store.dataset_upload_reopened(shapes, A, "u2")
    shaped = read(store, ds.get_dataset, shapes)
    assert shaped["description"] == "coloured shapes" and shaped["latest_valid_version"] == A


def test_the_version_a_job_gets(store, n):
    d, only_bad = n("d"), n("only-bad")
    assert read(store, ds.version_for_job, "not-registered", None) is None  # placed in S3 by hand
    with pytest.raises(ds.DatasetUnusable, match="not registered"):
        read(store, ds.version_for_job, "not-registered", "abcdef12")
    validated(store, d, A)
    validated(store, d, B, problems=[{"file": "images/x.png", "problem": "cannot decode image"}])
    assert read(store, ds.version_for_job, d, None)["version"] == A  # the newest VALID one
    assert read(store, ds.version_for_job, d, "aaaaaaaa")["version"] == A  # a prefix
    with pytest.raises(ds.DatasetUnusable, match=r"invalid: 1 problem\(s\): images/x.png: cannot decode"):
        read(store, ds.version_for_job, d, "abcc")
    with pytest.raises(ds.DatasetUnusable, match="no version"):
        read(store, ds.version_for_job, d, "ffffffff")
    with pytest.raises(ds.DatasetUnusable, match="ambiguous"):
        read(store, ds.version_for_job, d, "a")
    validated(store, only_bad, B, problems=[{"file": None, "problem": "unrecognised dataset layout"}])
    with pytest.raises(ds.DatasetUnusable, match="no valid version.*unrecognised dataset layout"):
        read(store, ds.version_for_job, only_bad, None)
    with pytest.raises(ds.DatasetUnusable, match="no version"):  # LIKE's wildcards are plain text
        read(store, ds.version_for_job, d, "%")


def test_delete_is_refused_while_a_live_job_uses_it_and_a_job_on_a_deleted_version_is_refused(store, n):
    d = n("d")
    validated(store, d, A)
    job = store.create_job({**SPEC, "dataset_id": d, "dataset_version": A, "dataset_uri": "s3://b/k"})
    assert job["dataset_version"] == A
    with pytest.raises(Conflict, match=f"used by 1 queued or running job.*{job['id']}"):
        store.delete_dataset(d)
    store.request_cancel(job["id"])  # a PENDING job is cancelled at once
    versions = store.delete_dataset(d)
    assert [v["key"] for v in versions] == [f"datasets/d@{A}.zip"]
    assert read(store, lambda c: c.execute(select(db.dataset_versions).where(
        db.dataset_versions.c.dataset_id == d)).all()) == []
    with pytest.raises(ds.DatasetUnusable):  # the API had resolved it a moment before
        store.create_job({**SPEC, "dataset_id": d, "dataset_version": A})
    assert store.get_job(job["id"])["dataset_version"] == A  # a finished job keeps what it used
    with pytest.raises(ds.DatasetNotFound):
        store.delete_dataset(d)


def test_list_pages_by_name(store, n):
    for name in ("c", "a", "b"):
        validated(store, n(name), A)
    start = n("")  # sorts before this test's names
    first, cursor = read(store, ds.list_datasets, start, 2)
    assert [d["id"] for d in first] == [n("a"), n("b")] and cursor == n("b")
    rest, _ = read(store, ds.list_datasets, cursor, 1)
    assert [d["id"] for d in rest] == [n("c")]
    assert rest[0]["versions"][0]["version"] == A
