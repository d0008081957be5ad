"""A distributed job's ranks through the SDK (issue 27): rank 0 speaks for the job exactly as a
single process does; every other rank is silent (no callbacks, no keep-alive, no MLflow, no
uploads) but logs, and still reads the dataset and the resume checkpoint."""
from __future__ import annotations

import time

import pytest
from sdk_fake_backend import sdk_env, wait_for

from sdk import ConfigError, NotMainRankError, TrainerSDK


def rank_env(backend, tmp_path, rank: int, world: int = 2, **extra: str) -> dict[str, str]:
    # the token and the MLflow URI are given on purpose: the platform gives a rank > 0 neither,
    # but a silent rank must stay silent whatever it was handed
    return sdk_env(backend, tmp_path, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                   MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db", VTP_HEARTBEAT_TIMEOUT_S="2",
                   **extra)


def whole_run(sdk: TrainerSDK) -> dict:
    """What a trainer does from start to done, waiting where the SDK would heartbeat."""
    sdk.report_started(total_epochs=2)
    sdk.start_mlflow_run()
    sdk.log_params({"lr": 0.1})
    for epoch in (1, 2):
        sdk.heartbeat(epoch, 2, 1, 4)
        sdk.report_progress(epoch, 2, metrics={"loss": 1.0 / epoch})
        sdk.report_validation(epoch, {"top1": 0.5 * epoch})
        sdk.log_metrics({"loss": 1.0 / epoch}, step=epoch)
        sdk.event("custom_thing", "hello")
    with sdk.keepalive.waiting():  # where the SDK waits on storage or MLflow
        time.sleep(1.5)
    assert sdk.flush(5)
    return sdk.report_completed({"top1": 1.0})


def test_a_rank_above_zero_sends_nothing_even_with_a_token(backend, tmp_path, capsys):
    with TrainerSDK(rank_env(backend, tmp_path, rank=1), install_signal_handlers=False) as sdk:
        assert not sdk.is_main and sdk.env.silent and (sdk.env.rank, sdk.env.world_size) == (1, 2)
        reply = whole_run(sdk)
        assert reply["status"] == "succeeded" and reply.get("silent") is True
        assert not sdk.should_stop  # never from the backend: a gang's stop is sdk.distributed.any_rank
        assert not sdk.mlflow.enabled and sdk.mlflow_run_id is None
        assert sdk.keepalive.beats == 0 and sdk.keepalive._thread is None
        # checkpoints and artifacts are rank 0's: refused here, not raced
        (tmp_path / "last.pt").write_bytes(b"x")
        with pytest.raises(NotMainRankError, match="rank 1 of 2 cannot upload checkpoint 'last'"):
            sdk.upload_checkpoint(tmp_path / "last.pt", "last")
        with pytest.raises(NotMainRankError):
            sdk.upload_file(tmp_path / "last.pt", "plots/x.png")
        assert sdk.wait_for_uploads() == {}
        sdk.log("INFO", "my own line")
    time.sleep(0.5)
    assert sum(backend.requests.values()) == 0, backend.requests
    lines = capsys.readouterr().out.splitlines()
    assert "[TRACE:trace-42] [INFO] rank 1 of 2: rank 0 reports for the job" in lines
    assert "[TRACE:trace-42] [INFO] my own line" in lines  # logs as any trainer (the platform tags the rank)
    assert not any("dry run" in line or "heartbeat" in line or "event " in line for line in lines), lines
    assert not (tmp_path / "mlflow.db").exists()


def test_a_failing_silent_rank_logs_its_outcome_and_sends_no_done(backend, tmp_path, capsys):
    with pytest.raises(RuntimeError):
        with TrainerSDK(rank_env(backend, tmp_path, rank=3, world=4), install_signal_handlers=False):
            raise RuntimeError("boom on rank 3")
    time.sleep(0.3)
    assert sum(backend.requests.values()) == 0
    out = capsys.readouterr().out
    assert "rank 3 of 4 ends: failed (UNKNOWN_ERROR: boom on rank 3); rank 0 reports for the job" in out


def test_rank_zero_of_a_gang_reports_as_a_single_process_does(backend, tmp_path, capsys):
    env = rank_env(backend, tmp_path, rank=0)
    env.pop("MLFLOW_TRACKING_URI")  # MLflow's own start-up is not what this test is about
    with TrainerSDK(env, install_signal_handlers=False) as sdk:
        assert sdk.is_main and not sdk.env.silent
        reply = whole_run(sdk)
        assert reply["status"] == "succeeded" and "silent" not in reply
    assert wait_for(lambda: len(backend.applied["done"]) == 1)
    assert [b["epoch"] for b in backend.applied["heartbeat"] if b["metrics"]] == [1, 2]
    kinds = [b["event_type"] for b in backend.applied["event"]]
    assert kinds.count("validation_complete") == 2 and "started" in kinds
    assert "rank 0 reports" not in capsys.readouterr().out


def test_a_single_process_is_rank_zero_of_one(backend, tmp_path):
    sdk = TrainerSDK(sdk_env(backend, tmp_path), install_signal_handlers=False)
    try:
        assert (sdk.env.rank, sdk.env.world_size, sdk.env.local_rank) == (0, 1, 0) and sdk.is_main
    finally:
        sdk.close()


@pytest.mark.parametrize(("rank", "world"), [("2", "2"), ("-1", "2"), ("0", "0"), ("x", "2")])
def test_an_impossible_rank_is_a_config_error(backend, tmp_path, rank, world):
    with pytest.raises(ConfigError, match="RANK"):
        TrainerSDK(sdk_env(backend, tmp_path, RANK=rank, WORLD_SIZE=world), install_signal_handlers=False)


def test_a_silent_rank_still_downloads_what_it_trains_on(s3_server, tmp_path, capsys):
    """Each rank needs the data and the resume checkpoint: downloads work on every rank."""
    s3_server.client().put_object(Bucket=s3_server.bucket, Key="checkpoints/job-x/last.pt", Body=b"weights")
    env = s3_server.sdk_env(tmp_path, RANK="1", WORLD_SIZE="2")
    with TrainerSDK(env, install_signal_handlers=False) as sdk:
        path = sdk.download_checkpoint(f"s3://{s3_server.bucket}/checkpoints/job-x/last.pt", tmp_path / "last.pt")
        assert path.read_bytes() == b"weights"
