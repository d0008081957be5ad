"""Callback delivery against a real HTTP backend (FastAPI under uvicorn on loopback) that
implements the callback contract with idempotency and can be taken down."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sdk_fake_backend import TOKEN, sdk_env, wait_for

from tests.fixtures.s3 import TRAINERS_DIR

from sdk import CallbackError, DatasetError, ErrorType, TrainerSDK


def fake_loop(sdk: TrainerSDK, epochs: range, work_s: float = 0.01) -> list[float]:
    """A training loop: some work, a heartbeat per epoch, an event every 5th epoch."""
    times = []
    for epoch in epochs:
        t0 = time.perf_counter()
        time.sleep(work_s)
        sdk.report_progress(epoch, 100, metrics={"loss": 1.0 / epoch, "epoch_seen": epoch})
        if epoch % 5 == 0:
            sdk.report_validation(epoch, {"mAP50": epoch / 100})
        times.append(time.perf_counter() - t0)
    return times


def test_outage_does_not_slow_training_and_every_callback_arrives_once(backend, tmp_path):
    sdk = TrainerSDK(sdk_env(backend, tmp_path), install_signal_handlers=False)
    try:
        baseline = fake_loop(sdk, range(1, 21))
        assert sdk.flush(5)
        # Outage: a backend answering 503, then one that hangs, then the port closed, then one
        # that applies callbacks but whose replies are lost (the SDK must retry with the same id).
        outage: list[float] = []
        for mode, epochs in (("down", range(21, 31)), ("slow", range(31, 41)),
                             ("closed", range(41, 51)), ("lost_reply", range(51, 61))):
            if mode == "closed":
                backend.stop()
            else:
                if backend._server is None:
                    backend.start()
                backend.mode = mode
            outage += fake_loop(sdk, epochs)
        # the sender may still be backing off from the closed port: stay in the lost-reply phase
        # until it has really retried an applied callback, so that phase is exercised every time
        assert wait_for(lambda: backend.duplicates > 0, timeout=10)
        backend.mode = "up"
        after = fake_loop(sdk, range(61, 71))
        assert sdk.flush(15), "queued callbacks were not delivered after the backend came back"
    finally:
        sdk.close()

    # Training did not wait: per-iteration time is unchanged (generous factor for a busy 2-core box).
    base = sorted(baseline)[len(baseline) // 2]
    during = sorted(outage + after)
    # a loop that waited on the backend would block for the callback timeout (10 s here) in the
    # "slow" phase: no iteration comes near that; one scheduler hiccup on a loaded machine is
    # tolerated by judging the typical iteration on its 95th percentile
    assert during[-1] < 1.0, (base, during[-1])
    assert during[int(0.95 * len(during))] < max(0.1, 5 * base), (base, during[-5:])
    assert sum(outage) / len(outage) < 2 * (sum(baseline) / len(baseline)) + 0.005

    # Every heartbeat and event arrived exactly once (the server dedupes by event_id; a new id on
    # retry would show up here as a duplicate epoch).
    epochs = [b["epoch"] for b in backend.applied["heartbeat"]]
    assert sorted(epochs) == list(range(1, 71)), Counter(epochs).most_common(3)
    assert epochs == sorted(epochs), "heartbeats out of order"
    events = [b["data"]["epoch"] for b in backend.applied["event"] if b["event_type"] == "validation_complete"]
    assert events == list(range(5, 71, 5))
    assert backend.duplicates > 0, "the lost-reply phase should have caused retries of applied callbacks"
    hb = backend.applied["heartbeat"][-1]
    assert hb["attempt"] == 2 and hb["trace_id"] == "trace-42" and hb["total_epochs"] == 100
    assert hb["progress"] == 70.0 and hb["metrics"]["epoch_seen"] == 70.0
    seqs = [b["seq"] for b in backend.applied["heartbeat"] + backend.applied["event"]]
    assert len(seqs) == len(set(seqs))


def test_heartbeats_coalesce_only_within_an_epoch(backend, tmp_path):
    backend.mode = "down"
    sdk = TrainerSDK(sdk_env(backend, tmp_path), install_signal_handlers=False)
    try:
        for epoch in (1, 2, 3):
            for step in range(1, 51):
                sdk.heartbeat(epoch, 3, step, 50, metrics={"loss": epoch * 100 + step})
        backend.mode = "up"
        assert sdk.flush(10)
    finally:
        sdk.close()
    got = [(b["epoch"], b["step"]) for b in backend.applied["heartbeat"]]
    assert len(got) < 20, "heartbeats of one epoch were not coalesced"
    for epoch in (1, 2, 3):  # the last heartbeat of every epoch arrives, with its metrics
        assert (epoch, 50) in got
    last = {b["epoch"]: b for b in backend.applied["heartbeat"]}
    assert last[2]["metrics"]["loss"] == 250.0 and last[2]["progress"] == pytest.approx(200 / 3, abs=0.01)


def test_should_continue_false_sets_should_stop(backend, tmp_path):
    sdk = TrainerSDK(sdk_env(backend, tmp_path), install_signal_handlers=False)
    try:
        sdk.report_progress(1, 10)
        assert sdk.flush(5)
        assert not sdk.should_stop
        backend.should_continue = False
        sdk.report_progress(2, 10)
        assert wait_for(lambda: sdk.should_stop)
        assert "should_continue=false" in sdk.stop_reason
    finally:
        sdk.close()


def test_heartbeat_409_sets_should_stop_without_retry(backend, tmp_path):
    backend.terminal = True
    sdk = TrainerSDK(sdk_env(backend, tmp_path), install_signal_handlers=False)
    try:
        sdk.report_progress(1, 10)
        assert wait_for(lambda: sdk.should_stop)
        assert sdk.flush(5)
        assert backend.requests["heartbeat"] == 1
    finally:
        sdk.close()


def test_401_is_not_retried(backend, tmp_path, capsys):
    sdk = TrainerSDK(sdk_env(backend, tmp_path, CALLBACK_TOKEN="forged-token-xyz"), install_signal_handlers=False)
    try:
        sdk.report_progress(1, 10)
        sdk.report_started()
        sdk.event("custom", "x")
        assert sdk.flush(5)
        # each callback was sent once, alone or together (POST .../callbacks), and never again
        sent = sum(backend.requests[k] for k in ("heartbeat", "event", "callbacks"))
        assert 1 <= sent <= 3 and not backend.applied["heartbeat"] and not backend.applied["event"]
        time.sleep(0.5)
        assert sum(backend.requests[k] for k in ("heartbeat", "event", "callbacks")) == sent
        t0 = time.monotonic()
        with pytest.raises(CallbackError) as info:
            sdk.report_failed(ErrorType.CONFIG_ERROR, "boom")
        assert time.monotonic() - t0 < 1.0, "a 401 on done must not be retried until the timeout"
        assert backend.requests["done"] == 1
        assert info.value.code == 2 and "401" in info.value.reason
    finally:
        sdk.close()
    out = capsys.readouterr().out
    assert out.count("callback token refused") == 1, out
    assert "forged-token-xyz" not in out  # the token itself is never printed


def test_done_once_retried_with_same_id_and_conflict_not_retried(backend, tmp_path):
    backend.mode = "lost_reply"  # done is applied, the reply is lost, the SDK retries
    sdk = TrainerSDK(sdk_env(backend, tmp_path), install_signal_handlers=False)
    try:
        threading.Timer(0.3, lambda: setattr(backend, "mode", "up")).start()
        reply = sdk.report_completed({"mAP50": 0.9}, checkpoints={"best": "s3://b/checkpoints/job-job42/best.pt"})
        assert reply["status"] == "succeeded" and reply.get("duplicate") is True
        assert len(backend.applied["done"]) == 1 and backend.requests["done"] >= 2
        done = backend.applied["done"][0]
        assert done["status"] == "succeeded" and done["final_metrics"] == {"mAP50": 0.9}
        assert done["artifacts"] == {"best": "s3://b/checkpoints/job-job42/best.pt"}
        assert done["error_type"] is None and done["training_time_seconds"] >= 0
        assert done["attempt"] == 2 and done["trace_id"] == "trace-42"
        # A second report is a no-op in the SDK (done is sent once).
        sent = backend.requests["done"]
        assert sdk.report_failed(ErrorType.UNKNOWN_ERROR, "late")["status"] == "succeeded"
        assert backend.requests["done"] == sent
    finally:
        sdk.close()
    # Another process (e.g. a stale attempt) reporting a different done gets 409: not retried.
    other = TrainerSDK(sdk_env(backend, tmp_path), install_signal_handlers=False)
    try:
        before = backend.requests["done"]
        reply = other.report_failed(ErrorType.NETWORK_ERROR, "x")
        assert reply.get("conflict") is True and backend.requests["done"] == before + 1
    finally:
        other.close()


def test_context_manager_reports_failure_with_error_type(backend, tmp_path):
    with pytest.raises(DatasetError):
        with TrainerSDK(sdk_env(backend, tmp_path), install_signal_handlers=False) as sdk:
            sdk.report_started()
            raise DatasetError("images/img_0003.png is missing")
    done = backend.applied["done"][0]
    assert done["status"] == "failed" and done["error_type"] == "DATASET_ERROR"
    assert "img_0003" in done["error"] and "DatasetError" in done["traceback"]
    assert [e["event_type"] for e in backend.applied["event"]] == ["started"]


TRAINER_SCRIPT = textwrap.dedent("""
    import sys, time
    from sdk import TrainerSDK, run_main

    def main(sdk: TrainerSDK) -> int:
        sdk.report_started()
        sdk.report_progress(1, 2, metrics={"loss": 0.5})
        assert sdk.flush(5)
        print("READY", flush=True)
        mode = sys.argv[1]
        if mode == "wait_stdin":
            sys.stdin.readline()
        elif mode == "wait_stop":
            t0 = time.monotonic()
            while not sdk.should_stop:
                time.sleep(0.02)
                if time.monotonic() - t0 > 20:
                    return 1
            print(f"STOPPED: {sdk.stop_reason}", flush=True)
            sdk.report_failed("UNKNOWN_ERROR", "stopped on request")
            return 0
        sdk.report_completed({"loss": 0.1})
        return 0

    run_main(main)
""")


def start_trainer(env: dict[str, str], mode: str, tmp_path: Path) -> subprocess.Popen:
    script = tmp_path / "train.py"
    script.write_text(TRAINER_SCRIPT)
    full = {k: v for k, v in os.environ.items() if not k.startswith(("BACKEND_", "CALLBACK_"))}
    full.update(env, PYTHONPATH=str(TRAINERS_DIR), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(script), mode], env=full, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    while line and "READY" not in line:
        line = proc.stdout.readline()
    assert "READY" in line, f"trainer did not start (rc={proc.poll()})"
    return proc


def test_backend_gone_at_the_end_exits_2_with_reason(backend, tmp_path):
    proc = start_trainer(sdk_env(backend, tmp_path, VTP_DONE_TIMEOUT_S="1.5"), "wait_stdin", tmp_path)
    backend.stop()  # the backend disappears before the trainer reports done
    t0 = time.monotonic()
    out, _ = proc.communicate("go\n", timeout=30)
    assert proc.returncode == 2, out
    assert time.monotonic() - t0 < 10  # bounded by VTP_DONE_TIMEOUT_S, not forever
    assert "backend unreachable" in out and "done" in out
    assert TOKEN not in out


def test_sigterm_sets_should_stop_and_trainer_exits_cleanly(backend, tmp_path):
    proc = start_trainer(sdk_env(backend, tmp_path), "wait_stop", tmp_path)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "STOPPED: received SIGTERM" in out
    assert backend.applied["done"][0]["status"] == "failed"


def test_second_signal_exits_at_once(backend, tmp_path):
    proc = start_trainer(sdk_env(backend, tmp_path), "wait_stdin", tmp_path)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    assert proc.poll() is None, "the first SIGTERM must only request a stop"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == 128 + signal.SIGTERM
