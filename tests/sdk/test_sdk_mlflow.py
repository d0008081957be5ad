"""MLflow helpers: a real local store (sqlite) and the silent no-op without a tracking URI."""
from __future__ import annotations

import pytest

from sdk import TrainerSDK


def test_mlflow_run_holds_params_and_metrics(tmp_path, capsys):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"JOB_ID": "j9", "PROJECT_ID": "proj7", "MLFLOW_TRACKING_URI": uri,
           "CALLBACK_TOKEN": "tok-abcdefgh", "TMP_DIR": str(tmp_path), "TRACE_ID": "trace-9",
           "FRAMEWORK": "ultralytics", "TASK_TYPE": "detection", "MODEL_NAME": "yolo11n", "DATASET_ID": "shapes",
           "DATASET_VERSION": "ab" * 32, "VTP_PLATFORM_VERSION": "0.1.0"}
    with TrainerSDK(env, install_signal_handlers=False) as sdk:
        assert sdk.start_mlflow_run() is None  # queued: MLflow starts on a background thread
        run_id = sdk.start_mlflow_run(wait=True)  # (bounded) wait for the run id
        assert run_id and sdk.mlflow_run_id == run_id
        sdk.log_params({"model": "yolo11n", "epochs": 3, "callback_token": "tok-abcdefgh",
                        "aws_secret_access_key": "zzz", "note": "uses tok-abcdefgh", "opt": {"lr": 0.01}})
        for epoch in (1, 2, 3):
            sdk.log_metrics({"loss": 1.0 / epoch, "metrics/mAP50(B)": epoch / 10, "bad": float("nan")}, step=epoch)
        artifact = tmp_path / "notes.txt"
        artifact.write_text("hi")
        sdk.log_artifact(artifact)
        done = sdk.report_completed({"loss": 0.33})
        assert done["status"] == "succeeded"
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("project-proj7")
    assert exp is not None
    run = client.get_run(run_id)
    assert run.info.run_name == "job-j9" and run.info.experiment_id == exp.experiment_id
    assert run.info.status == "FINISHED"
    assert run.data.params == {"model": "yolo11n", "epochs": "3", "opt.lr": "0.01"}  # no secrets
    tags = {k: v for k, v in run.data.tags.items() if k.startswith("vtp.")}
    assert tags == {"vtp.job_id": "j9", "vtp.attempt": "1", "vtp.trace_id": "trace-9", "vtp.project_id": "proj7",
                    "vtp.framework": "ultralytics", "vtp.task_type": "object_detection", "vtp.model_name": "yolo11n",
                    "vtp.dataset_id": "shapes", "vtp.dataset_version": "ab" * 32, "vtp.platform_version": "0.1.0"}
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, round(m.value, 3)) for m in history] == [(1, 1.0), (2, 0.5), (3, 0.333)]
    assert "metrics/mAP50_B_" in run.data.metrics and "bad" not in run.data.metrics
    assert [a.path for a in client.list_artifacts(run_id)] == ["notes.txt"]
    # A later attempt of the same job resumes the same run.
    with TrainerSDK({**env, "ATTEMPT": "2"}, install_signal_handlers=False) as sdk2:
        assert sdk2.start_mlflow_run(wait=True) == run_id
    assert client.get_run(run_id).data.tags["vtp.attempt"] == "2"  # the run says which attempt wrote last
    assert "tok-abcdefgh" not in capsys.readouterr().out


def test_mlflow_is_a_silent_noop_without_tracking_uri(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    with TrainerSDK({"JOB_ID": "j1", "TMP_DIR": str(tmp_path)}, install_signal_handlers=False) as sdk:
        assert sdk.start_mlflow_run() is None
        sdk.log_params({"a": 1})
        sdk.log_metrics({"loss": 0.1}, step=1)
        sdk.log_artifact(tmp_path / "missing.txt")
        assert sdk.mlflow_run_id is None
    assert list(tmp_path.iterdir()) == []  # no mlruns/ or anything else written
    out = capsys.readouterr().out
    assert "mlflow" not in out.lower()
