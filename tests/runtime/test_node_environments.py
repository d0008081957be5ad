"""Trainer environments on a node that joins the cluster (issue 18, point 1): the controller warms
it (the bundled trainers' environments are built there before any job asks; a warm-up that fails
is tried again), and a job whose trainer's environment that node still lacks waits while its
runner builds it there, and says so in its events. The node keeps its environments in a folder of
its own (its `ray start` ran with VTP_TRAINER_VENVS_DIR), as a machine with its own disk would."""

from __future__ import annotations

import shutil
import time

import pytest
import ray

from ray_app.config import CONTROLLER_ACTOR, NAMESPACE
from ray_app.runtime import venvs
from ray_app.runtime.registry import read_manifest
from tests.fixtures.ray_cluster import extra_nodes
from tests.runtime.test_environments import venv_plugin_folder

ENV_EVENTS = ("environment_building", "environment_progress", "environment_ready")


@pytest.fixture
def pooled_venv_plugin(deployment):
    """A venv plugin whose runners need a pool node."""
    folder = venv_plugin_folder(deployment.plugins_dir, "nodeenv", "{num_cpus: 0.5, custom: {vtp_pool: 1}}")
    yield folder
    shutil.rmtree(folder)


def built(root, name: str) -> bool:
    return any(venvs.is_built(d) for d in root.glob(f"{name}-*"))


def test_a_node_that_joins_is_warmed_and_a_job_there_says_when_it_waits(platform, ray_cluster, pooled_venv_plugin,
                                                                         tmp_path):
    p = platform
    manifest = read_manifest(pooled_venv_plugin)
    venvs.build(p.settings.venvs_dir, manifest, log=lambda _: None)  # the controller's node has it
    node_venvs = tmp_path / "node-venvs"
    node_venvs.write_text("a file where the node's folder of environments goes: its first warm-up fails")
    controller = ray.get_actor(CONTROLLER_ACTOR, namespace=NAMESPACE)
    with extra_nodes(ray_cluster, 1, {"vtp_pool": 1}, env={"VTP_TRAINER_VENVS_DIR": str(node_venvs)}) as [node]:
        deadline = time.monotonic() + 120
        while not (state := ray.get(controller.status.remote())["nodes"].get(node.node_id, "")).startswith("failed"):
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
        assert state.startswith("failed (try 1 of 3), trying again in 2s: "), state
        node_venvs.unlink()  # the operator frees the place: the next try builds them
        # warmed: the bundled trainers' environments are built on the node that joined, unasked
        deadline = time.monotonic() + 240
        while not (built(node_venvs, "ultralytics") and built(node_venvs, "timm")):
            assert time.monotonic() < deadline, sorted(x.name for x in node_venvs.glob("*"))
            time.sleep(1)
        assert not built(node_venvs, manifest.name)  # a plugin is built where a job needs it
        deadline = time.monotonic() + 30
        while not (state := ray.get(controller.status.remote())["nodes"][node.node_id]).startswith("warmed"):
            assert time.monotonic() < deadline, state
            time.sleep(0.5)

        spec = {"framework": manifest.name, "task_type": "image_classification", "model_name": "fake-a",
                "epochs": 2, "config": {"behaviour": "succeed", "epoch_seconds": 0.1}}
        first = p.create_job(**spec)
        p.wait_state(first["id"], "SUCCEEDED", timeout=180)
        p.wait_event(first["id"], "trainer_process")
        events = p.events(first["id"])
        kinds = [e["event_type"] for e in events]
        building = next(e for e in events if e["event_type"] == "environment_building")
        assert building["source"] == "platform" and building["data"]["node_id"] == node.node_id
        assert manifest.name in building["message"] and "node" in building["message"]
        assert kinds.index("environment_building") < kinds.index("environment_ready") < kinds.index("trainer_process")
        steps = [e for e in events if e["event_type"] == "environment_progress"]
        assert steps and all(kinds.index("environment_building") < kinds.index("environment_progress")
                             and "on this job's node, step" in e["message"] for e in steps)
        assert max(i for i, k in enumerate(kinds) if k == "environment_progress") < kinds.index("environment_ready")
        process = next(e for e in events if e["event_type"] == "trainer_process")
        assert process["data"]["node_id"] == node.node_id
        assert process["data"]["python"].startswith(str(node_venvs / manifest.name))  # the node's own

        second = p.create_job(**spec)
        p.wait_state(second["id"], "SUCCEEDED", timeout=120)
        assert not [e for e in p.events(second["id"]) if e["event_type"] in ENV_EVENTS]
