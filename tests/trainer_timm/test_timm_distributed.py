"""The timm trainer data-parallel, without the platform (issue 27): train.py started as two
processes on loopback with torchrun's rendezvous variables, over Gloo on the CPU, callbacks off
(no BACKEND_BASE_URL: a dry run), the dataset and checkpoints in the test S3 server.

The data: 3 classes of filled shapes at 32 px, 90 images split 72/18 by the SDK's seeded split,
so each of two ranks trains on 36 images an epoch. BATCH_SIZE is the job's: 16 in all, 8 per rank,
so the 2-rank job and the 1-process job on the same seed take the same optimizer steps (5 an
epoch) with the same learning rate; they differ in sample order and in BatchNorm's batches (8
images a rank, 16 in one process), so their losses agree only roughly: the final train loss of
the 2-rank job is within LOSS_TOLERANCE (0.15) of the 1-process job's (measured: see below).
"""
from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from ray_app.datasets import make_classification
from ray_app.ports import free_port
from ray_app.runtime import venvs
from ray_app.runtime.registry import TrainerRegistry
from ray_app.storage.s3 import upload_dataset
from tests.fixtures.s3 import TRAINERS_DIR

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "trainers" / "timm" / "train.py"
VENVS = Path.home() / ".cache" / "vtp-test-venvs"  # what the platform fixtures use
EPOCHS = 3
TRAIN_IMAGES = 72  # of 90: the SDK's seeded 20 % validation split
# |final train loss, 2 ranks - 1 process| <= LOSS_TOLERANCE: the two runs see the data in another
# order and normalise BatchNorm over 8 rather than 16 images. Measured on this 2-core machine, seeds
# 0-4 (the loss falls from ~0.9-1.1 to ~0.5-0.6 in both): final losses 0.599/0.560, 0.567/0.512,
# 0.556/0.528, 0.546/0.504, 0.569/0.506 (2 ranks/1 process), differences 0.03-0.06, the 2-rank
# run always a little higher. 0.15 is over twice the largest.
LOSS_TOLERANCE = 0.15
EPOCH_LINE = re.compile(r"\] rank (\d+)/(\d+) epoch (\d+): trained on (\d+) samples$")
CHECKSUM_LINE = re.compile(r"\] rank (\d+)/(\d+) weights sha256 ([0-9a-f]{64})$")
LOSS_LINE = re.compile(r"\] epoch (\d+)/\d+ train_loss=([0-9.]+) ")


@pytest.fixture(scope="module")
def python() -> Path:
    registry = TrainerRegistry([REPO / "trainers"])
    return venvs.python_of(venvs.build(VENVS, registry.get("timm")))


@pytest.fixture(scope="module")
def dataset_id(s3_server, tmp_path_factory) -> str:
    ds_id = f"timm-ddp-{uuid.uuid4().hex[:6]}"
    root = make_classification(tmp_path_factory.mktemp("ddp-ds") / "ds", n_images=90, size=32,
                               classes=("circle", "square", "triangle"), seed=3)
    upload_dataset(s3_server.client(), s3_server.bucket, ds_id, root)
    return ds_id


def job_env(s3_server, dataset_id: str, tmp: Path, job_id: str, **extra: str) -> dict[str, str]:
    """The contract's environment of one job (shared by its ranks: one JOB_ID, one WORK_DIR)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "BACKEND_BASE_URL",
                                                            "CALLBACK_URL", "CALLBACK_TOKEN", "MLFLOW_TRACKING_URI")}
    env.update(s3_server.sdk_env(tmp))
    env.update(JOB_ID=job_id, TRACE_ID=job_id, PYTHONPATH=str(TRAINERS_DIR), HF_HUB_OFFLINE="1",
               FRAMEWORK="timm", TASK_TYPE="image_classification", MODEL_NAME="test_resnet", DATASET_ID=dataset_id,
               EPOCHS=str(EPOCHS), BATCH_SIZE="16", LEARNING_RATE="0.01", IMAGE_SIZE="32", DEVICE="cpu",
               NUM_CPUS="1", VTP_DIST_TIMEOUT_S="120",
               CONFIG=json.dumps({"advanced_config": {"seed": 0, "scale": [0.6, 1.0], "amp": False}}))
    env.update(extra)
    return env


def start_ranks(python: Path, env: dict[str, str], world: int, cwd: Path) -> list[subprocess.Popen]:
    """train.py as ``world`` ranks of one job, each with torchrun's variables (one node)."""
    port = free_port()
    procs = []
    for rank in range(world):
        rank_env = {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
                    "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world), "NODE_RANK": "0"}
        procs.append(subprocess.Popen([str(python), str(TRAIN)], env=rank_env, cwd=cwd, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = 600, before: list[list[str]] | None = None,
           codes: tuple[int, ...] | None = None) -> list[list[str]]:
    """Each rank's stdout lines (``before``: what was already read) once all exited with
    ``codes`` (0 for all by default); none is left running."""
    outs = []
    deadline = time.monotonic() + timeout
    try:
        for rank, proc in enumerate(procs):
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            lines = (before[rank] if before else []) + out.splitlines()
            expected = codes[rank] if codes else 0
            assert proc.returncode == expected, f"rank {rank} exited {proc.returncode}:\n" + "\n".join(lines[-60:])
            outs.append(lines)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outs


def run_job(python: Path, env: dict[str, str], world: int, cwd: Path) -> list[list[str]]:
    """train.py as ``world`` ranks of one job, to the end; each rank's stdout lines, in rank order."""
    return finish(start_ranks(python, env, world, cwd))


def read_until(proc: subprocess.Popen, pattern: str, timeout: float = 300) -> list[str]:
    """``proc``'s lines up to the first that holds ``pattern``."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"exited before {pattern!r}:\n" + "\n".join(lines[-60:]))
        lines.append(line.rstrip("\n"))
        if pattern in line:
            return lines
    raise AssertionError(f"no {pattern!r} in {timeout}s")


def parsed(lines: list[str], pattern: re.Pattern) -> list[tuple[str, ...]]:
    return [m.groups() for m in map(pattern.search, lines) if m]


def train_losses(lines: list[str]) -> list[float]:
    return [float(loss) for _, loss in parsed(lines, LOSS_LINE)]


def checkpoint(s3_server, job_id: str, name: str) -> dict:
    import torch

    body = s3_server.client().get_object(Bucket=s3_server.bucket, Key=f"checkpoints/job-{job_id}/{name}.pt")["Body"]
    return torch.load(io.BytesIO(body.read()), map_location="cpu", weights_only=True)


def checksum(state: dict) -> str:
    from sdk.distributed import state_checksum

    return state_checksum(state)


def test_two_ranks_split_the_data_end_identical_and_learn_as_one_process(python, s3_server, dataset_id, tmp_path):
    job_id = f"ddp{uuid.uuid4().hex[:8]}"
    env = job_env(s3_server, dataset_id, tmp_path / "job", job_id)
    rank0, rank1 = run_job(python, env, 2, tmp_path)

    # each rank trained on its half of the 72 training images, every epoch
    for rank, lines in ((0, rank0), (1, rank1)):
        assert parsed(lines, EPOCH_LINE) == [(str(rank), "2", str(e), str(TRAIN_IMAGES // 2))
                                             for e in range(1, EPOCHS + 1)], lines[-30:]
    assert any("rank 1 of 2: rank 0 reports for the job" in line for line in rank1)
    # the same weights on both ranks at the end (parameters all-reduced, buffers broadcast)
    (r0, w0, sum0), = parsed(rank0, CHECKSUM_LINE)
    (r1, w1, sum1), = parsed(rank1, CHECKSUM_LINE)
    assert (r0, w0, r1, w1) == ("0", "2", "1", "2") and sum0 == sum1
    # rank 0 alone reports (in a dry run: logs) the epochs, and wrote the checkpoint: the unwrapped
    # model's state dict, the very weights both ranks ended with
    assert len(train_losses(rank0)) == EPOCHS and not train_losses(rank1)
    last = checkpoint(s3_server, job_id, "last")
    assert last["epoch"] == EPOCHS and not any(k.startswith("module.") for k in last["model"])
    assert checksum(last["model"]) == sum0

    # one process on the same seed and the same (global) batch: the loss falls alike
    single = run_job(python, job_env(s3_server, dataset_id, tmp_path / "single", f"one{uuid.uuid4().hex[:8]}",
                                     NUM_CPUS="2"), 1, tmp_path)[0]
    assert parsed(single, EPOCH_LINE) == [("0", "1", str(e), str(TRAIN_IMAGES)) for e in range(1, EPOCHS + 1)]
    assert len(parsed(single, CHECKSUM_LINE)) == 1 and parsed(single, CHECKSUM_LINE)[0][:2] == ("0", "1")
    two, one = train_losses(rank0), train_losses(single)
    print(f"train loss per epoch: 2 ranks {two}, 1 process {one}")
    assert two[-1] < two[0] and one[-1] < one[0], (two, one)
    assert abs(two[-1] - one[-1]) <= LOSS_TOLERANCE, (two, one)

    # the 2-rank checkpoint resumes in one process (any world size): it trains the 4th epoch only
    resume_from = f"s3://{s3_server.bucket}/checkpoints/job-{job_id}/last.pt"
    resumed = run_job(python, job_env(s3_server, dataset_id, tmp_path / "resumed", job_id, EPOCHS=str(EPOCHS + 1),
                                      RESUME_FROM=resume_from), 1, tmp_path)[0]
    assert parsed(resumed, EPOCH_LINE) == [("0", "1", str(EPOCHS + 1), str(TRAIN_IMAGES))], resumed[-30:]
    assert checkpoint(s3_server, job_id, "last")["epoch"] == EPOCHS + 1


def test_a_cancel_heard_by_rank_0_alone_stops_both_ranks_at_the_same_step(python, s3_server, dataset_id, tmp_path):
    """SIGTERM (what cancel ends in) to rank 0 only: rank 1 learns it through any_rank, both leave
    the loop together, rank 0 saves `last`, both exit 0 (none waits for the other until a timeout)."""
    job_id = f"stop{uuid.uuid4().hex[:8]}"
    procs = start_ranks(python, job_env(s3_server, dataset_id, tmp_path / "job", job_id, EPOCHS="40"), 2, tmp_path)
    try:
        seen0 = read_until(procs[0], "rank 0/2 epoch 2: trained on")
        procs[0].send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        rank0, rank1 = finish(procs, timeout=120, before=[seen0, []])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert time.monotonic() - t0 < 60  # not the collective timeout (120 s)
    epochs0, epochs1 = parsed(rank0, EPOCH_LINE), parsed(rank1, EPOCH_LINE)
    assert [e[2] for e in epochs0] == [e[2] for e in epochs1] and len(epochs0) < 40  # the same epochs on both
    assert not any("ends: failed" in line or "[ERROR]" in line for line in rank0 + rank1), rank0[-20:] + rank1[-20:]
    stopped = next(line for line in rank0 if "event stopped:" in line)
    assert f"stopped after {len(epochs0)} of 40 epochs" in stopped
    assert checkpoint(s3_server, job_id, "last")["epoch"] == len(epochs0)


def test_a_rank_killed_mid_training_fails_rank_0_as_infrastructure(python, s3_server, dataset_id, tmp_path):
    """The gang's fault: rank 0 reports INFRASTRUCTURE_ERROR (the platform retries the gang), not
    the FRAMEWORK_ERROR that would fail the job for good."""
    procs = start_ranks(python, job_env(s3_server, dataset_id, tmp_path / "job", f"kill{uuid.uuid4().hex[:8]}",
                                        EPOCHS="40"), 2, tmp_path)
    try:
        read_until(procs[1], "rank 1/2 epoch 1: trained on")
        procs[1].kill()
        rank0, _ = finish(procs, timeout=120, codes=(1, -signal.SIGKILL))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    done = next(line for line in rank0 if "reporting done: failed" in line)
    assert "(INFRASTRUCTURE_ERROR: " in done, rank0[-20:]
