"""Storage against a real SeaweedFS S3 server: the embedded server, platform helpers, and the
SDK's transfers (round trips, multipart, background checkpoint uploads)."""
from __future__ import annotations

import hashlib
import os
import time

import pytest

from ray_app.storage import (S3Settings, SeaweedS3Server, ensure_bucket, format_s3_uri, make_client,
                             object_exists, parse_s3_uri, settings_from, upload_dataset)

from sdk import CheckpointError, TrainerSDK


def test_embedded_server_keeps_data_across_restart_and_binds_loopback(tmp_path):
    server = SeaweedS3Server(tmp_path / "s3", buckets=["keep"])
    server.start()
    try:
        first_endpoint, pid = server.endpoint_url, server.pid
        assert first_endpoint.startswith("http://127.0.0.1:") and pid
        listening = os.popen(f"ss -ltnp 2>/dev/null | grep 'pid={pid},'").read()
        assert listening and "0.0.0.0:" not in listening.replace("0.0.0.0:*", "")
        server.client().put_object(Bucket="keep", Key="a/b.txt", Body=b"persisted")
        creds = (server.access_key, server.secret_key)
    finally:
        server.stop()
    assert not server.running
    server2 = SeaweedS3Server(tmp_path / "s3")  # same data dir, new process and ports
    with server2:
        assert (server2.access_key, server2.secret_key) == creds  # same keys for old clients
        assert server2.client().get_object(Bucket="keep", Key="a/b.txt")["Body"].read() == b"persisted"
    assert "secret" not in repr(server2).lower() and creds[1] not in repr(server2)
    assert oct((tmp_path / "s3" / "credentials.json").stat().st_mode & 0o777) == "0o600"



def test_a_port_taken_between_picking_and_binding_is_picked_again(tmp_path, monkeypatch):
    """Ports are picked free and released before weed binds them; another process can take one
    meanwhile (seen in CI: "bind: address already in use" and the server gone). The server starts
    again on fresh ports instead of failing."""
    import socket

    from ray_app.storage import s3_server as s3_module

    taken = socket.socket()  # listening, never answering: weed cannot have it
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    real_free_port, handed = s3_module.free_port, []

    def free_port_that_hands_out_the_taken_one_first(host="127.0.0.1"):
        handed.append(port if not handed else real_free_port(host))
        return handed[-1]

    monkeypatch.setattr(s3_module, "free_port", free_port_that_hands_out_the_taken_one_first)
    try:
        with SeaweedS3Server(tmp_path / "s3", buckets=["taken"]) as server:
            assert server.s3_port != port
            server.client().put_object(Bucket="taken", Key="k", Body=b"v")
            assert server.client().get_object(Bucket="taken", Key="k")["Body"].read() == b"v"
        assert f"port {port} " in server.log_path.read_text()  # the first launch did fail on it
    finally:
        taken.close()


def test_platform_helpers(s3_server, tmp_path):
    class SecretStr:  # what pydantic settings hold
        def __init__(self, v): self._v = v
        def get_secret_value(self): return self._v

    class FakeSettings:
        storage_type = "minio"
        s3_endpoint = s3_server.endpoint
        s3_access_key = SecretStr(s3_server.access_key)
        s3_secret_key = SecretStr(s3_server.secret_key)
        s3_bucket = "platform-bucket"
        s3_region = "us-east-1"

    s = settings_from(FakeSettings())
    assert s.addressing_style == "path" and s.bucket == "platform-bucket"
    assert s3_server.secret_key not in repr(s)
    assert S3Settings(storage_type="r2", endpoint_url="https://x").region_name == "auto"
    client = make_client(FakeSettings())
    ensure_bucket(client, "platform-bucket")
    ensure_bucket(client, "platform-bucket")  # idempotent

    folder = tmp_path / "ds"
    (folder / "images").mkdir(parents=True)
    (folder / "annotations.json").write_text("{}")
    (folder / "images" / "a.png").write_bytes(b"png")
    uri = upload_dataset(client, "platform-bucket", "ds-folder", folder)
    assert uri == "s3://platform-bucket/datasets/ds-folder/"
    assert object_exists(client, uri)
    assert object_exists(client, "s3://platform-bucket/datasets/ds-folder/images/a.png")
    zip_path = tmp_path / "ds.zip"
    zip_path.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    assert upload_dataset(client, "platform-bucket", "ds-zip", zip_path) == "s3://platform-bucket/datasets/ds-zip.zip"
    assert object_exists(client, "s3://platform-bucket/datasets/ds-zip.zip")
    assert not object_exists(client, "s3://platform-bucket/datasets/nope.zip")
    assert not object_exists(client, "s3://platform-bucket/datasets/nope/")
    with pytest.raises(ValueError):
        upload_dataset(client, "platform-bucket", "../evil", folder)
    assert parse_s3_uri("s3://b/k/x.pt") == ("b", "k/x.pt")
    assert format_s3_uri("b", "/k") == "s3://b/k"
    with pytest.raises(ValueError):
        parse_s3_uri("http://b/k")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_sdk_artifact_and_checkpoint_round_trip(s3_env, s3_server, tmp_path):
    src = tmp_path / "metrics.csv"
    src.write_bytes(b"epoch,loss\n1,0.5\n")
    with TrainerSDK(install_signal_handlers=False) as sdk:
        uri = sdk.upload_file(src, "results/metrics.csv", content_type="text/csv")
        assert uri == f"s3://{s3_server.bucket}/artifacts/job-{sdk.job_id}/results/metrics.csv"
        ckpt = tmp_path / "w.pt"
        ckpt.write_bytes(os.urandom(300_000))
        curi = sdk.upload_checkpoint(ckpt, "epoch_3", wait=True)
        assert curi == f"s3://{s3_server.bucket}/checkpoints/job-{sdk.job_id}/epoch-3.pt"
        back = sdk.download_checkpoint(curi, tmp_path / "restored.pt")
        assert back.read_bytes() == ckpt.read_bytes()
        assert sdk.download_checkpoint(uri, tmp_path).read_bytes() == src.read_bytes()
        with pytest.raises(CheckpointError):
            sdk.download_checkpoint(f"s3://{s3_server.bucket}/checkpoints/nope.pt", tmp_path / "x.pt")
        with pytest.raises(CheckpointError):
            sdk.upload_checkpoint(ckpt, "../../evil")
    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=f"artifacts/job-{sdk.job_id}/results/metrics.csv")
    assert head["ContentType"] == "text/csv"


def test_multipart_upload_and_download(s3_env, s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("VTP_S3_MULTIPART_THRESHOLD_MB", "5")
    monkeypatch.setenv("VTP_S3_MULTIPART_CHUNK_MB", "5")
    data = os.urandom(12 * 1024 * 1024 + 123)
    big = tmp_path / "big.pt"
    big.write_bytes(data)
    with TrainerSDK(install_signal_handlers=False) as sdk:
        uri = sdk.upload_checkpoint(big, "last", wait=True)
        key = parse_s3_uri(uri)[1]
        head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=key)
        assert head["ContentLength"] == len(data)
        assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # three parts: multipart was used
        out = sdk.download_checkpoint(uri, tmp_path / "back.pt")
        assert _sha(out.read_bytes()) == _sha(data)
        assert sdk.bytes_downloaded == len(data)


def test_background_checkpoint_uploads_keep_the_newest(s3_env, s3_server, tmp_path):
    ckpt = tmp_path / "last.pt"
    with TrainerSDK(install_signal_handlers=False) as sdk:
        t0 = time.perf_counter()
        versions = []
        for i in range(8):  # a trainer overwriting last.pt every "epoch", quickly
            payload = f"epoch {i} ".encode() * 20_000 + os.urandom(64)
            ckpt.write_bytes(payload)
            versions.append(payload)
            uri = sdk.upload_checkpoint(ckpt, "last")
        # The file changes right after the last submit: the upload must send the snapshot.
        ckpt.write_bytes(b"torn write in progress")
        submit_time = time.perf_counter() - t0
        best = tmp_path / "best.pt"
        best.write_bytes(b"best-weights")
        best_uri = sdk.upload_checkpoint(best, "best")
        reply = sdk.report_completed({"loss": 0.1}, checkpoints={"best": best_uri, "last": uri})
        assert reply["status"] == "succeeded"
        # report_completed waited for the uploads: both objects are there now.
        client = s3_server.client()
        got = client.get_object(Bucket=s3_server.bucket, Key=parse_s3_uri(uri)[1])["Body"].read()
        assert got == versions[-1]
        assert client.get_object(Bucket=s3_server.bucket, Key=parse_s3_uri(best_uri)[1])["Body"].read() == b"best-weights"
    assert submit_time < 2.0  # submitting is a local copy, not an upload


def test_failed_final_upload_fails_the_job(s3_env, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIO_SECRET_KEY", "wrong-secret-key-000")  # S3 refuses every upload
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"x" * 100)
    with TrainerSDK(install_signal_handlers=False) as sdk:
        sdk.upload_checkpoint(ckpt, "best")
        with pytest.raises(CheckpointError, match="best.pt"):
            sdk.report_completed({"loss": 0.1})
        assert sdk._done["status"] == "failed"  # done=failed (CHECKPOINT_ERROR), not succeeded
    assert "wrong-secret-key-000" not in capsys.readouterr().out
