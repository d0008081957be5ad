"""The Ultralytics trainer's own logic, without training: names, config checks, error types.

These run in the platform's environment (no ultralytics there): the helpers under test import
ultralytics only inside the functions that need it.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

TRAINER_DIR = Path(__file__).resolve().parents[2] / "trainers" / "ultralytics"
for p in (TRAINER_DIR, TRAINER_DIR.parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import ul_callbacks  # noqa: E402
import ul_config  # noqa: E402
import ul_runtime  # noqa: E402
from sdk import ConfigError, ErrorType, TrainerEnv  # noqa: E402


def _train_module():
    spec = importlib.util.spec_from_file_location("ultralytics_trainer_train", TRAINER_DIR / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A few of Ultralytics' argument names (the trainer checks against the real DEFAULT_CFG_DICT)
DEFAULTS = {k: None for k in ("epochs", "batch", "imgsz", "lr0", "lrf", "mosaic", "optimizer", "patience",
                              "data", "model", "device", "save", "pretrained", "amp", "nbs", "warmup_epochs")}


def env_with(config: dict, **extra: str) -> TrainerEnv:
    return TrainerEnv.from_environ({"JOB_ID": "u1", "TASK_TYPE": "object_detection", "MODEL_NAME": "yolo11n",
                                    "EPOCHS": "5", "BATCH_SIZE": "8", "IMAGE_SIZE": "128",
                                    "CONFIG": json.dumps(config), **extra})


@pytest.mark.parametrize("name,task,expected", [
    ("yolo11n", "detect", "yolo11n"),
    ("yolo11n", "segment", "yolo11n-seg"),
    ("yolo11n", "classify", "yolo11n-cls"),
    ("yolov8s.pt", "segment", "yolov8s-seg"),
    ("yolo11n-seg", "segment", "yolo11n-seg"),
    ("yolo26m.yaml", "classify", "yolo26m-cls"),
])
def test_model_name_maps_to_the_task_specific_architecture(name, task, expected):
    assert ul_config.model_stem(name, task) == expected


def test_a_model_for_another_task_is_a_config_error():
    with pytest.raises(ConfigError, match="cls model"):
        ul_config.model_stem("yolo11n-cls", "detect")
    with pytest.raises(ConfigError, match="does not train"):
        ul_config.ultralytics_task("semantic_segmentation")


def test_ultralytics_names_pass_through_and_unknown_names_are_refused_by_name():
    args, _ = ul_config.collect_user_args(
        env_with({"patience": 3, "advanced_config": {"lr0": 0.002, "mosaic": 0.0, "learning_rate": 0.5}}), DEFAULTS)
    assert args == {"patience": 3, "lr0": 0.002, "mosaic": 0.0}
    with pytest.raises(ConfigError) as err:
        ul_config.collect_user_args(env_with({"advanced_config": {"lr_zero": 0.1, "mosiac": 1.0}}), DEFAULTS)
    assert "'lr_zero'" in str(err.value) and "'mosiac'" in str(err.value)
    assert "did you mean 'mosaic'" in str(err.value)
    assert err.value.error_type is ErrorType.CONFIG_ERROR


def test_torch_threads_is_the_platforms_not_an_ultralytics_argument():
    args, _ = ul_config.collect_user_args(env_with({"torch_threads": 2, "mosaic": 0.5}), DEFAULTS)
    assert args == {"mosaic": 0.5}


def test_channels_last_is_the_platforms_choice_on_by_default_on_a_cpu():
    args, _ = ul_config.collect_user_args(env_with({"channels_last": False, "mosaic": 0.5}), DEFAULTS)
    assert args == {"mosaic": 0.5}  # not handed to Ultralytics, which has no such argument
    assert ul_config.channels_last_choice({}) is None
    assert ul_config.channels_last_choice({"channels_last": False}) is False
    for bad in ("yes", 1, [True]):
        with pytest.raises(ConfigError, match="channels_last must be true or false") as err:
            ul_config.channels_last_choice({"channels_last": bad})
        assert err.value.error_type is ErrorType.CONFIG_ERROR
    assert ul_runtime.use_channels_last(None, "cpu") is True
    assert ul_runtime.use_channels_last(None, "0") is False  # a GPU: not measured, off unless asked
    assert ul_runtime.use_channels_last(False, "cpu") is False
    assert ul_runtime.use_channels_last(True, "0") is True


def test_channels_last_models_converts_the_model_setup_builds():
    torch = pytest.importorskip("torch")

    class Trainer:  # the two members of Ultralytics' BaseTrainer that channels_last_models uses
        model = None

        def setup_model(self):
            self.model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
            return {"epoch": 4}

    trainer = Trainer()
    ul_runtime.channels_last_models(trainer)
    assert trainer.setup_model() == {"epoch": 4}  # Ultralytics' checkpoint, passed on
    weight = trainer.model[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert ul_runtime.memory_format(trainer.model) == "channels_last"
    assert ul_runtime.memory_format(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))) == "contiguous"
    out = trainer.model(torch.randn(2, 3, 16, 16))  # plain NCHW images in, as Ultralytics' batches
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_platform_owned_arguments_and_contradicting_job_fields_are_refused():
    with pytest.raises(ConfigError, match="set by the platform"):
        ul_config.collect_user_args(env_with({"advanced_config": {"data": "/etc/x.yaml"}}), DEFAULTS)
    with pytest.raises(ConfigError, match="contradicts the job's EPOCHS=5"):
        ul_config.collect_user_args(env_with({"advanced_config": {"epochs": 50}}), DEFAULTS)
    args, _ = ul_config.collect_user_args(env_with({"advanced_config": {"epochs": 5}}), DEFAULTS)
    assert "epochs" not in args  # the job's field decides


def test_metric_names_are_friendly():
    out = ul_callbacks.friendly({
        "train/box_loss": 1.0, "train/cls_loss": 0.5, "val/seg_loss": 0.2, "metrics/precision(B)": 0.9,
        "metrics/mAP50(B)": 0.8, "metrics/mAP50-95(B)": 0.6, "metrics/mAP50(M)": 0.7,
        "metrics/accuracy_top1": 0.95, "metrics/accuracy_top5": 1.0, "lr/pg0": 0.01, "lr/pg2": 0.02,
        "fitness": 0.61, "not-a-number": "x"})
    assert out == {"train_box_loss": 1.0, "train_cls_loss": 0.5, "val_seg_loss": 0.2, "precision": 0.9,
                   "mAP50": 0.8, "mAP50-95": 0.6, "mask_mAP50": 0.7, "top1": 0.95, "top5": 1.0, "lr": 0.01,
                   "lr_pg2": 0.02, "fitness": 0.61, "train_loss": 1.5}


def test_errors_map_to_the_contract_types():
    train = _train_module()
    assert train.classify_error(RuntimeError("CUDA out of memory. Tried to allocate"), "train") \
        is ErrorType.RESOURCE_ERROR
    assert train.classify_error(RuntimeError("Dataset 'x.yaml' error: images not found"), "setup") \
        is ErrorType.DATASET_ERROR
    assert train.classify_error(ValueError("bad tensor shape"), "train") is ErrorType.FRAMEWORK_ERROR
    # the same words after training started are the framework's problem, not the dataset's
    assert train.classify_error(RuntimeError("Dataset sampler broke"), "train") is ErrorType.FRAMEWORK_ERROR


def test_class_ids_follow_the_dataset_not_the_model_index(tmp_path):
    train = _train_module()
    root = tmp_path / "dice"
    root.mkdir()
    (root / "annotations.json").write_text(json.dumps({"classes": [
        {"id": 7, "name": "zebra"}, {"id": 3, "name": "ant"}, {"id": 5, "name": "cat/dog"}]}))
    # ImageFolder (classification) orders classes by folder name
    names = {0: "ant", 1: "cat_dog", 2: "zebra"}
    assert train.class_ids(root, tmp_path / "imagefolder", names) == {0: 3, 1: 5, 2: 7}
    out = tmp_path / "yolo"
    out.mkdir()
    (out / "class_map.json").write_text(json.dumps([{"index": 0, "class_id": 3, "name": "ant"},
                                                    {"index": 1, "class_id": 7, "name": "zebra"}]))
    assert train.class_ids(root, out, {0: "ant", 1: "zebra"}) == {0: 3, 1: 7}


def test_offline_environment_has_the_font_and_the_job_threads(tmp_path, monkeypatch):
    for name in ("YOLO_CONFIG_DIR", "MPLCONFIGDIR", *ul_runtime.OFFLINE_VARS):
        monkeypatch.delenv(name, raising=False)  # set by prepare_environment; undone after the test
    monkeypatch.setenv("NUM_CPUS", "1.5")
    config_dir = ul_runtime.prepare_environment(tmp_path)
    assert os.environ["YOLO_CONFIG_DIR"] == str(config_dir) and os.environ["YOLO_OFFLINE"] == "1"
    font = config_dir / "Ultralytics" / "Arial.ttf"
    assert font.is_file() and font.stat().st_size > 10_000
    assert ul_runtime.job_cpus() == 1 and ul_runtime.torch_threads() == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    for cpus, threads in (("1", 1), ("2", 1), ("4", 3), ("16", 8)):  # one CPU left for the rest
        monkeypatch.setenv("NUM_CPUS", cpus)
        assert ul_runtime.torch_threads() == threads
    monkeypatch.setenv("NUM_CPUS", "2")
    monkeypatch.setenv("CONFIG", json.dumps({"torch_threads": 2}))  # the job's own choice
    assert ul_runtime.torch_threads() == 2
    monkeypatch.setenv("CONFIG", json.dumps({"advanced_config": {"torch_threads": 3}}))
    assert ul_runtime.torch_threads() == 3
    for bad in ({"torch_threads": 0}, {"torch_threads": "2"}, {"torch_threads": True}, ["x"]):
        monkeypatch.setenv("CONFIG", json.dumps(bad))
        assert ul_runtime.torch_threads() == 1  # ignored: the rule above
    monkeypatch.setenv("CONFIG", json.dumps({"torch_threads": 2}))
    monkeypatch.setenv("VTP_TORCH_THREADS", "4")  # the operator's choice wins
    assert ul_runtime.torch_threads() == 4
    assert ul_runtime.ultralytics_device("cpu") == "cpu"
