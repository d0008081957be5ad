"""A node lost mid-training (issue 13, item 14): two more Ray nodes on this machine form a pool
(custom resource `vtp_pool`, which the trainer's manifest requests); the raylet of the node the
job runs on is killed. The job is retried on the node that is left and resumes from its
checkpoint; nothing is lost, no process of the lost node is left, and the reason names it."""

from __future__ import annotations

import shutil
import time

import psutil
import pytest

from tests.fixtures.platform import TEST_TRAINERS

EPOCHS = 6


@pytest.fixture
def pooled_trainer(deployment):
    """The fake trainer as a plugin whose runners need one `vtp_pool` (so: a pool node)."""
    folder = deployment.plugins_dir / "pooled"
    folder.mkdir()
    shutil.copy(TEST_TRAINERS / "fake" / "train.py", folder / "train.py")
    (folder / "trainer.yaml").write_text(
        "name: pooled\ntask_types: [image_classification]\nmodels: ['*']\n"
        "resources: {num_cpus: 0.5, custom: {vtp_pool: 1}}\n")
    yield folder
    shutil.rmtree(folder)


def test_node_loss_retries_on_a_node_that_is_left_and_resumes(platform, pooled_trainer, pool_nodes):
    p = platform
    job_id = p.create_job(framework="pooled", model_name="fake-net", task_type="image_classification",
                          epochs=EPOCHS, max_attempts=3, config={"epoch_seconds": 1.0})["id"]
    process = p.wait_event(job_id, "trainer_process", timeout=60)["data"]
    lost = next(n for n in pool_nodes if n.node_id == process["node_id"])  # it runs on a pool node
    left = next(n for n in pool_nodes if n is not lost)
    deadline = time.monotonic() + 60
    while len([e for e in p.events(job_id) if e["event_type"] == "checkpoint_saved"]) < 2:
        assert time.monotonic() < deadline, "no checkpoints"
        time.sleep(0.2)
    on_lost_node = lost.processes()
    assert process["pid"] in {q.pid for q in on_lost_node}  # the trainer runs under that raylet
    lost.lose()
    job = p.wait_state(job_id, "SUCCEEDED", timeout=120)

    assert job["attempt"] == 2
    retry = next(e for e in p.events(job_id) if e["event_type"] == "retry")
    reason = retry["data"]["reason"]
    assert f"({lost.node_id[:12]}) was lost" in reason and len(reason) < 250, reason
    second = [e for e in p.events(job_id) if e["event_type"] == "trainer_process" and e["attempt"] == 2]
    assert second[0]["data"]["node_id"] == left.node_id  # retried on the node that is left
    started = [e for e in p.events(job_id) if e["event_type"] == "started" and e["attempt"] == 2]
    resumed = started[0]["data"]["resume_from"]
    assert resumed.startswith(f"s3://bucket/checkpoints/job-{job_id}/epoch-"), resumed
    resumed_epoch = int(resumed.rsplit("epoch-", 1)[1].split(".")[0])
    # nothing lost: every epoch reported, the second attempt from right after its checkpoint
    metrics = p.api("GET", f"/v1/jobs/{job_id}/metrics").json()["items"]
    assert {m["epoch"] for m in metrics} == set(range(1, EPOCHS + 1))
    assert [m["epoch"] for m in metrics if m["attempt"] == 2] == list(range(resumed_epoch + 1, EPOCHS + 1))
    assert job["final_metrics"]["accuracy"] == pytest.approx(EPOCHS / (EPOCHS + 1))
    # no process of the lost node is left: raylet, agents, runner, trainer
    gone, alive = psutil.wait_procs(on_lost_node, timeout=20)
    assert not alive, [(q.pid, q.name()) for q in alive]
