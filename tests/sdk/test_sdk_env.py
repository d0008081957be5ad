"""The contract environment: both naming schemes, config, task aliases, log format."""
from __future__ import annotations

import json

import pytest

from sdk import ConfigError, ErrorType, TrainerEnv, TrainerSDK, normalize_task_type
from sdk.log import TraceLogger


def test_both_callback_url_schemes():
    a = TrainerEnv.from_environ({"JOB_ID": "7", "BACKEND_BASE_URL": "http://127.0.0.1:8000/"})
    assert a.callback_base == "http://127.0.0.1:8000/v1"
    b = TrainerEnv.from_environ({"JOB_ID": "7", "CALLBACK_URL": "http://h:1/api/v1"})
    assert b.callback_base == "http://h:1/api/v1"
    both = TrainerEnv.from_environ({"BACKEND_BASE_URL": "http://a:1", "CALLBACK_URL": "http://b:2/v1"})
    assert both.callback_base == "http://a:1/v1"  # the contract's name wins


def test_storage_schemes_and_sdk_guide_overrides():
    env = {"STORAGE_TYPE": "minio", "STORAGE_BUCKET": "vp", "MINIO_ENDPOINT": "localhost:9000",
           "MINIO_ACCESS_KEY": "ak", "MINIO_SECRET_KEY": "sk"}
    e = TrainerEnv.from_environ(env)
    assert e.datasets_location.endpoint_url == "http://localhost:9000"
    assert e.datasets_location.addressing_style == "path" and e.checkpoints_location.bucket == "vp"
    e = TrainerEnv.from_environ({**env, "EXTERNAL_STORAGE_ENDPOINT": "http://ext:9000",
                                 "EXTERNAL_BUCKET_DATASETS": "training-datasets",
                                 "INTERNAL_STORAGE_ENDPOINT": "http://int:9002",
                                 "INTERNAL_STORAGE_ACCESS_KEY": "iak", "INTERNAL_STORAGE_SECRET_KEY": "isk",
                                 "INTERNAL_BUCKET_CHECKPOINTS": "training-checkpoints"})
    assert (e.datasets_location.endpoint_url, e.datasets_location.bucket) == ("http://ext:9000", "training-datasets")
    assert e.datasets_location.access_key == "ak"  # not overridden: falls back to the primary keys
    ck = e.checkpoints_location
    assert (ck.endpoint_url, ck.bucket, ck.access_key, ck.secret_key) == ("http://int:9002", "training-checkpoints", "iak", "isk")
    r2 = TrainerEnv.from_environ({"STORAGE_TYPE": "r2", "STORAGE_BUCKET": "b", "R2_ENDPOINT": "https://x.r2",
                                  "R2_ACCESS_KEY_ID": "a", "R2_SECRET_ACCESS_KEY": "s"}).datasets_location
    assert (r2.region, r2.access_key, r2.secret_key) == ("auto", "a", "s")
    s3 = TrainerEnv.from_environ({"STORAGE_TYPE": "s3", "STORAGE_BUCKET": "b", "AWS_ACCESS_KEY_ID": "a",
                                  "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "eu-west-1"}).datasets_location
    assert (s3.endpoint_url, s3.region, s3.addressing_style) == (None, "eu-west-1", "auto")
    assert "sk" not in repr(e.datasets_location)
    with pytest.raises(ConfigError, match="STORAGE_TYPE"):
        TrainerEnv.from_environ({"STORAGE_TYPE": "ftp"})


def test_training_config_and_aliases():
    config = {"epochs": 100, "batch": 16, "imgsz": 640, "optimizer": "adamw",
              "advanced_config": {"mosaic": 1.0, "warmup_epochs": 3}}
    sdk = TrainerSDK({"JOB_ID": "1", "CONFIG": json.dumps(config), "EPOCHS": "5", "IMGSZ": "128",
                      "TASK_TYPE": "detection", "MODEL_NAME": "yolo11n", "ATTEMPT": "3"},
                     install_signal_handlers=False)
    try:
        basic = sdk.get_basic_config()
        assert basic["epochs"] == 5 and basic["imgsz"] == 128 and basic["batch"] == 16
        assert basic["optimizer"] == "adamw" and "advanced_config" not in basic
        assert sdk.get_advanced_config() == {"mosaic": 1.0, "warmup_epochs": 3}
        assert sdk.get_full_config() == {"basic": basic, "advanced": sdk.get_advanced_config()}
        assert sdk.task_type == "object_detection" and sdk.attempt == 3
    finally:
        sdk.close()
    assert TrainerEnv.from_environ({"IMAGE_SIZE": "320", "IMGSZ": "640"}).image_size == 320
    assert [normalize_task_type(t) for t in ("segmentation", "classification", "pose", "object_detection")] == [
        "instance_segmentation", "image_classification", "pose_estimation", "object_detection"]
    with pytest.raises(ConfigError, match="TASK_TYPE"):
        normalize_task_type("regression")
    with pytest.raises(ConfigError, match="CONFIG"):
        TrainerEnv.from_environ({"CONFIG": "{not json"})
    with pytest.raises(ConfigError, match="EPOCHS"):
        TrainerEnv.from_environ({"EPOCHS": "ten"})


def test_error_types():
    assert ErrorType.TRAINING_ERROR is ErrorType.FRAMEWORK_ERROR
    assert str(ErrorType.DATASET_ERROR) == "DATASET_ERROR"
    assert ErrorType.coerce("resource_error") is ErrorType.RESOURCE_ERROR
    assert ErrorType.coerce("TRAINING_ERROR") is ErrorType.FRAMEWORK_ERROR
    assert ErrorType.coerce("nonsense") is ErrorType.UNKNOWN_ERROR
    # one enum with the platform's (contract.py): trainers report the first eight
    assert {e.value for e in ErrorType} == {"DATASET_ERROR", "CHECKPOINT_ERROR", "CONFIG_ERROR", "RESOURCE_ERROR",
                                           "NETWORK_ERROR", "FRAMEWORK_ERROR", "VALIDATION_ERROR", "UNKNOWN_ERROR",
                                           "INFRASTRUCTURE_ERROR", "TIMEOUT_ERROR"}


def test_log_format_and_secret_masking(capsys):
    log = TraceLogger("abc-123", secrets=["supersecretvalue"])
    log.log("info", "hello")
    log.log("warn", "key=supersecretvalue")
    log.log("error", "two\nlines")
    out = capsys.readouterr().out.splitlines()
    assert out == ["[TRACE:abc-123] [INFO] hello", "[TRACE:abc-123] [WARNING] key=***",
                   "[TRACE:abc-123] [ERROR] two", "[TRACE:abc-123] [ERROR] lines"]


def test_sdk_log_masks_the_callback_token(capsys):
    sdk = TrainerSDK({"TRACE_ID": "t-1", "CALLBACK_TOKEN": "eyJhbGciOiJIUzI1NiJ9.secret"},
                     install_signal_handlers=False)
    try:
        sdk.log("INFO", "token is eyJhbGciOiJIUzI1NiJ9.secret")
    finally:
        sdk.close()
    out = capsys.readouterr().out
    assert "[TRACE:t-1] [INFO] token is ***" in out and "eyJhbGci" not in out
