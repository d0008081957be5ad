"""Property (issue 13): no value the store accepts can break a read, on each database.

Values are what a hostile client may put in JSON: unpaired surrogates, NaN and infinities, huge
integers, deep nesting. Through the API's own validation, each is either refused (nothing
written) or stored, and then every read the API serves — the job, the list, events, metrics,
and a store reloaded from the database — renders as JSON. Written straight into the store,
past validation (rows from older versions, or by hand), the same reads still render."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ray_app.jobs.api_models import EventPage, EventView, JobCreate, JobPage, JobView, MetricPage, MetricView
from ray_app.jobs.callback_models import EventIn, HeartbeatIn
from ray_app.store.core import JobStoreCore

HOSTILE_TEXT = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=6),  # surrogates included
    st.sampled_from(["\ud800", "a\udfffb", "", "\x00", "é"]),  # NUL: PostgreSQL's text refuses it
)
HOSTILE_NUMBER = st.one_of(
    st.integers(), st.integers(min_value=2**63 - 2, max_value=2**70), st.floats(),  # NaN and inf included
    st.sampled_from([10**30, -(2**64), float("nan"), float("inf")]),
)
JSON = st.recursive(st.none() | st.booleans() | HOSTILE_NUMBER | HOSTILE_TEXT,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT, inner, max_size=3),
                    max_leaves=8)
BASE = {"framework": "fake", "task_type": "image_classification", "model_name": "m", "dataset_id": "ds"}
FIELDS = ["framework", "model_name", "project_id", "config", "advanced_config", "memory_mb", "learning_rate",
          "num_gpus", "num_cpus", "epochs", "resume_from"]
# no shrinking: each example writes to a real database, and a failure's first example is clear
PROFILE = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                   phases=[Phase.explicit, Phase.generate],
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def store(database_url):
    return JobStoreCore(database_url)


def every_read_renders(store: JobStoreCore, written: str | None) -> None:
    """The list (every job so far) and each read of the job just written render, from this store
    and from one reloaded from the database. The jobs of earlier examples were read one by one
    when they were written and nothing changed them since: reading them all again at each example
    made the test quadratic (20 minutes on a slow PostgreSQL in a CI run) for nothing it checks."""
    for core in (store, JobStoreCore(store.engine.url.render_as_string(hide_password=False))):
        items, _ = core.list_jobs(limit=500)
        page = JobPage(items=[JobView.model_validate(j) for j in items], next_cursor=None)
        json.loads(page.model_dump_json())
        for job_id in [written] if written else []:
            json.loads(JobView.model_validate(core.get_job(job_id)).model_dump_json())
            json.loads(EventPage(items=[EventView.model_validate(e) for e in core.events(job_id)],
                                 next_after=None).model_dump_json())
            json.loads(MetricPage(items=[MetricView.model_validate(m) for m in core.metrics(job_id)])
                       .model_dump_json())


def running(store: JobStoreCore, spec: dict) -> str:
    job = store.create_job(spec)
    store.transition(job["id"], "QUEUED", "test", attempt=1)
    return job["id"]


@PROFILE
@given(field=st.sampled_from(FIELDS), value=JSON, metrics=st.dictionaries(HOSTILE_TEXT, JSON, max_size=3),
       message=HOSTILE_TEXT, data=JSON)
def test_what_the_api_accepts_always_reads_back(store, field, value, metrics, message, data):
    try:
        spec = JobCreate.model_validate({**BASE, field: value}).model_dump(mode="json")
    except ValidationError:
        spec = JobCreate.model_validate(BASE).model_dump(mode="json")  # refused: the job is created without it
    job_id = running(store, spec)
    for body in ({"epoch": 1, "metrics": metrics}, {"event_type": "note", "message": message, "data": data}):
        kind = "heartbeat" if "epoch" in body else "event"
        try:
            (HeartbeatIn if kind == "heartbeat" else EventIn).model_validate(body)
        except ValidationError:
            continue  # the API answers 422 and writes nothing
        getattr(store, kind)(job_id, 1, body)
    every_read_renders(store, job_id)


@PROFILE
@given(field=st.sampled_from(["config", "advanced_config", "model_name", "project_id", "resume_from"]), value=JSON)
def test_what_is_written_past_validation_still_reads_back(store, field, value):
    spec = JobCreate.model_validate(BASE).model_dump(mode="json")
    if field in ("config", "advanced_config"):
        value = {"v": value}
    elif not isinstance(value, str):
        value = json.dumps(value, default=str)[:100]
    try:
        job_id: str | None = running(store, {**spec, field: value})
    except Exception:
        job_id = None  # the database itself refused the row: nothing was written
    every_read_renders(store, job_id)
