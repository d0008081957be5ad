"""The Python client's own logic, without a platform: which requests are sent again and which
are not, what a refusal raises, and the upload's archive (a folder zips to the same bytes every
time, so its version is stable). Requests go to httpx's MockTransport (pure logic: the client
against the real platform is tests/datasets/test_datasets_api.py)."""

from __future__ import annotations

import asyncio
import json
import zipfile
from pathlib import Path

import httpx
import pytest

from ray_app.client import APIError, AsyncClient, TransportError
from ray_app.client import _retry
from ray_app.client._uploads import deterministic_zip, prepare
from tests.client.mock_api import client_with

JOB = {"id": "j1", "trace_id": "t", "state": "PENDING", "attempt": 1, "max_attempts": 3, "framework": "fake",
       "task_type": "object_detection", "model_name": "m", "dataset_id": "d", "project_id": "p", "epochs": 1,
       "batch_size": 1, "learning_rate": 0.1, "image_size": 64, "num_gpus": 0, "num_cpus": 1, "memory_mb": None,
       "config": {}, "advanced_config": {}, "created_at": "2026-12-01T00:00:00Z", "updated_at": "2026-12-01T00:00:00Z"}


def test_reads_are_retried_on_503_and_connection_errors_then_answer():
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        if len(calls) == 2:
            return httpx.Response(503, json={"detail": "restarting"})
        return httpx.Response(200, json=JOB)

    job = client_with(handler).get_job("j1")
    assert job.id == "j1" and len(calls) == 3
    assert all(r.headers["authorization"] == "Bearer secret-token" for r in calls)


def test_creating_a_job_is_not_sent_twice_after_a_lost_answer():
    calls = []

    def handler(request):
        calls.append(request)
        raise httpx.ReadTimeout("no answer", request=request)  # sent; the answer was lost

    with pytest.raises(TransportError, match="cannot reach http://vtp.test"):
        client_with(handler).submit({"framework": "fake"})
    assert len(calls) == 1


def test_creating_a_job_is_sent_again_when_the_connection_was_never_made():
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(201, json=JOB)

    assert client_with(handler).submit({"framework": "fake"}).id == "j1" and len(calls) == 3


def test_a_refusal_raises_with_status_and_the_servers_detail_and_is_not_retried():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(422, json={"detail": [{"loc": ["body", "epochs"], "msg": "too many", "type": "x"}]})

    with pytest.raises(APIError) as info:
        client_with(handler).get_job("j1")
    assert info.value.status == 422 and info.value.detail[0]["loc"] == ["body", "epochs"]
    assert "body.epochs: too many" in str(info.value) and len(calls) == 1


def test_retries_give_up_with_the_last_answer():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(503, json={"detail": "overloaded"})

    with pytest.raises(APIError) as info:
        client_with(handler).list_jobs()
    assert info.value.status == 503 and info.value.detail == "overloaded" and len(calls) == _retry.ATTEMPTS


def test_async_client_sends_the_same_calls():
    seen = []

    def handler(request):
        seen.append((request.method, request.url.path, dict(request.url.params)))
        return httpx.Response(200, json={"items": [], "next_cursor": None})

    async def run():
        c = AsyncClient("http://vtp.test", token="t")
        c.http = httpx.AsyncClient(base_url="http://vtp.test", transport=httpx.MockTransport(handler))
        async with c:
            page = await c.list_jobs(state="RUNNING", limit=5)
            datasets = [d async for d in c.iter_datasets()]
        return page, datasets

    page, datasets = asyncio.run(run())
    assert page.items == [] and datasets == []
    assert seen == [("GET", "/v1/jobs", {"state": "RUNNING", "limit": "5"}), ("GET", "/v1/datasets", {})]


def test_ids_are_quoted_into_one_path_segment():
    seen = []

    def handler(request):
        seen.append(request.url.raw_path)
        return httpx.Response(404, json={"detail": "no"})

    with pytest.raises(APIError):
        client_with(handler).get_dataset("../jobs")
    assert seen == [b"/v1/datasets/..%2Fjobs"]


def test_a_folder_zips_to_the_same_bytes_every_time(tmp_path):
    root = tmp_path / "ds"
    (root / "images" / "a").mkdir(parents=True)
    (root / "annotations.json").write_text('{"x": 1}')
    (root / "images" / "a" / "1.png").write_bytes(b"\x89PNG fake")
    (root / ".DS_Store").write_bytes(b"finder junk")
    first = prepare(root)
    (root / "images" / "a" / "1.png").touch()  # a new mtime changes nothing
    second = prepare(root)
    try:
        assert first.sha256 == second.sha256 and first.path.read_bytes() == second.path.read_bytes()
        with zipfile.ZipFile(first.path) as zf:
            assert sorted(zf.namelist()) == ["annotations.json", "images/a/1.png"]
            assert zf.getinfo("images/a/1.png").compress_type == zipfile.ZIP_STORED
    finally:
        first.cleanup()
        second.cleanup()
    assert not first.path.exists()


def test_prepare_refuses_what_is_not_an_archive(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="must be an archive"):
        prepare(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no files"):
        deterministic_zip(tmp_path / "empty", tmp_path / "x.zip")
    with pytest.raises(FileNotFoundError):
        prepare(Path(tmp_path / "missing"))


def test_the_stream_parser_reads_messages_skips_pings_and_unknown_kinds():
    from ray_app.client._stream import parse

    log = '{"seq": 3, "attempt": 1, "stream": "stdout", "line": "a", "created_at": "2026-12-01T00:00:00Z"}'
    lines = [": ping", "", "event: log", "id: 2-3", f"data: {log}", "", "event: mystery", "data: {}", "",
             "event: job", "id: 2-3", "data: " + json.dumps(JOB), ""]
    messages = list(parse(lines))
    assert [(m.kind, m.id) for m in messages] == [("log", "2-3"), ("job", "2-3")]
    assert messages[0].data.line == "a" and messages[1].job.id == "j1"
