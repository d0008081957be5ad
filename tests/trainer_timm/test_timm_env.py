"""The timm trainer's dependencies and configuration checks, without a Ray cluster (issue 6)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ray_app.runtime import venvs
from ray_app.runtime.registry import TrainerRegistry

REPO = Path(__file__).resolve().parents[2]
TRAINER = REPO / "trainers" / "timm"
VENVS = Path.home() / ".cache" / "vtp-test-venvs"  # what the platform fixtures use


def clean_env() -> dict[str, str]:
    # no PYTHONPATH: the platform's interpreter must not see trainers/ (where a folder is named timm)
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.fixture(scope="module")
def manifest():
    registry = TrainerRegistry([REPO / "trainers"])
    assert not [p for p in registry.problems if "timm" in p], registry.problems
    return registry.get("timm")


def test_manifest_declares_its_own_requirements_and_a_venv(manifest):
    assert manifest.env == "venv"
    assert manifest.requirements_file == TRAINER / "requirements.txt"
    lines = manifest.requirement_lines()
    assert any(line.replace(" ", "").startswith("timm>=1") for line in lines), lines
    # torch/torchvision come from the platform environment through the venv's .pth file
    assert not any(line.split("=")[0].split(">")[0].strip() in ("torch", "torchvision") for line in lines)
    assert manifest.entrypoints.train == "train.py" and manifest.entrypoints.predict == "predict.py"
    assert manifest.supports("image_classification", "any_timm_name")  # train.py checks the name
    assert manifest.supports("classification", "resnet18")
    assert not manifest.supports("object_detection", "resnet18")


FIND = "import importlib.util as u; print(*(getattr(u.find_spec(m), 'origin', None) for m in ('timm', 'torch')))"


def test_timm_is_installed_in_the_trainer_venv_and_absent_from_the_platform_env(manifest, tmp_path):
    venv = venvs.build(VENVS, manifest)  # reused when built (by hand or by an earlier test run)
    out = subprocess.run([str(venvs.python_of(venv)), "-c", FIND], capture_output=True, text=True, cwd=tmp_path,
                         env=clean_env(), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    timm_file, torch_file = out.stdout.split()
    assert Path(timm_file).is_relative_to(venv)  # installed into the trainer's venv ...
    assert not Path(torch_file).is_relative_to(venv)  # ... which shares the platform's torch
    platform = subprocess.run([sys.executable, "-c", FIND], capture_output=True, text=True, cwd=tmp_path,
                              env=clean_env(), timeout=120)
    assert platform.returncode == 0, platform.stderr[-2000:]
    assert platform.stdout.split()[0] == "None"  # the platform itself never depends on timm
    # (the test below imports timm in the venv for real)


WEIGHTS_AND_PREDICT = r"""
import json, sys, torch, timm
from PIL import Image
print(timm.__file__)
sys.path.insert(0, sys.argv[1])
import predict, timm_common as c
from safetensors.torch import save_file

# weights of a 3-class model load into a 4-class one: all but the classifier
m3, _ = c.create_model("test_resnet", 3)
save_file(m3.state_dict(), "w.safetensors")
m4, _ = c.create_model("test_resnet", 4)
report = c.load_weights(m4, "w.safetensors")
assert report["skipped"] == ["fc.bias", "fc.weight"], report
assert torch.equal(m4.state_dict()["conv1.0.weight"], m3.state_dict()["conv1.0.weight"])
# a ViT takes the image size; its data config follows it
vit, kw = c.create_model("test_vit", 2, {"img_size": 32})
assert kw == {"img_size": 32} and c.data_config_for(vit, 32, {})["input_size"] == [3, 32, 32]
# a checkpoint in the trainer's format is all predict needs
torch.save({"format": c.CHECKPOINT_FORMAT, "model_name": "test_vit", "model_kwargs": kw,
            "class_names": ["cat", "dog"], "class_ids": [7, 9], "model": vit.state_dict(),
            "data_config": c.data_config_for(vit, 32, {"mean": [0.4, 0.4, 0.4]})}, "best.pt")
Image.new("RGB", (40, 30), (200, 10, 10)).save("a.png")
model = predict.load_model("best.pt", "cpu")
out = predict.predict(model, ["a.png", "a.png"], top_k=5)
assert len(out) == 2 and len(out[0]["top_k"]) == 2, out
assert {t["class_id"] for t in out[0]["top_k"]} == {7, 9}
assert abs(sum(t["probability"] for t in out[0]["top_k"]) - 1) < 1e-3
print(json.dumps(out[0]))
"""


def test_timm_imports_in_the_venv_weights_adapt_and_predict_reads_a_checkpoint(manifest, tmp_path):
    python = venvs.python_of(venvs.build(VENVS, manifest))
    out = subprocess.run([str(python), "-c", WEIGHTS_AND_PREDICT, str(TRAINER)], capture_output=True, text=True,
                         cwd=tmp_path, env={**clean_env(), "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    timm_file, result = out.stdout.splitlines()[-2:]
    assert Path(timm_file).is_relative_to(python.parent.parent)  # timm imported from the trainer venv
    assert '"class_name"' in result


# ----------------------------------------------------------------- advanced_config checks
@pytest.fixture(scope="module")
def options():
    sys.path.insert(0, str(TRAINER))
    try:
        import timm_options  # plain Python: importable without timm
    finally:
        sys.path.remove(str(TRAINER))
    return timm_options


def env_for(**config):
    from sdk import TrainerEnv

    return TrainerEnv.from_environ({"MODEL_NAME": "test_resnet", "EPOCHS": "3", "BATCH_SIZE": "8",
                                    "LEARNING_RATE": "0.01", "IMAGE_SIZE": "48", "CONFIG": "{}", **config})


def test_unknown_advanced_keys_are_named_in_a_config_error(options):
    from sdk import ConfigError

    with pytest.raises(ConfigError, match="bogus_knob, lr0x"):
        options.parse(env_for(), {"lr0x": 1, "bogus_knob": True, "opt": "adamw"})
    with pytest.raises(ConfigError, match=r"mean=\[0.5\] \(expected list of 3 numbers or null\); "
                                          r"warmup_epochs='2' \(expected integer\)"):
        options.parse(env_for(), {"warmup_epochs": "2", "mean": [0.5]})
    with pytest.raises(ConfigError, match="val_fraction"):
        options.parse(env_for(), {"val_fraction": 1.5})


def test_advanced_values_pass_through_with_timm_defaults(options):
    opts = options.parse(env_for(), {"opt": "adamw", "weight_decay": 0.05, "sched": "step", "mixup": 0.2,
                                     "scale": [0.5, 1], "drop_rate": 0.1})
    assert (opts.opt, opts.weight_decay, opts.sched, opts.mixup, opts.scale) == ("adamw", 0.05, "step", 0.2, [0.5, 1])
    assert (opts.label_smoothing, opts.momentum, opts.warmup_epochs, opts.pretrained) == (0.1, 0.9, 0, False)
    assert (opts.epochs, opts.batch_size, opts.lr, opts.image_size) == (3, 8, 0.01, 48)
    params = opts.params()
    assert params["drop_rate"] == 0.1 and "weights" not in params  # unset values are not logged
