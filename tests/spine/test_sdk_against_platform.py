"""Every payload the SDK sends is accepted by the real platform: the trainer SDK's report_* methods
driven against the callback gateway (and its batch route) of the deployed app, every request
answered 2xx, and the job showing what was reported. No training: the `manual` trainer idles
while the test plays its part through the SDK."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.s3 import TRAINERS_DIR  # noqa: F401  (puts the SDK on sys.path)
from sdk import ErrorType, TrainerSDK
from sdk.callbacks import CallbackClient, Reply


class _Recorder:
    """Wraps the SDK's HTTP clients: every request's route and answer, batch items one by one."""

    def __init__(self) -> None:
        self.replies: list[tuple[str, int | None, str]] = []

    def wrap(self, client: CallbackClient) -> None:
        post = client.post

        def recorded(kind: str, body: Any) -> Reply:
            reply = post(kind, body)
            self.replies.append((kind, reply.status, reply.reason))
            if kind == "callbacks" and reply.status == 200:
                for item, result in zip(body["items"], reply.data["results"]):
                    self.replies.append((f"callbacks/{item['kind']}", result["status"], str(result.get("detail"))))
            return reply

        client.post = recorded  # type: ignore[method-assign]

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.replies]

    def refused(self) -> list[tuple[str, int | None, str]]:
        return [r for r in self.replies if r[1] is None or not 200 <= r[1] < 300]


def _sdk(p, job: dict[str, Any], url: str, tmp_path: Path, recorder: _Recorder, **extra: str) -> TrainerSDK:
    s3 = p.settings
    env = {
        "JOB_ID": job["id"], "TRACE_ID": job["trace_id"], "PROJECT_ID": job["project_id"], "ATTEMPT": "1",
        "BACKEND_BASE_URL": url, "CALLBACK_TOKEN": p.token(job["id"]), "FRAMEWORK": job["framework"],
        "TASK_TYPE": "detect", "MODEL_NAME": job["model_name"], "DATASET_ID": job["dataset_id"],
        "EPOCHS": str(job["epochs"]), "TMP_DIR": str(tmp_path / "tmp"), "WORK_DIR": str(tmp_path / "work"),
        "STORAGE_TYPE": "minio", "MINIO_ENDPOINT": s3.s3_endpoint or "", "STORAGE_BUCKET": s3.s3_bucket or "",
        "MINIO_ACCESS_KEY": _secret(s3.s3_access_key), "MINIO_SECRET_KEY": _secret(s3.s3_secret_key),
        "VTP_CALLBACK_BACKOFF_BASE_S": "0.05", "VTP_CALLBACK_BACKOFF_MAX_S": "0.5", "VTP_DONE_TIMEOUT_S": "30",
        **extra,
    }
    sdk = TrainerSDK(env, install_signal_handlers=False)
    recorder.wrap(sdk._sender_client)
    recorder.wrap(sdk._done_client)
    return sdk


def _secret(value: Any) -> str:
    get = getattr(value, "get_secret_value", None)
    return get() if callable(get) else str(value or "")


def test_every_sdk_callback_is_accepted_by_the_platform(gw, tmp_path):
    p, url = gw
    job = p.create_job(epochs=3, task_type="detect")  # Ultralytics' name: accepted as by the SDK
    assert job["task_type"] == "object_detection"
    p.wait_state(job["id"], "QUEUED")
    rec = _Recorder()
    sdk = _sdk(p, job, url, tmp_path, rec, VTP_CALLBACK_LINGER_S="0")
    assert sdk.task_type == "object_detection"
    try:
        sdk.report_started("training", total_epochs=3, note=Path("/not/json"))
        assert sdk.flush(20)
        p.wait_state(job["id"], "RUNNING", timeout=20)
        sdk.report_progress(1, 3, step=2, total_steps=4, metrics={"loss": 0.9, "lr": 0.01})
        assert sdk.flush(20)  # alone in the queue: its own POST .../heartbeat
        sdk.report_progress(1, 3, metrics={"loss": float("nan"), "acc": 0.5, "flag": True})
        for level in ("debug", "info", "warning", "error", "WARN", "critical", "nonsense"):
            sdk.event("level_check", f"a {level} event", level=level, data={"level": level})
        sdk.event("Odd Name!", "coerced to a name the platform takes")
        sdk.report_validation(1, {"mAP50": 0.42, "mAP50-95": float("inf")}, per_class={"cat": 0.5},
                              primary_metric=("mAP50", 0.42), class_names=["cat", "dog"])
        ckpt = tmp_path / "last.pt"
        ckpt.write_bytes(b"weights" * 100)
        last = sdk.upload_checkpoint(ckpt, "last", wait=True)  # real S3 upload, then checkpoint_saved
        assert sdk.flush(20)
        # the batched path: a backlog held back, then sent as one POST .../callbacks
        sdk._sender.hold(30)
        sdk.report_progress(2, 3, metrics={"loss": 0.5})
        sdk.event("dataset_loaded", "between", data={"images": 64})
        sdk.report_progress(3, 3, metrics={"loss": 0.25, "acc": float("-inf")})
        sdk.event("validation_complete", "epoch 3", data={"epoch": 3, "metrics": {"mAP50": 0.7}})
        assert sdk.flush(20)
        assert "callbacks" in rec.kinds()
        sdk.event("checkpoint_saved", "rides with done", data={"checkpoint_path": last, "epoch": 3})
        reply = sdk.report_completed({"loss": 0.25, "best_acc": float("nan")}, checkpoints={"last": last})
        assert reply["status"] == "succeeded" and reply.get("state") == "SUCCEEDED"
    finally:
        sdk.close()
    assert not rec.refused(), rec.refused()
    assert {"event", "heartbeat", "callbacks", "callbacks/heartbeat", "callbacks/event"} <= set(rec.kinds())
    assert any(k in ("done", "callbacks/done") for k in rec.kinds())

    final = p.job(job["id"])
    assert final["state"] == "SUCCEEDED" and final["epoch"] == 3 and final["progress"] == 100.0
    assert final["latest_metrics"] == {"loss": 0.25, "acc": "-Infinity", "lr": 0.01}
    assert final["final_metrics"] == {"loss": 0.25, "best_acc": "NaN"}
    assert final["artifacts"] == {"last": last} and last.endswith(f"checkpoints/job-{job['id']}/last.pt")
    events = [e for e in p.events(job["id"]) if e["source"] == "trainer"]
    levels = [e["level"] for e in events if e["event_type"] == "level_check"]
    assert levels == ["debug", "info", "warning", "error", "warning", "error", "info"]
    types = [e["event_type"] for e in events]
    assert types[0] == "started" and events[0]["data"]["note"] == "/not/json"
    assert "odd_name_" in types and types.count("checkpoint_saved") == 2 and types[-1] == "done"
    validation = next(e for e in events if e["event_type"] == "validation_complete")
    assert validation["data"]["metrics"] == {"mAP50": 0.42, "mAP50-95": "Infinity"}
    platform_events = [e["event_type"] for e in p.events(job["id"]) if e["source"] == "platform"]
    assert "metric_non_finite" in platform_events
    metrics = {m["epoch"]: m["metrics"] for m in p.api("GET", f"/v1/jobs/{job['id']}/metrics").json()["items"]}
    assert metrics[1] == {"loss": "NaN", "lr": 0.01, "acc": 0.5} and metrics[3] == {"loss": 0.25, "acc": "-Infinity"}


@pytest.mark.parametrize("error_type,stored", [(ErrorType.CONFIG_ERROR, "CONFIG_ERROR"),
                                               ("training_error", "FRAMEWORK_ERROR")])
def test_a_failure_reported_by_the_sdk_is_accepted_with_its_error_type(gw, tmp_path, error_type, stored):
    p, url = gw
    job = p.create_job(epochs=2, max_attempts=1)
    p.wait_state(job["id"], "QUEUED")
    rec = _Recorder()
    sdk = _sdk(p, job, url, tmp_path, rec)
    try:
        sdk.report_started()
        sdk.report_progress(1, 2, metrics={"loss": math.inf})
        reply = sdk.report_failed(error_type, "bad \x00 config " + "x" * 70_000, traceback="Traceback\n" * 40_000,
                                  epochs_completed=1)
        assert reply.get("state") == "FAILED"
    finally:
        sdk.close()
    assert not rec.refused(), rec.refused()
    final = p.job(job["id"])
    assert final["state"] == "FAILED" and final["error_type"] == stored
    assert final["error"].startswith("bad \ufffd config") and len(final["error"]) == 65_536
    assert final["final_metrics"] == {"epochs_completed": 1.0}
