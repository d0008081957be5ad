"""A job whose trainer's environment is not built yet (issue 18): it waits in PENDING without
holding the controller, and its events say why and how far the build is; the next job on the
same trainer starts without waiting. And the platform ships its bundled trainers' environments
ahead of time (what `vtp up` and the controller's warm-up build)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from ray_app.runtime import environments
from ray_app.runtime.registry import TrainerRegistry
from tests.fixtures.platform import TEST_TRAINERS

ENV_EVENTS = ("environment_building", "environment_progress", "environment_ready")


def venv_plugin_folder(plugins_dir: Path, prefix: str, resources: str = "{num_cpus: 0.5}") -> Path:
    """A plugin trainer (the fake trainer) in a virtualenv of its own that nobody built yet."""
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    folder = plugins_dir / name
    folder.mkdir()
    shutil.copy(TEST_TRAINERS / "fake" / "train.py", folder / "train.py")
    (folder / "trainer.yaml").write_text(
        f"name: {name}\ntask_types: [image_classification]\nmodels: ['*']\nresources: {resources}\nenv: venv\n")
    return folder


@pytest.fixture
def venv_plugin(deployment):
    folder = venv_plugin_folder(deployment.plugins_dir, "envwait")
    yield folder.name
    shutil.rmtree(folder)


def test_a_job_waiting_for_its_environment_says_so_and_the_next_does_not_wait(platform, venv_plugin):
    p = platform
    spec = {"framework": venv_plugin, "task_type": "image_classification", "model_name": "fake-a", "epochs": 2,
            "config": {"behaviour": "succeed", "epoch_seconds": 0.1}}
    first = p.create_job(**spec)
    building = p.wait_event(first["id"], "environment_building", timeout=60)
    assert venv_plugin in building["message"] and building["source"] == "platform"
    p.wait_state(first["id"], "SUCCEEDED", timeout=240)
    # recorded by the runner, which a quick trainer's own events (even `done`) can come before
    p.wait_event(first["id"], "trainer_process")
    events = p.events(first["id"])
    kinds = [e["event_type"] for e in events]
    assert kinds.index("environment_building") < kinds.index("environment_ready") < kinds.index("trainer_process")
    # no runner was requested while it built: PENDING -> QUEUED only after the environment was ready
    queued = next(i for i, e in enumerate(events) if e["event_type"] == "state_changed" and e["data"]["to"] == "QUEUED")
    assert kinds.index("environment_ready") < queued
    assert "environment_progress" in kinds  # each build step is news
    ready = next(e for e in p.events(first["id"]) if e["event_type"] == "environment_ready")
    assert ready["data"]["seconds"] >= 0 and "built in" in ready["message"]

    second = p.create_job(**spec)
    p.wait_state(second["id"], "SUCCEEDED", timeout=120)
    assert not [e for e in p.events(second["id"]) if e["event_type"] in ENV_EVENTS]


def test_the_bundled_trainers_are_the_platforms_own(deployment):
    registry = TrainerRegistry([environments.BUNDLED, TEST_TRAINERS])
    names = {m.name for m in environments.bundled(registry)}
    assert {"ultralytics", "timm"} <= names and "withdeps" not in names and "fake" not in names
    assert all(Path(m.folder).parent == environments.BUNDLED for m in environments.bundled(registry))
