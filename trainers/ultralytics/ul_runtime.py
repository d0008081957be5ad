"""Ultralytics offline and fast on the machine it is given (DESIGN §9).

``prepare_environment`` must run BEFORE ``ultralytics`` is imported: Ultralytics reads
``YOLO_CONFIG_DIR``, ``YOLO_OFFLINE`` and its settings file at import time. It gives the job its
own config dir holding a font at ``Ultralytics/Arial.ttf`` (matplotlib's DejaVuSans), so the
dataset check and the plots never try to download one. ``configure_settings`` then turns every
integration off (its own MLflow callback would write ``mlruns/`` into the working directory; the
trainer logs to MLflow through the SDK instead).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

from sdk.env import env_number

OFFLINE_VARS = {
    "YOLO_OFFLINE": "1",          # is_online() is False: no hub, no pip checks, no analytics
    "YOLO_AUTOINSTALL": "False",  # never pip-install a missing package at run time
    "HF_HUB_OFFLINE": "1",
    "MPLBACKEND": "Agg",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
FONTS = ("Arial.ttf", "Arial.Unicode.ttf")
INTEGRATIONS_OFF = {"sync": False, "mlflow": False, "clearml": False, "comet": False, "dvc": False,
                    "raytune": False, "tensorboard": False, "wandb": False, "vscode_msg": False,
                    "openvino_msg": False}


def _matplotlib_font() -> Path | None:
    """DejaVuSans.ttf from matplotlib's data, found without importing matplotlib (slow)."""
    spec = importlib.util.find_spec("matplotlib")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        font = Path(loc) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if font.is_file():
            return font
    return None


def prepare_environment(base_dir: str | os.PathLike) -> Path:
    """Per-job YOLO_CONFIG_DIR with the fonts; offline variables. Returns the config dir."""
    for key, value in OFFLINE_VARS.items():
        os.environ.setdefault(key, value)
    os.environ["YOLO_OFFLINE"] = "1"
    config_dir = Path(base_dir) / "yolo-config"
    (config_dir / "Ultralytics").mkdir(parents=True, exist_ok=True)
    font = _matplotlib_font()
    if font is not None:
        for name in FONTS:
            target = config_dir / "Ultralytics" / name
            if not target.exists():
                shutil.copyfile(font, target)
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    os.environ.setdefault("MPLCONFIGDIR", str(config_dir / "matplotlib"))
    return config_dir


def configure_settings(base_dir: str | os.PathLike) -> Path:
    """Integrations off; runs/datasets/weights dirs under ``base_dir``. Returns the weights dir."""
    from ultralytics.utils import SETTINGS

    base = Path(base_dir)
    weights = base / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    SETTINGS.update({**INTEGRATIONS_OFF, "runs_dir": str(base / "runs"),
                     "datasets_dir": str(base / "datasets"), "weights_dir": str(weights)})
    return weights


def job_cpus(default: int = 1) -> int:
    """The whole CPUs the job was given (NUM_CPUS, e.g. "2" or "1.5"), at most the machine's."""
    value = env_number("NUM_CPUS", None)
    if value is None:
        return max(1, min(default, os.cpu_count() or 1))
    return max(1, min(int(math.floor(value)) or 1, os.cpu_count() or 1))


def torch_threads() -> int:
    """``VTP_TORCH_THREADS`` when the operator sets it; else Ultralytics' own rule (NUM_THREADS =
    min(8, cpus - 1)) applied to the job's CPUs rather than the machine's: one CPU stays free for
    the training loop's Python, the SDK's callbacks and uploads and the platform's own processes.
    Measured on 2 CPUs (bench/README.md, training overhead): run directly, 2 threads train faster
    than 1, but inside the platform they do not (the second CPU also carries the SDK's threads, the
    MLflow process and the node's platform processes), and 1 thread is the steadier."""
    raw = os.environ.get("VTP_TORCH_THREADS") or ""
    if raw.strip().isdigit() and int(raw) > 0:
        return int(raw)
    asked = job_torch_threads()
    if asked:
        return asked
    return max(1, min(8, job_cpus(default=os.cpu_count() or 1) - 1))


def job_torch_threads() -> int | None:
    """`torch_threads` in the job's config (or its advanced_config): a job may choose its own."""
    try:
        config = json.loads(os.environ.get("CONFIG") or "{}")
    except ValueError:
        return None
    if not isinstance(config, dict):
        return None
    adv = config.get("advanced_config")
    value = config.get("torch_threads", adv.get("torch_threads") if isinstance(adv, dict) else None)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 256 else None


def set_threads() -> int:
    """Ultralytics' select_device() and stand-alone validation reset torch's threads: set ours."""
    import torch

    n = torch_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def use_channels_last(asked: bool | None, device: str) -> bool:
    """The model's weights in channels-last memory format: oneDNN's convolutions then take their
    NHWC path, which trains a YOLO ~15 % faster per step on a CPU (the activations follow the
    weights' format; bench/README.md, training speed, third run). Ultralytics itself keeps the
    default (NCHW). On by default on a CPU; on a GPU off unless the job asks (not measured there:
    cuDNN's NHWC kernels pay off mostly with AMP). `channels_last` in the job's config decides."""
    return asked if asked is not None else device == "cpu"


def channels_last_models(trainer: Any) -> None:
    """Build the trainer's model in channels-last format: after Ultralytics' setup_model (which
    creates or loads it, and reshapes a classifier's head), before it is moved to the device and
    copied into the EMA and the optimizer, so every copy (EMA, checkpoints) has the format too."""
    import torch

    setup_model = trainer.setup_model

    def setup_channels_last() -> Any:
        ckpt = setup_model()
        trainer.model = trainer.model.to(memory_format=torch.channels_last)
        return ckpt

    trainer.setup_model = setup_channels_last


def memory_format(model: Any) -> str:
    """"channels_last" or "contiguous": the format of the model's first convolution's weights (what
    the training log line reports, so a job shows which path it trained on)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            return "channels_last" if module.weight.is_contiguous(memory_format=torch.channels_last) \
                and not module.weight.is_contiguous() else "contiguous"
    return "contiguous"


def ultralytics_device(device: str | None, cuda_count: int | None = None) -> str:
    """The platform's DEVICE ("cpu", or "0,1,..." for the GPUs Ray made visible to this process) as
    Ultralytics' ``device``: "cpu", "0", or "0,1,2,3": every GPU the job reserved. With more than
    one, Ultralytics trains with its own DDP, one worker process per GPU (ul_ddp.py); the manifest
    says one node (distributed.max_workers: 1), as Ultralytics' DDP launches on one node only.

    Indices that CUDA does not see (``cuda_count``: torch's device count unless given) are left
    out; none left, or no CUDA at all: the first GPU, or "cpu"."""
    device = (device or "cpu").strip().lower()
    if device in ("", "cpu", "none"):
        return "cpu"
    if cuda_count is None:
        try:
            import torch

            cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        except Exception:
            cuda_count = 0
    if cuda_count < 1:
        return "cpu"
    indices = [int(part) for part in device.removeprefix("cuda:").split(",") if part.strip().isdigit()]
    visible = list(dict.fromkeys(i for i in indices if i < cuda_count))  # in order, once each
    return ",".join(str(i) for i in visible) if visible else "0"
