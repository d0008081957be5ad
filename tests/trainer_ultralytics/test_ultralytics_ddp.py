"""The Ultralytics trainer through Ultralytics' own DDP hand-off (issue 27, ul_ddp.py), on a CPU.

With several GPUs Ultralytics pickles its trainer (cloudpickle), starts `torch.distributed.run`
with one worker per GPU and waits; the platform's callbacks must survive that (ul_ddp.Worker on
rank 0) and this process must finish the job from the worker's account. Ultralytics' DDP needs
CUDA for more than one worker, and this machine has no GPU: the test takes the same path with a
gang of ONE worker on the CPU. train.py runs as the platform runs it, with one override: its
trainer is told what Ultralytics decides for device="0,1" on a GPU machine (ddp, and here a
world of 1). Everything else is real: the pickle, torch.distributed.run, the worker process
rebuilding the trainer, its SDK's callbacks to a real HTTP backend, S3 uploads, the summary, and
the parent's `done`.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from ray_app.datasets import make_detection, zip_dataset
from ray_app.runtime import venvs
from ray_app.runtime.registry import TrainerRegistry
from ray_app.storage.s3 import upload_dataset
from tests.fixtures.s3 import TRAINERS_DIR
from tests.sdk.sdk_fake_backend import TOKEN, FakeBackend

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TRAINER_DIR = REPO / "trainers" / "ultralytics"
VENVS = Path.home() / ".cache" / "vtp-test-venvs"
EPOCHS = 2

# train.py's main with one change: the trainer learns it trains through Ultralytics' DDP
# (trainer.ddp), with one worker (world_size) since this CPU is all there is
DRIVER = r"""
import importlib.util, sys
trainer_dir = sys.argv[1]
sys.path[:0] = [trainer_dir]
spec = importlib.util.spec_from_file_location("ul_train", f"{trainer_dir}/train.py")
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)


class OneWorkerDDP(train.UltralyticsJob):
    def build_trainer(self, trainer_cls, overrides):
        import ul_ddp

        cls = next(c for c in ul_ddp.TRAINERS.values() if issubclass(c, trainer_cls))
        trainer = cls(overrides=overrides)
        trainer.ddp, trainer.world_size = True, 1  # what Ultralytics decides for device="0,1", one worker here
        return trainer


train.UltralyticsJob = OneWorkerDDP
train.run_main(train.main)
"""


@pytest.fixture(scope="module")
def python() -> Path:
    return venvs.python_of(venvs.build(VENVS, TrainerRegistry([REPO / "trainers"]).get("ultralytics")))


@pytest.fixture
def backend():
    b = FakeBackend()
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def dataset_id(s3_server, tmp_path_factory) -> str:
    root = make_detection(tmp_path_factory.mktemp("ul-ddp") / "det", n_images=16, size=64, seed=5)
    ds_id = f"ul-ddp-{uuid.uuid4().hex[:8]}"
    upload_dataset(s3_server.client(), s3_server.bucket, ds_id, zip_dataset(root))
    return ds_id


def job_env(s3_server, backend, dataset_id: str, tmp_path: Path, epochs: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "MLFLOW_TRACKING_URI")}
    env.update(s3_server.sdk_env(tmp_path))
    env.update(PYTHONPATH=str(TRAINERS_DIR), BACKEND_BASE_URL=backend.base_url, CALLBACK_TOKEN=TOKEN,
               FRAMEWORK="ultralytics", TASK_TYPE="object_detection", MODEL_NAME="yolo11n", DATASET_ID=dataset_id,
               EPOCHS=str(epochs), BATCH_SIZE="8", IMAGE_SIZE="64", DEVICE="cpu", NUM_CPUS="2",
               CONFIG=json.dumps({"advanced_config": {"plots": False}}),
               # what the platform gives a single-process job: Ultralytics must not take it for a gang
               WORLD_SIZE="1", RANK="0", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", NODE_RANK="0",
               MASTER_ADDR="127.0.0.1", MASTER_PORT="29400")
    return env


def start(python: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([str(python), "-u", "-c", DRIVER, str(TRAINER_DIR)], env=env, cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_the_callbacks_survive_ultralytics_ddp_hand_off(python, s3_server, backend, dataset_id, tmp_path):
    env = job_env(s3_server, backend, dataset_id, tmp_path, EPOCHS)
    proc = start(python, env, tmp_path)
    try:
        log, _ = proc.communicate(timeout=540)
    finally:
        proc.kill()
    assert proc.returncode == 0, log[-6000:]
    assert "torch.distributed.run" in log and "--nproc_per_node 1" in log  # Ultralytics' own DDP launch
    assert "Ultralytics DDP worker (rank 0 of 1) reports for the job" in log  # the worker's SDK
    assert "training on device cpu with Ultralytics' DDP (1 worker process; rank 0 reports)" in log
    assert not backend.invalid, backend.invalid

    # from the worker: a heartbeat with metrics and a validation per epoch, checkpoints as it saved them
    epochs = sorted({b["epoch"] for b in backend.applied["heartbeat"] if b["metrics"] and b["epoch"]})
    assert epochs == list(range(1, EPOCHS + 1)), backend.applied["heartbeat"][-3:]
    events = backend.applied["event"]
    validations = [e["data"]["epoch"] for e in events if e["event_type"] == "validation_complete"]
    assert validations == list(range(1, EPOCHS + 1))
    assert any(e["event_type"] == "checkpoint_saved" and e["data"]["name"] == "last" for e in events)
    # from this process, once the worker is done: one `done` with the worker's account
    (done,) = backend.applied["done"]
    assert done["status"] == "succeeded", done
    assert done["final_metrics"]["epochs_completed"] == EPOCHS
    assert {"mAP50", "mAP50-95"} <= set(done["final_metrics"]), done["final_metrics"]
    prefix = f"s3://{s3_server.bucket}/checkpoints/job-{env['JOB_ID']}/"
    assert done["artifacts"]["last"] == prefix + "last.pt" and done["artifacts"]["best"] == prefix + "best.pt"
    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=f"checkpoints/job-{env['JOB_ID']}/best.pt")
    assert head["ContentLength"] > 1_000_000


def test_a_cancel_stops_the_ddp_workers_together_at_an_epoch_end(python, s3_server, backend, dataset_id, tmp_path):
    """The cancel reaches the rank-0 worker alone (its heartbeat's reply): it stops at the end of
    the epoch, where Ultralytics tells every rank; the parent then ends as a stopped job (no done)."""
    epochs = 40
    proc = start(python, job_env(s3_server, backend, dataset_id, tmp_path, epochs), tmp_path)
    try:
        deadline = time.monotonic() + 300
        while not any(e["event_type"] == "validation_complete" for e in backend.applied["event"]):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-4000:]
            time.sleep(0.1)
        backend.should_continue = False  # what the platform answers once the job is cancelled
        log, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, log[-6000:]
    assert "(every DDP rank together)" in log and "training stopped" in log, log[-3000:]
    assert not backend.applied["done"]  # a cancelled attempt sends no done: the platform records it
    validated = [e["data"]["epoch"] for e in backend.applied["event"] if e["event_type"] == "validation_complete"]
    assert validated and max(validated) < epochs  # stopped early, at an epoch's end
    assert any(e["event_type"] == "checkpoint_saved" and e["data"]["name"] == "last" for e in backend.applied["event"])
