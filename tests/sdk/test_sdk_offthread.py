"""Training never waits on MLflow, checkpoint uploads or a slow backend, and loses nothing:
a real MLflow sqlite store, the real S3 server (SeaweedFS) and a real HTTP backend."""
from __future__ import annotations

import os
import threading
import time
from collections import Counter

import psutil
import pytest
from sdk_fake_backend import sdk_env

from sdk import TrainerSDK
from sdk.callbacks import absorb_heartbeat
from sdk.mlflow_worker import OrderedWorker
from sdk.storage import parse_s3_uri


# ----- MLflow on one background thread -----
def test_mlflow_calls_run_in_order_off_thread_and_the_run_id_reaches_done(backend, tmp_path, capsys):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a fresh store: its first use costs seconds
    env = sdk_env(backend, tmp_path, MLFLOW_TRACKING_URI=uri, PROJECT_ID="projx", JOB_ID="jobml")
    sdk = TrainerSDK(env, install_signal_handlers=False)
    try:
        calls: list[float] = []
        t0 = time.perf_counter()
        sdk.start_mlflow_run()
        sdk.log_params({"model": "m1", "callback_token": "x", "note": f"has {env['CALLBACK_TOKEN']}"})
        calls.append(time.perf_counter() - t0)
        artifact = tmp_path / "last.txt"
        for epoch in range(1, 21):
            t = time.perf_counter()
            sdk.log_metrics({"loss": 1.0 / epoch, "epoch": epoch}, step=epoch)
            artifact.write_text(f"epoch {epoch}")
            if epoch == 10:
                sdk.log_artifact(artifact)  # logged as it is now, though it changes after
            calls.append(time.perf_counter() - t)
        assert "vtp-mlflow" in [th.name for th in threading.enumerate()]
        assert sdk.mlflow.wait_run_id(60)
        # MLflow runs in a child process of its own, not on this process's GIL
        children = [c for c in psutil.Process().children() if "mlflow_child.py" in " ".join(c.cmdline())]
        assert len(children) == 1 and children[0].is_running()
        to_run_id = time.perf_counter() - t0
        # the training thread got control back at once, though MLflow took seconds to start
        assert max(calls) < min(0.5, to_run_id / 3), (calls, to_run_id)
        reply = sdk.report_completed({"loss": 0.05})
        assert reply["status"] == "succeeded"
        run_id = backend.applied["done"][0]["mlflow_run_id"]
        assert run_id and run_id == sdk.mlflow_run_id
    finally:
        sdk.close()
    assert not children[0].is_running() or children[0].status() == psutil.STATUS_ZOMBIE  # closed with the SDK
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    # done was sent after the queue drained: the run was complete when the job became final
    assert run.info.status == "FINISHED" and run.info.run_name == "job-jobml"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "epoch")] == [
        (e, float(e)) for e in range(1, 21)]
    assert run.data.params == {"model": "m1"}  # no secret by name or by value
    arts = client.list_artifacts(run_id)
    assert [a.path for a in arts] == ["last.txt"]
    local = client.download_artifacts(run_id, "last.txt", str(tmp_path / "dl"))
    assert open(local).read() == "epoch 10"
    assert not list((tmp_path / "tmp").glob("vtp-mlflow-*/*/*")), "artifact snapshots left behind"
    assert env["CALLBACK_TOKEN"] not in capsys.readouterr().out


def test_mlflow_failure_is_logged_once_and_never_fails_training(backend, tmp_path, capsys):
    pytest.importorskip("mlflow")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")  # sqlite cannot create a database below a file
    env = sdk_env(backend, tmp_path, MLFLOW_TRACKING_URI=f"sqlite:///{blocker}/tracking.db")
    with TrainerSDK(env, install_signal_handlers=False) as sdk:
        sdk.start_mlflow_run()
        for epoch in range(1, 6):
            sdk.log_metrics({"loss": 1.0 / epoch}, step=epoch)
        sdk.log_params({"a": 1})
        assert sdk.report_completed({"loss": 0.2})["status"] == "succeeded"
    assert backend.applied["done"][0]["mlflow_run_id"] is None
    out = capsys.readouterr().out
    assert out.count("[WARNING] mlflow start_run failed") == 1, out
    assert out.count("[WARNING] mlflow") == 1, out


def test_ordered_worker_runs_in_order_and_drops_past_its_bound():
    seen: list[int] = []
    gate = threading.Event()
    drops: list[int] = []
    w = OrderedWorker("t-worker", max_items=3, on_drop=lambda: drops.append(1))
    started = threading.Event()
    assert w.submit(lambda: (started.set(), gate.wait()))  # holds the thread so the queue fills
    assert started.wait(5)
    accepted = [w.submit(lambda i=i: seen.append(i)) for i in range(5)]
    assert accepted == [True, True, True, False, False] and w.dropped == 2 and drops == [1]
    assert w.submit(lambda: seen.append(99), force=True)  # ending the run is never dropped
    assert not w.wait(0.05)
    gate.set()
    assert w.wait(5) and seen == [0, 1, 2, 99]
    w.submit(lambda: 1 / 0)  # a failing call does not stop the worker
    w.submit(lambda: seen.append(100))
    assert w.close(5) and seen[-1] == 100 and not w.submit(lambda: None)


# ----- checkpoint uploads: latest wins, the final one is never lost -----
def _payload(i: int, size: int) -> bytes:
    return f"version {i:03d} ".encode() + os.urandom(size)


@pytest.mark.parametrize("finish", ["wait", "close"])
def test_uploads_slower_than_epochs_keep_only_the_newest_and_never_lose_the_final(
        s3_env, s3_server, tmp_path, finish):
    ckpt = tmp_path / "last.pt"
    size = 24 * 1024 * 1024  # an upload takes longer than an "epoch" below
    versions: list[bytes] = []
    sdk = TrainerSDK(install_signal_handlers=False)
    try:
        submits = []
        for i in range(10):
            versions.append(_payload(i, size))
            ckpt.write_bytes(versions[-1])
            t = time.perf_counter()
            uri = sdk.upload_checkpoint(ckpt, "last", wait=(finish == "wait" and i == 9))
            submits.append(time.perf_counter() - t)
        ckpt.write_bytes(b"overwritten after the last submit")
        uploader = sdk._uploader
        assert uploader is not None
    finally:
        sdk.close()
    got = s3_server.client().get_object(Bucket=s3_server.bucket, Key=parse_s3_uri(uri)[1])["Body"].read()
    assert got[:12] == versions[-1][:12] and got == versions[-1]
    # one upload running and one waiting at most: most intermediate versions were never sent
    # (how many depends on this machine's speed: at least one, on any machine)
    assert uploader.superseded >= 1, (uploader.superseded, uploader.uploaded)
    assert uploader.uploaded + uploader.superseded == 10
    assert uploader.errors == {}
    assert sorted(submits)[len(submits) // 2] < 1.0, submits  # a local copy, not an upload
    assert not list((tmp_path / "tmp").rglob("*-last.pt")), "snapshots left behind"


def _object(s3_server, uri: str) -> bytes:
    return s3_server.client().get_object(Bucket=s3_server.bucket, Key=parse_s3_uri(uri)[1])["Body"].read()


def test_uploads_of_a_name_are_spaced_by_the_interval_and_the_newest_goes_next(
        s3_env, s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("VTP_CHECKPOINT_MIN_INTERVAL_S", "5")
    ckpt = tmp_path / "last.pt"
    with TrainerSDK(install_signal_handlers=False) as sdk:
        ckpt.write_bytes(b"epoch 1")
        asked = time.monotonic()  # the first upload starts after this
        uri = sdk.upload_checkpoint(ckpt, "last")  # the first version goes at once
        deadline = time.monotonic() + 10
        while sdk._uploader.uploaded < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        first_done = time.monotonic()
        assert _object(s3_server, uri) == b"epoch 1"
        for epoch in (2, 3, 4):  # epochs shorter than the interval: held, newest replaces older
            ckpt.write_bytes(f"epoch {epoch}".encode())
            sdk.upload_checkpoint(ckpt, "last")
            time.sleep(0.2)
        # the interval counts from the first upload's start: while it is not over, the held
        # versions must not have gone (a first upload slowed by a busy machine can bring the
        # interval's end before this read: then only the order below is checked)
        if time.monotonic() - asked < 4.5:
            assert _object(s3_server, uri) == b"epoch 1", "uploaded before the interval was over"
        while sdk._uploader.uploaded < 2 and time.monotonic() < first_done + 10:
            time.sleep(0.05)
        assert sdk._uploader.uploaded == 2 and sdk._uploader.superseded == 2
        # the interval counts from the first upload's start, not its end (which a slow first
        # upload, a new S3 connection on a busy machine, can put a second later)
        assert time.monotonic() - asked >= 5.0
        assert _object(s3_server, uri) == b"epoch 4"
        assert sdk.wait_for_uploads(10) == {}


def test_waiting_for_uploads_sends_a_spaced_snapshot_at_once(s3_env, s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("VTP_CHECKPOINT_MIN_INTERVAL_S", "600")
    ckpt = tmp_path / "last.pt"
    sdk = TrainerSDK(install_signal_handlers=False)
    try:
        ckpt.write_bytes(b"epoch 1")
        uri = sdk.upload_checkpoint(ckpt, "last")
        ckpt.write_bytes(b"epoch 2")
        sdk.upload_checkpoint(ckpt, "last")  # held for 600 s, unless someone waits
        t = time.monotonic()
        assert sdk.wait_for_uploads(30) == {}
        assert time.monotonic() - t < 20
        assert _object(s3_server, uri) == b"epoch 2"
        ckpt.write_bytes(b"epoch 3")  # spacing applies again after the wait
        sdk.upload_checkpoint(ckpt, "last")
        time.sleep(1.0)
        assert _object(s3_server, uri) == b"epoch 2"
    finally:
        sdk.close()  # the final version is never lost
    assert _object(s3_server, uri) == b"epoch 3"


def test_uploads_of_different_names_are_independent(s3_env, s3_server, tmp_path):
    with TrainerSDK(install_signal_handlers=False) as sdk:
        uris = {}
        for name in ("epoch-1", "epoch-2", "best", "last"):
            p = tmp_path / f"{name}.bin"
            p.write_bytes(name.encode() * 1000)
            uris[name] = sdk.upload_checkpoint(p, name)
        assert sdk.wait_for_uploads(30) == {}
    client = s3_server.client()
    for name, uri in uris.items():
        assert client.get_object(Bucket=s3_server.bucket, Key=parse_s3_uri(uri)[1])["Body"].read() == name.encode() * 1000


# ----- a backlog of callbacks drains in fewer requests, each event applied once -----
def test_absorb_heartbeat_equals_applying_both():
    old = {"event_id": "a", "seq": 1, "epoch": 2, "total_epochs": 5, "step": 3, "total_steps": 4,
           "progress": 30.0, "metrics": {"loss": 1.0, "x": 2.0}}
    new = {"event_id": "b", "seq": 2, "epoch": 2, "total_epochs": 5, "step": None, "total_steps": 4,
           "progress": 35.0, "metrics": {"loss": 0.5}}
    got = absorb_heartbeat(old, new)
    assert got == {**new, "step": 3, "metrics": {"loss": 0.5, "x": 2.0}}
    assert absorb_heartbeat({**old, "metrics": {}}, {**new, "epoch": 3})["metrics"] == {"loss": 0.5}


def test_backlog_drains_with_fewer_requests_and_every_event_once(backend, tmp_path):
    backend.delay = 0.15  # a slow but working backend: callbacks back up behind it
    sdk = TrainerSDK(sdk_env(backend, tmp_path), install_signal_handlers=False)
    submitted = Counter()
    try:
        t0 = time.perf_counter()
        for epoch in range(1, 11):
            for step in range(1, 5):  # step beats with running losses, and a liveness beat
                sdk.heartbeat(epoch, 10, step, 4, metrics={f"train_loss_s{step}": epoch + step / 10})
                sdk.heartbeat(epoch, 10, step, 4)
                submitted["heartbeat"] += 2
            sdk.heartbeat(epoch, 10, 4, 4, metrics={"mAP50": epoch / 10})
            sdk.report_validation(epoch, {"mAP50": epoch / 10})
            sdk.event("checkpoint_saved", f"epoch {epoch}", data={"epoch": epoch})
            sdk.heartbeat(epoch, 10, 4, 4)  # liveness during the upload
            submitted["heartbeat"] += 2
            submitted["event"] += 2
        loop_s = time.perf_counter() - t0
        assert loop_s < 1.0, loop_s  # the loop never waited on the backend
        reply = sdk.done("succeeded", final_metrics={"mAP50": 1.0})
        assert reply["status"] == "succeeded"
    finally:
        sdk.close()
    events = backend.applied["event"]
    assert [(e["event_type"], e["data"]["epoch"]) for e in events] == [
        (kind, epoch) for epoch in range(1, 11) for kind in ("validation_complete", "checkpoint_saved")]
    assert backend.duplicates == 0 and len(backend.applied["done"]) == 1
    hbs = backend.applied["heartbeat"]
    assert len(hbs) < submitted["heartbeat"] / 2, (len(hbs), submitted)
    # every epoch's metrics arrived, merged as the backend merges them per epoch
    per_epoch: dict[int, dict[str, float]] = {}
    for b in hbs:
        per_epoch.setdefault(b["epoch"], {}).update(b["metrics"])
    for epoch in range(1, 11):
        assert per_epoch[epoch] == {**{f"train_loss_s{s}": epoch + s / 10 for s in range(1, 5)},
                                    "mAP50": epoch / 10}, (epoch, per_epoch.get(epoch))
    assert [b["epoch"] for b in hbs] == sorted(b["epoch"] for b in hbs)
    assert hbs[-1]["progress"] == 100.0
    seqs = [b["seq"] for b in hbs + events]
    assert len(seqs) == len(set(seqs))


def _slow_backlog(sdk: TrainerSDK, epochs: int) -> None:
    """What an Ultralytics epoch sends: metrics, validation, a checkpoint event; fast epochs."""
    for epoch in range(1, epochs + 1):
        sdk.heartbeat(epoch, epochs, 4, 4, metrics={"loss": 1 / epoch})
        sdk.report_validation(epoch, {"mAP50": epoch / epochs})
        sdk.event("checkpoint_saved", f"epoch {epoch}", data={"epoch": epoch})


@pytest.mark.parametrize("batch_route", [True, False], ids=["batched", "older-backend"])
def test_a_slow_backend_gets_the_backlog_in_few_requests_each_callback_once(tmp_path, batch_route):
    """2 s a request would make 45 queued callbacks a 90 s drain one by one; together they take a
    few requests, in order, each applied once. A backend without the batch route (404) gets them
    one by one, still each once and in order."""
    from sdk_fake_backend import FakeBackend

    backend = FakeBackend(batch=batch_route)
    backend.start()
    backend.delay = 0.3 if batch_route else 0.02
    sdk = TrainerSDK(sdk_env(backend, tmp_path), install_signal_handlers=False)
    try:
        t0 = time.perf_counter()
        _slow_backlog(sdk, 15)
        assert time.perf_counter() - t0 < 1.0  # the loop never waited
        assert sdk.flush(10)
        reply = sdk.done("succeeded", final_metrics={"mAP50": 1.0})
        assert reply["status"] == "succeeded"
    finally:
        sdk.close()
        backend.stop()
    events = backend.applied["event"]
    assert [(e["event_type"], e["data"]["epoch"]) for e in events] == [
        (kind, epoch) for epoch in range(1, 16) for kind in ("validation_complete", "checkpoint_saved")]
    assert [h["epoch"] for h in backend.applied["heartbeat"]] == list(range(1, 16))
    assert backend.duplicates == 0
    if batch_route:
        assert backend.requests["callbacks"] + backend.requests["heartbeat"] + backend.requests["event"] <= 6
    else:
        assert backend.requests["callbacks"] == 1  # tried once, then one by one
        assert backend.requests["event"] == 30


@pytest.mark.parametrize("batch_done", [True, False], ids=["done-in-batch", "older-backend"])
def test_done_goes_with_the_last_queued_callbacks(tmp_path, batch_done):
    """A trainer ending behind a slow backend: what is still queued and `done` go in one request
    (one round trip at the end, not two), done after them. A backend whose batch route does not
    take done (422) gets the rest as a batch, then done alone; each callback once either way."""
    from sdk_fake_backend import FakeBackend, wait_for

    backend = FakeBackend(batch_done=batch_done)
    backend.start()
    # long enough that the rest is still queued when done comes, however busy the machine (at
    # 0.5 s a loaded CI machine once sent the backlog before this thread reached done)
    backend.delay = 2.0
    # without the last-epoch hold (tested below), which would keep even the first one back
    sdk = TrainerSDK(sdk_env(backend, tmp_path, VTP_CALLBACK_LINGER_S="0"), install_signal_handlers=False)
    try:
        # the first goes out at once; the rest wait behind its 2 s. They are queued once the first
        # is at the backend: a sender thread that woke late on a loaded machine had taken all of
        # them in its first request, and done then went alone (CI: batched_done 0)
        sdk.heartbeat(1, 3, 4, 4, metrics={"loss": 1.0})
        assert wait_for(lambda: sum(backend.requests.values()) == 1, timeout=10)
        sdk.report_validation(1, {"mAP50": 1 / 3})
        sdk.event("checkpoint_saved", "epoch 1", data={"epoch": 1})
        for epoch in (2, 3):
            sdk.heartbeat(epoch, 3, 4, 4, metrics={"loss": 1 / epoch})
            sdk.report_validation(epoch, {"mAP50": epoch / 3})
            sdk.event("checkpoint_saved", f"epoch {epoch}", data={"epoch": epoch})
        reply = sdk.done("succeeded", final_metrics={"mAP50": 1.0})
        assert reply["status"] == "succeeded" and not reply.get("duplicate")
    finally:
        sdk.close()
        backend.stop()
    assert len(backend.applied["event"]) == 6 and [h["epoch"] for h in backend.applied["heartbeat"]] == [1, 2, 3]
    assert len(backend.applied["done"]) == 1 and backend.duplicates == 0
    if batch_done:
        assert backend.batched_done == 1 and backend.requests["done"] == 0
        # the first request, then the rest with done (one, if the sender woke after done came)
        assert backend.requests["callbacks"] + backend.requests["heartbeat"] + backend.requests["event"] <= 2
    else:
        assert backend.batched_done == 0 and backend.requests["done"] == 1


def test_a_batch_whose_reply_is_lost_is_retried_and_applied_once(backend, tmp_path):
    backend.mode = "lost_reply"  # applied, then answered 503: the SDK must retry with the same keys
    backend.delay = 0.2
    # no last-epoch hold: the backlog's batches must go out while their replies are being lost
    sdk = TrainerSDK(sdk_env(backend, tmp_path, VTP_CALLBACK_LINGER_S="0"), install_signal_handlers=False)
    try:
        _slow_backlog(sdk, 5)
        time.sleep(1.0)
        backend.mode = "up"
        assert sdk.flush(10)
    finally:
        sdk.close()
    assert len(backend.applied["event"]) == 10 and len(backend.applied["heartbeat"]) == 5
    assert backend.duplicates > 0  # the retries came, and were recognised


def _requests(backend) -> int:
    return sum(backend.requests.values())


def test_the_last_epochs_callbacks_wait_to_go_with_done(tmp_path):
    """From the last epoch's first heartbeat, callbacks are held to ride with done: at the end no
    request is in flight for done to wait behind (one round trip at the end, however slow the
    backend), and they arrive in order, done after them."""
    from sdk_fake_backend import FakeBackend

    backend = FakeBackend()
    backend.start()
    backend.delay = 0.3
    sdk = TrainerSDK(sdk_env(backend, tmp_path), install_signal_handlers=False)
    try:
        for epoch in (1, 2):  # before the last epoch, callbacks go as they come
            sdk.heartbeat(epoch, 3, 0, 4)
            sdk.event("checkpoint_saved", f"epoch {epoch}", data={"epoch": epoch})
            assert sdk.flush(5)
        before = _requests(backend)
        sdk.heartbeat(3, 3, 0, 4)  # the last epoch begins
        sdk.report_validation(3, {"mAP50": 0.5})
        sdk.event("checkpoint_saved", "epoch 3", data={"epoch": 3})
        time.sleep(1.0)  # three requests' time: without the hold they would have gone
        assert _requests(backend) == before
        assert sdk.done("succeeded", final_metrics={"mAP50": 0.5})["status"] == "succeeded"
    finally:
        sdk.close()
        backend.stop()
    assert _requests(backend) == before + 1 and backend.batched_done == 1
    assert [e["data"]["epoch"] for e in backend.applied["event"] if e["event_type"] == "checkpoint_saved"] == [1, 2, 3]
    assert [h["epoch"] for h in backend.applied["heartbeat"]] == [1, 2, 3] and backend.duplicates == 0


def test_the_hold_is_bounded_and_a_flush_ends_it(tmp_path):
    from sdk_fake_backend import FakeBackend, wait_for

    backend = FakeBackend()
    backend.start()
    sdk = TrainerSDK(sdk_env(backend, tmp_path, VTP_CALLBACK_LINGER_S="0.5"), install_signal_handlers=False)
    try:
        sdk.heartbeat(10, 10, 1, 4)  # a long last epoch: reports go out once the hold is over
        assert wait_for(lambda: len(backend.applied["heartbeat"]) == 1, timeout=5)
        sdk.event("checkpoint_saved", "mid-epoch", data={"epoch": 10})  # the hold was once
        assert wait_for(lambda: len(backend.applied["event"]) == 1, timeout=2)
    finally:
        sdk.close()
        backend.stop()
    backend2 = FakeBackend()
    backend2.start()
    sdk = TrainerSDK(sdk_env(backend2, tmp_path), install_signal_handlers=False)  # 10 s hold
    try:
        sdk.heartbeat(10, 10, 1, 4)
        t = time.monotonic()
        assert sdk.flush(5) and time.monotonic() - t < 3  # someone waiting ends the hold
        assert len(backend2.applied["heartbeat"]) == 1
    finally:
        sdk.close()
        backend2.stop()
