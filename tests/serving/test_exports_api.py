"""Exports (issue 17): a finished job's model written to another format by its trainer's export.py
in a Ray task, its files among the job's artifacts, followed through the API, the client and
`vtp jobs export`; and every refusal naming its reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.fixtures.platform import REPO

pytestmark = pytest.mark.timeout(300)


def wait_export(p, job_id: str, export_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        view = p.api("GET", f"/v1/jobs/{job_id}/exports/{export_id}").json()
        if not seen or seen[-1] != view["state"]:
            seen.append(view["state"])
        if view["state"] in ("succeeded", "failed"):
            view["seen"] = seen
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.2)


def finished_console_job(p, **config) -> str:
    job_id = p.create_job(framework="console", model_name="console-export", epochs=1,
                          config={"class_name": "hexagon", **config})["id"]
    assert p.wait_final(job_id, timeout=120)["state"] == "SUCCEEDED"
    return job_id


def test_an_export_runs_on_the_cluster_and_its_files_are_the_jobs_artifacts(platform):
    p = platform
    job_id = finished_console_job(p)
    r = p.api("POST", f"/v1/jobs/{job_id}/exports", json={"format": "onnx", "dynamic": True})
    assert r.status_code == 202, r.text
    created = r.json()
    assert created["state"] in ("pending", "running", "succeeded") and created["format"] == "onnx"
    assert created["options"] == {"image_size": 640, "half": False, "dynamic": True}
    done = wait_export(p, job_id, created["id"])
    assert done["state"] == "succeeded", done
    name = f"exports/{created['id']}/console-best.onnx"
    assert [f["name"] for f in done["files"]] == [name]
    assert done["files"][0]["uri"].endswith(f"artifacts/job-{job_id}/{name}") and done["files"][0]["size_bytes"] > 0
    assert done["finished_at"] and done["error"] is None

    # among the job's artifacts, downloadable through the API's redirect to S3
    assert name in [a["name"] for a in p.api("GET", f"/v1/jobs/{job_id}/artifacts").json()["items"]]
    r = p.api("GET", f"/v1/jobs/{job_id}/artifacts/{name}")
    assert r.status_code == 307
    content = json.loads(httpx.get(r.headers["location"]).content)
    assert content == {"format": "onnx", "class_name": "hexagon", "image_size": 640, "half": False,
                       "dynamic": True, "device": "cpu"}

    # a second export, with its own image size; listed newest first
    second = p.api("POST", f"/v1/jobs/{job_id}/exports", json={"format": "torchscript", "image_size": 320}).json()
    assert wait_export(p, job_id, second["id"])["state"] == "succeeded"
    items = p.api("GET", f"/v1/jobs/{job_id}/exports").json()["items"]
    assert [i["id"] for i in items] == [second["id"], created["id"]]
    assert items[0]["options"]["image_size"] == 320
    kinds = [e["event_type"] for e in p.events(job_id)]
    assert kinds.count("export_requested") == 2 and kinds.count("export_succeeded") == 2

    # an export that raises is recorded as failed, with the trainer's error
    broken = p.api("POST", f"/v1/jobs/{job_id}/exports", json={"format": "broken"}).json()
    failed = wait_export(p, job_id, broken["id"])
    assert failed["state"] == "failed" and "cannot export to 'broken'" in failed["error"], failed
    assert failed["files"] == []
    assert p.api("GET", f"/v1/jobs/{job_id}/exports/nope").status_code == 404
    assert p.api("GET", "/v1/jobs/nope/exports").status_code == 404


def test_refusals_name_their_reason(platform):
    p = platform
    # a running job: 409
    running = p.create_job(framework="console", model_name="console-export", epochs=200,
                           config={"epoch_seconds": 0.5})["id"]
    p.wait_state(running, "RUNNING", timeout=60)
    r = p.api("POST", f"/v1/jobs/{running}/exports", json={"format": "onnx"})
    assert r.status_code == 409 and "RUNNING" in r.json()["detail"], r.text
    p.api("POST", f"/v1/jobs/{running}/cancel")

    # a format the trainer does not list: 422 at body.format, naming the supported ones
    job_id = finished_console_job(p)
    r = p.api("POST", f"/v1/jobs/{job_id}/exports", json={"format": "tflite"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["body", "format"] and "onnx, torchscript" in detail["msg"]
    r = p.api("POST", f"/v1/jobs/{job_id}/exports", json={"format": "onnx", "image_size": 2})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "image_size"]

    # a trainer without an export entrypoint: 409
    manual = p.create_job()["id"]
    p.api("POST", f"/v1/jobs/{manual}/cancel")
    r = p.api("POST", f"/v1/jobs/{manual}/exports", json={"format": "onnx"})
    assert r.status_code == 409 and "no export entrypoint" in r.json()["detail"], r.text
    assert p.api("POST", "/v1/jobs/nope/exports", json={"format": "onnx"}).status_code == 404
    assert p.api("GET", f"/v1/jobs/{manual}/exports").json() == {"items": []}


def test_vtp_jobs_export_follows_the_export_and_prints_the_files(platform):
    p = platform
    job_id = finished_console_job(p)
    env = {**os.environ, "VTP_API_URL": p.base_url, "VTP_API_TOKEN": p.api_token}
    run = subprocess.run([sys.executable, "-m", "ray_app", "jobs", "export", job_id, "--format", "torchscript",
                          "--image-size", "256"], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert ": pending" in out or ": running" in out, out
    assert ": succeeded" in out and "console-best.torchscript" in out, out
    assert f"vtp jobs artifacts {job_id} exports/" in out, out

    as_json = subprocess.run([sys.executable, "-m", "ray_app", "jobs", "export", job_id, "--format", "onnx",
                              "--json"], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert as_json.returncode == 0, as_json.stderr
    view = json.loads(as_json.stdout)
    assert view["state"] == "succeeded" and view["files"][0]["name"].endswith("console-best.onnx")

    failed = subprocess.run([sys.executable, "-m", "ray_app", "jobs", "export", job_id, "--format", "broken"],
                            env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert failed.returncode == 1 and "export failed" in failed.stderr, failed.stdout + failed.stderr
