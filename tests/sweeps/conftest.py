"""Sweeps against the real platform: the fake trainer (tests/trainers/fake) reports `objective`, a
known function of learning_rate and config.x (best at 0.01 and 1), every epoch."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.fixtures.platform import Platform

FINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


def base_job(**fields: Any) -> dict[str, Any]:
    config = {"epoch_seconds": 0.25, **fields.pop("config", {})}
    return {"framework": "fake", "task_type": "image_classification", "model_name": "fake-1",
            "dataset_id": "ds-test", "epochs": 4, "num_cpus": 0.5, "config": config, **fields}


def sweep_body(**fields: Any) -> dict[str, Any]:
    return {"name": "t", "job": base_job(**fields.pop("job", {})), "metric": "objective", "mode": "max",
            "space": {"learning_rate": {"choice": [0.01, 0.1]}}, "search": "grid", "max_concurrent": 2, **fields}


class Sweeps:
    def __init__(self, p: Platform):
        self.p = p

    def create(self, **fields: Any) -> dict[str, Any]:
        resp = self.p.api("POST", "/v1/sweeps", json=sweep_body(**fields))
        assert resp.status_code == 201, resp.text
        return resp.json()

    def get(self, sweep_id: str) -> dict[str, Any]:
        resp = self.p.api("GET", f"/v1/sweeps/{sweep_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def wait(self, sweep_id: str, until: Any = None, timeout: float = 180.0) -> dict[str, Any]:
        """The sweep once `until(sweep)` holds (default: it is final)."""
        until = until or (lambda s: s["state"] in FINAL)
        deadline = time.monotonic() + timeout
        while True:
            sweep = self.get(sweep_id)
            if until(sweep):
                return sweep
            if time.monotonic() > deadline:
                raise AssertionError(f"sweep {sweep_id} not there within {timeout:g}s: state {sweep['state']}, "
                                     f"error {sweep['error']!r}, trials "
                                     f"{[(t['trial'], t['status'], t['epochs_run']) for t in sweep['trials']]}")
            time.sleep(0.5)

    def trial_jobs(self, sweep_id: str) -> list[dict[str, Any]]:
        resp = self.p.api("GET", "/v1/jobs", params={"sweep_id": sweep_id, "limit": 500})
        assert resp.status_code == 200, resp.text
        return resp.json()["items"]


@pytest.fixture
def sweeps(platform) -> Sweeps:
    return Sweeps(platform)
