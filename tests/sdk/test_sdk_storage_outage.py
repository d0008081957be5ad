"""Storage that cannot be reached is infrastructure (DESIGN §11; issue 13, item 10): the SDK
retries a checkpoint upload for VTP_STORAGE_RETRY_S, then fails the attempt as NETWORK_ERROR (the
platform retries it) — not CHECKPOINT_ERROR, which is final. No Ray: the real S3 server behind a
TCP forwarder that the test takes down, and the fake callback backend."""

from __future__ import annotations

import threading
import time

import pytest
from sdk import CheckpointError, StorageError, TrainerSDK
from sdk_fake_backend import TOKEN

from tests.fixtures.forwarder import TcpForwarder


@pytest.fixture
def s3_via_forwarder(s3_env, s3_server, monkeypatch):
    """The SDK talks to S3 through a forwarder the test can take down."""
    port = int(s3_server.endpoint.rsplit(":", 1)[1])
    fwd = TcpForwarder(port)
    monkeypatch.setenv("MINIO_ENDPOINT", f"http://127.0.0.1:{fwd.port}")
    yield fwd
    fwd.close()


def test_upload_survives_an_outage_shorter_than_the_retry_window(s3_via_forwarder, s3_server, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("VTP_STORAGE_RETRY_S", "60")
    ckpt = tmp_path / "last.pt"
    ckpt.write_bytes(b"epoch 3")
    s3_via_forwarder.down()
    threading.Timer(3.0, s3_via_forwarder.up).start()
    with TrainerSDK(install_signal_handlers=False) as sdk:
        uri = sdk.upload_checkpoint(ckpt, "last", wait=True)
    key = uri.split(f"{s3_server.bucket}/", 1)[1]
    assert s3_server.client().get_object(Bucket=s3_server.bucket, Key=key)["Body"].read() == b"epoch 3"


def test_storage_unreachable_past_the_window_fails_as_network_error(s3_via_forwarder, backend, tmp_path,
                                                                    monkeypatch, capsys):
    monkeypatch.setenv("VTP_STORAGE_RETRY_S", "2")
    monkeypatch.setenv("BACKEND_BASE_URL", backend.base_url)
    monkeypatch.setenv("CALLBACK_TOKEN", TOKEN)
    ckpt = tmp_path / "last.pt"
    ckpt.write_bytes(b"epoch 1")
    with TrainerSDK(install_signal_handlers=False) as sdk:
        sdk.upload_checkpoint(ckpt, "last", wait=True)  # storage up: this one makes it
        s3_via_forwarder.down()
        ckpt.write_bytes(b"epoch 2")
        sdk.upload_checkpoint(ckpt, "last")
        with pytest.raises(StorageError, match="storage unreachable") as info:
            sdk.report_completed({"loss": 0.1})
        assert info.value.error_type.value == "NETWORK_ERROR"
    done = backend.applied["done"]
    assert [(d["status"], d["error_type"]) for d in done] == [("failed", "NETWORK_ERROR")]
    saved = [e["data"] for e in backend.applied["event"] if e["event_type"] == "checkpoint_saved"]
    assert len(saved) == 1  # only the upload that made it: the next attempt resumes from it
    assert "storage unreachable during the upload" in capsys.readouterr().out


def test_a_refusal_is_not_retried_and_stays_a_checkpoint_error(s3_env, tmp_path, monkeypatch):
    monkeypatch.setenv("VTP_STORAGE_RETRY_S", "60")
    monkeypatch.setenv("MINIO_SECRET_KEY", "wrong-secret-key-000")  # S3 answers: refused (403)
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"x")
    with TrainerSDK(install_signal_handlers=False) as sdk:
        t0 = time.monotonic()
        with pytest.raises(CheckpointError):
            sdk.upload_checkpoint(ckpt, "best", wait=True)
        assert time.monotonic() - t0 < 20  # not the 60 s window: a refusal would be refused again


def test_resume_download_from_unreachable_storage_is_a_network_error(s3_via_forwarder, s3_server, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("VTP_STORAGE_RETRY_S", "1")
    with TrainerSDK(install_signal_handlers=False) as sdk:
        with pytest.raises(CheckpointError):  # a checkpoint that is not there: final
            sdk.download_checkpoint(f"s3://{s3_server.bucket}/checkpoints/nope.pt", tmp_path / "a.pt")
        s3_via_forwarder.down()
        with pytest.raises(StorageError) as info:  # storage away: the next attempt may reach it
            sdk.download_checkpoint(f"s3://{s3_server.bucket}/checkpoints/nope.pt", tmp_path / "b.pt")
        assert info.value.unreachable and info.value.error_type.value == "NETWORK_ERROR"


def test_the_sdk_heartbeats_for_a_trainer_blocked_waiting_on_storage(s3_via_forwarder, backend, tmp_path,
                                                                     monkeypatch):
    """Issue 31: a plain SDK trainer blocked in upload_checkpoint(wait=True) sent no heartbeat, so
    an outage within the storage window still ended it as silent (TIMEOUT_ERROR, final)."""
    monkeypatch.setenv("VTP_STORAGE_RETRY_S", "30")
    monkeypatch.setenv("VTP_HEARTBEAT_TIMEOUT_S", "2")  # the keep-alive beats every 0.5 s
    monkeypatch.setenv("BACKEND_BASE_URL", backend.base_url)
    monkeypatch.setenv("CALLBACK_TOKEN", TOKEN)
    ckpt = tmp_path / "last.pt"
    ckpt.write_bytes(b"epoch 2")
    with TrainerSDK(install_signal_handlers=False) as sdk:
        sdk.heartbeat(epoch=2, total_epochs=5, metrics={"loss": 0.5})
        assert sdk.flush()
        before = len(backend.applied["heartbeat"])
        s3_via_forwarder.down()
        threading.Timer(4.0, s3_via_forwarder.up).start()
        t0 = time.monotonic()
        sdk.upload_checkpoint(ckpt, "last", wait=True)  # blocks until storage is back
        waited = time.monotonic() - t0
        assert sdk.flush()
        beats = backend.applied["heartbeat"][before:]
        # every beat repeats the trainer's state (epoch 2: no progress claimed), without metrics
        assert len(beats) >= 3 and sdk.keepalive.beats == len(beats), (waited, beats)
        assert {(b["epoch"], b["total_epochs"]) for b in beats} == {(2, 5)} and not any(b.get("metrics") for b in beats)
        beats_after = sdk.keepalive.beats
        time.sleep(1.5)  # nothing waits on storage any more: the keep-alive is quiet
        assert sdk.keepalive.beats == beats_after


def test_every_storage_call_is_retried_the_datasets_head_included(s3_via_forwarder, s3_server, tmp_path,
                                                                  monkeypatch):
    """Issue 31: the dataset's HEAD was not retried, so a second attempt started during an outage
    failed at once on `HEAD s3://.../datasets/<id>.zip ... EndpointConnectionError`."""
    from ray_app.datasets import make_classification
    from ray_app.storage.s3 import upload_dataset

    monkeypatch.setenv("VTP_STORAGE_RETRY_S", "30")
    make_classification(tmp_path / "ds", n_images=4, size=16, seed=1)
    upload_dataset(s3_server.client(), s3_server.bucket, "outage-head-ds", tmp_path / "ds")
    monkeypatch.setenv("DATASET_ID", "outage-head-ds")
    monkeypatch.delenv("DATASET_S3_URI", raising=False)
    monkeypatch.setenv("DATASET_CACHE_DIR", str(tmp_path / "cache"))
    s3_via_forwarder.down()
    threading.Timer(3.0, s3_via_forwarder.up).start()
    with TrainerSDK(install_signal_handlers=False) as sdk:
        root = sdk.download_dataset()
    assert (root / "annotations.json").is_file()
