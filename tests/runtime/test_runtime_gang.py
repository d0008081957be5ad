"""A job as a gang of ranks across nodes (issue 27): two more Ray nodes on this machine form a
pool (custom resource `vtp_pool`, one per node), and a plugin of the fake trainer that needs one
per worker runs W workers there. Rank 0 reports for the job; the other ranks (tests/trainers/fake:
`other_rank`) say what they were given and live as long as rank 0 trains.

What a user relies on: the ranks are placed all or nothing with torchrun's variables; only rank 0
holds the job's callback token; the job shows where each rank runs and its log each rank's lines;
one rank killed ends the attempt for all and the gang is retried, resuming; cancel ends every
rank's processes; a gang the cluster cannot hold waits QUEUED saying why, then fails at the
placement timeout, leaving no placement group behind."""

from __future__ import annotations

import os
import shutil
import signal
import time

import psutil
import pytest

from tests.fixtures.platform import TEST_TRAINERS
from tests.fixtures.ray_cluster import extra_nodes


@pytest.fixture(scope="module")
def pool_nodes(ray_cluster, deployment):
    """The two pool nodes, started once for this module's tests (each test's gang is ended and
    its placement group removed before the next: the tests assert it)."""
    with extra_nodes(ray_cluster, 2, {"vtp_pool": 1}) as nodes:
        yield nodes


@pytest.fixture
def gang_trainer(deployment):
    folder = deployment.plugins_dir / "ganged"
    folder.mkdir()
    shutil.copy(TEST_TRAINERS / "fake" / "train.py", folder / "train.py")
    (folder / "trainer.yaml").write_text(
        "name: ganged\ntask_types: [image_classification]\nmodels: ['*']\n"
        "resources: {num_cpus: 0.5, custom: {vtp_pool: 1}}\ndistributed: {max_workers: 4}\n")
    yield folder
    shutil.rmtree(folder)


def gang_job(p, workers: int, **fields) -> str:
    return p.create_job(framework="ganged", model_name="fake-net", task_type="image_classification",
                        workers=workers, **fields)["id"]


def rank_process(p, job_id: str, rank: int, attempt: int = 1, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        kind = "trainer_process" if rank == 0 else "rank_process"
        found = [e for e in p.events(job_id) if e["event_type"] == kind and e["attempt"] == attempt
                 and e["data"].get("rank", 0) == rank]
        if found:
            return found[0]["data"]
        assert time.monotonic() < deadline, f"rank {rank} of attempt {attempt} never started"
        time.sleep(0.2)


def gone(pids: list[int], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def placement_groups_of(job_id: str) -> list[str]:
    """The states of the placement groups of the job's attempts that Ray still holds."""
    import ray

    return [pg["state"] for pg in ray.util.placement_group_table().values()
            if f"job-{job_id}:" in (pg.get("name") or "") and pg["state"] != "REMOVED"]


def no_placement_left(job_id: str, timeout: float = 20) -> bool:
    """Once a job is final its runners are ended and their reservation removed (in the
    controller's background, a few seconds at most)."""
    deadline = time.monotonic() + timeout
    while placement_groups_of(job_id):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_two_workers_run_one_rank_per_node_with_rendezvous_and_only_rank_0_reports(platform, gang_trainer,
                                                                                  pool_nodes):
    p = platform
    job_id = gang_job(p, 2, epochs=3, placement_strategy="SPREAD", config={"epoch_seconds": 0.3})
    job = p.wait_state(job_id, "SUCCEEDED", timeout=90)
    assert (job["workers"], job["placement_strategy"]) == (2, "SPREAD")
    ranks = {r["rank"]: r["node_id"] for r in job["ranks"]}
    assert set(ranks) == {0, 1} and ranks[0] != ranks[1]  # one rank per node
    assert set(ranks.values()) == {n.node_id for n in pool_nodes}  # on the pool: what the manifest needs
    logs = p.api("GET", f"/v1/jobs/{job_id}/logs", params={"rank": 1}).json()["items"]
    assert logs and {line["rank"] for line in logs} == {1}
    said = next(line["line"] for line in logs if "ready:" in line["line"])
    leader = rank_process(p, job_id, 0)
    import ray

    address = next(n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == ranks[0])  # rank 0's node
    for given in ("WORLD_SIZE=2", "RANK=1", "LOCAL_RANK=0", "LOCAL_WORLD_SIZE=1", "NODE_RANK=1",
                  f"MASTER_ADDR={address} ", "callback_token=False", "mlflow=False", "NUM_CPUS=0.5"):
        assert given in said, said
    assert "MASTER_PORT=None" not in said and leader["world_size"] == 2
    # rank 0's lines are its own; every line of the job's log says whose it is
    everything = p.api("GET", f"/v1/jobs/{job_id}/logs").json()["items"]
    assert {line["rank"] for line in everything} == {0, 1}
    assert any("fake trainer attempt 1" in line["line"] for line in everything if line["rank"] == 0)
    assert no_placement_left(job_id), placement_groups_of(job_id)


def test_a_killed_rank_ends_the_attempt_for_all_and_the_gang_resumes(platform, gang_trainer, pool_nodes):
    p = platform
    job_id = gang_job(p, 2, epochs=6, max_attempts=3, config={"epoch_seconds": 1.0})
    first = [rank_process(p, job_id, 0), rank_process(p, job_id, 1)]
    deadline = time.monotonic() + 60
    while len([e for e in p.events(job_id) if e["event_type"] == "checkpoint_saved"]) < 2:
        assert time.monotonic() < deadline, "no checkpoints"
        time.sleep(0.2)
    os.kill(first[1]["pid"], signal.SIGKILL)  # rank 1's trainer, on its node
    job = p.wait_state(job_id, "SUCCEEDED", timeout=120)
    assert job["attempt"] == 2
    assert gone([r["pid"] for r in first])  # rank 0 of attempt 1 was ended with it
    retry = next(e for e in p.events(job_id) if e["event_type"] == "retry")
    assert "rank 1's trainer process killed by SIGKILL" in retry["data"]["reason"], retry
    [ended] = job["attempts"][:1]
    assert {r["rank"] for r in ended["ranks"]} == {0, 1}  # the attempt's row: every rank's node and process
    second = [rank_process(p, job_id, 0, attempt=2), rank_process(p, job_id, 1, attempt=2)]
    assert {r["pid"] for r in second}.isdisjoint({r["pid"] for r in first})
    started = [e for e in p.events(job_id) if e["event_type"] == "started" and e["attempt"] == 2]
    assert started[0]["data"]["resume_from"].startswith(f"s3://bucket/checkpoints/job-{job_id}/epoch-")
    metrics = p.api("GET", f"/v1/jobs/{job_id}/metrics").json()["items"]
    assert {m["epoch"] for m in metrics} == set(range(1, 7))  # nothing lost
    assert no_placement_left(job_id), placement_groups_of(job_id)


def test_cancel_stops_every_rank_on_every_node(platform, gang_trainer, pool_nodes):
    p = platform
    job_id = gang_job(p, 2, epochs=50, config={"epoch_seconds": 1.0, "behaviour": "ignore_cancel"})
    ranks = [rank_process(p, job_id, 0), rank_process(p, job_id, 1)]
    p.wait_state(job_id, "RUNNING", timeout=60)
    assert p.api("POST", f"/v1/jobs/{job_id}/cancel").status_code == 200
    job = p.wait_state(job_id, "CANCELLED", timeout=60)
    # CANCELLED only once every rank's process tree is gone (rank 0 ignored the cancel and left a child)
    assert gone([r["pid"] for r in ranks], timeout=5), ranks
    assert job["error"] is None or "cancel" in (job["error"] or "")
    assert no_placement_left(job_id), placement_groups_of(job_id)


def test_a_gang_the_cluster_cannot_hold_waits_saying_why_then_fails_at_the_placement_timeout(
        platform, gang_trainer, pool_nodes):
    p = platform
    job_id = gang_job(p, 3, epochs=2)  # three workers of one vtp_pool each; the pool has two
    deadline = time.monotonic() + 30
    while not (job := p.job(job_id))["wait_reason"]:
        assert job["state"] in ("PENDING", "QUEUED") and time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["state"] == "QUEUED"
    assert "3 workers" in job["wait_reason"] and "vtp_pool=1" in job["wait_reason"], job["wait_reason"]
    job = p.wait_state(job_id, "FAILED", timeout=60)
    assert job["error_type"] == "RESOURCE_ERROR" and "3 workers" in job["error"], job["error"]
    assert no_placement_left(job_id), placement_groups_of(job_id)  # nothing reserved is left behind


def test_a_lost_runner_of_one_rank_ends_the_attempt_for_all_and_names_the_rank(platform, gang_trainer, pool_nodes):
    """A rank's runner actor gone (here: `ray.kill`, as an operator or Ray's memory monitor would):
    its trainer dies with it, rank 0's is ended, and the gang is retried with the rank named."""
    import ray

    from ray_app.config import NAMESPACE
    from ray_app.runtime.runtime_env import runner_name

    p = platform
    job_id = gang_job(p, 2, epochs=5, max_attempts=2, config={"epoch_seconds": 1.0})
    first = [rank_process(p, job_id, 0), rank_process(p, job_id, 1)]
    p.wait_state(job_id, "RUNNING", timeout=60)
    ray.kill(ray.get_actor(runner_name(job_id, 1, rank=1), namespace=NAMESPACE), no_restart=True)
    job = p.wait_state(job_id, "SUCCEEDED", timeout=120)
    assert job["attempt"] == 2
    assert gone([r["pid"] for r in first])
    reason = next(e for e in p.events(job_id) if e["event_type"] == "retry")["data"]["reason"]
    assert reason.startswith("rank 1: the runner actor was killed with ray.kill"), reason
    assert no_placement_left(job_id), placement_groups_of(job_id)
