"""The queue against the real platform on the shared test cluster: the fake trainer
(tests/trainers/fake) with CPUs as the scarce resource. Each test measures what is free for jobs
first (GET /v1/queue) and sizes its jobs from it, so that a known number fit at once."""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.platform import Platform
from tests.fixtures.teams import make_project

FINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


class Queue:
    def __init__(self, p: Platform):
        self.p = p
        self.created: list[str] = []

    def get(self) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while True:  # a platform just deployed: its controller may still be starting (503)
            resp = self.p.api("GET", "/v1/queue")
            if resp.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def idle_free_cpus(self, timeout: float = 60.0) -> float:
        """The CPUs free for jobs once no job of an earlier test waits or holds any."""
        deadline = time.monotonic() + timeout
        seen: list[float] = []
        while True:
            q = self.get()
            active = self.p.api("GET", "/v1/jobs", params={"state": "RUNNING", "limit": 1}).json()["items"]
            if not q["jobs"] and not active and q["capacity"]:
                seen.append(q["capacity"]["free"]["cpus"])
                # the same three times in a row: what ended jobs gave back is all shown free
                if len(seen) >= 3 and len(set(seen[-3:])) == 1:
                    return seen[-1]
            else:
                seen.clear()
            if time.monotonic() > deadline:
                raise AssertionError(f"the cluster did not become idle: {q['jobs'][:3]}")
            time.sleep(0.5)

    def slot(self, slots: int) -> float:
        """CPUs per job such that exactly `slots` jobs fit in what is free."""
        free = self.idle_free_cpus()
        cpus = math.floor(free / slots * 100) / 100
        assert cpus >= 0.2 and free - slots * cpus < cpus, (free, slots)
        return cpus

    def project(self, **quota: Any) -> str:
        project_id = make_project(self.p)
        if quota:
            self.set_quota(project_id, **quota)
        return project_id

    def set_quota(self, project_id: str, **quota: Any) -> dict[str, Any]:
        resp = self.p.api("PUT", f"/v1/projects/{project_id}/quota", json=quota)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def submit(self, project_id: str, cpus: float, epochs: int = 3, epoch_s: float = 0.4, **fields: Any) -> str:
        body = {"framework": "fake", "task_type": "image_classification", "model_name": "fake-1",
                "dataset_id": "ds-test", "epochs": epochs, "num_cpus": cpus, "project_id": project_id,
                "config": {"epoch_seconds": epoch_s, **fields.pop("config", {})}, **fields}
        resp = self.p.api("POST", "/v1/jobs", json=body)
        assert resp.status_code == 201, resp.text
        self.created.append(resp.json()["id"])
        return resp.json()["id"]

    def jobs(self, project_id: str) -> list[dict[str, Any]]:
        resp = self.p.api("GET", "/v1/jobs", params={"project_id": project_id, "limit": 200})
        assert resp.status_code == 200, resp.text
        return resp.json()["items"]

    def wait(self, until: Any, what: str, timeout: float = 60.0, every: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got = until()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout:g}s: {what}")
            time.sleep(every)

    def cancel_all(self) -> None:
        for job_id in self.created:
            self.p.api("POST", f"/v1/jobs/{job_id}/cancel")
        for job_id in self.created:
            self.p.wait_final(job_id, timeout=60)


@pytest.fixture
def queue(platform, ray_cluster):
    q = Queue(platform)
    yield q
    try:
        q.cancel_all()
    finally:
        if os.environ.get("VTP_KEEP_LOGS"):  # debugging: the cluster's logs outlive the session
            shutil.copytree(Path(ray_cluster.temp_dir, "session_latest", "logs"), os.environ["VTP_KEEP_LOGS"],
                            dirs_exist_ok=True)
