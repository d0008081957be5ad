"""A job never reserves what its trainer would leave idle (issue 27): the API refuses, naming
the field and the trainer's limit from its manifest, and writes nothing; what a trainer can use
is accepted and shown with its workers."""

from __future__ import annotations

import shutil

import pytest

from tests.fixtures.platform import TEST_TRAINERS

PLUGINS = {  # name -> the manifest's `distributed` line ("" : none, a single process)
    "solo": "",
    "pergpu": "distributed: {max_workers: 4, gpus_per_process: 1}\n",
    "ownddp": "distributed: {max_workers: 1, max_gpus_per_worker: 8}\n",
}


@pytest.fixture(scope="module")
def plugins(deployment):
    for name, distributed in PLUGINS.items():
        folder = deployment.plugins_dir / name
        folder.mkdir()
        shutil.copy(TEST_TRAINERS / "fake" / "train.py", folder / "train.py")
        (folder / "trainer.yaml").write_text(f"name: {name}\ntask_types: [image_classification]\n"
                                             f"models: ['*']\nresources: {{num_cpus: 0}}\n{distributed}")
    yield
    for name in PLUGINS:
        shutil.rmtree(deployment.plugins_dir / name)


def body(framework: str, **fields) -> dict:
    return {"framework": framework, "task_type": "image_classification", "model_name": "m", "dataset_id": "ds",
            **fields}


@pytest.mark.parametrize("framework,fields,field,words", [
    ("solo", {"num_gpus": 2}, "num_gpus", "the solo trainer uses at most 1 GPU per worker"),
    ("solo", {"workers": 2}, "workers", "the solo trainer runs at most 1 worker"),
    ("pergpu", {"workers": 5}, "workers", "at most 4 workers (its manifest's distributed.max_workers is 4)"),
    ("pergpu", {"num_gpus": 1.5}, "num_gpus", "must be a multiple of it, not 1.5"),
    ("ownddp", {"workers": 2}, "workers", "the ownddp trainer runs at most 1 worker"),
    ("ownddp", {"num_gpus": 16}, "num_gpus", "at most 8 GPUs per worker"),
    ("ultralytics", {"workers": 2, "task_type": "object_detection", "model_name": "yolo11n"}, "workers",
     "the ultralytics trainer runs at most 1 worker"),
])
def test_a_job_its_trainer_would_leave_idle_is_refused_naming_the_field(platform, plugins, framework, fields,
                                                                         field, words):
    p = platform
    before = p.api("GET", "/v1/jobs", params={"framework": framework}).json()["items"]
    resp = p.api("POST", "/v1/jobs", json=body(framework, **fields))
    assert resp.status_code == 422, resp.text
    [detail] = resp.json()["detail"]
    assert detail["loc"] == ["body", field] and words in detail["msg"], detail
    assert p.api("GET", "/v1/jobs", params={"framework": framework}).json()["items"] == before  # nothing written


@pytest.mark.parametrize("fields,problem", [
    ({"workers": 0}, "greater than or equal to 1"),
    ({"workers": 65}, "less than or equal to 64"),
    ({"workers": True}, "valid integer"),
    ({"placement_strategy": "STRICT_SPREAD"}, "'PACK' or 'SPREAD'"),
])
def test_bad_gang_fields_are_422(platform, plugins, fields, problem):
    resp = platform.api("POST", "/v1/jobs", json=body("pergpu", **fields))
    assert resp.status_code == 422 and problem in resp.text, resp.text


def test_what_a_trainer_can_use_is_accepted_with_its_workers(platform, plugins):
    p = platform
    job = p.create_job(**body("pergpu", workers=2, num_gpus=2, placement_strategy="SPREAD"))
    assert (job["workers"], job["placement_strategy"], job["num_gpus"]) == (2, "SPREAD", 2)
    assert job["ranks"] == []  # nothing started: no GPUs here, so it waits
    p.api("POST", f"/v1/jobs/{job['id']}/cancel")
    p.wait_state(job["id"], "CANCELLED", timeout=30)
    solo = p.create_job(**body("solo", num_gpus=0.5))  # a share of one GPU is one process's to use
    assert solo["workers"] == 1 and solo["placement_strategy"] == "PACK"
    p.api("POST", f"/v1/jobs/{solo['id']}/cancel")
