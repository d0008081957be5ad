"""What train.py and predict.py share: the checkpoint format, model construction, weight loading
with class-count adaptation, timm transforms, and the image-folder dataset.

A checkpoint is one ``torch.save``d dict, readable with ``weights_only=True``:

    format        "vtp-timm/1"
    model_name    timm model name;  model_kwargs  extra create_model kwargs (drop_rate, img_size…)
    class_names   index -> name;    class_ids     index -> dataset class id (DICE id or index)
    data_config   timm data config: input_size, mean, std, interpolation, crop_pct, crop_mode
    model         state dict
    epoch         epochs completed; optimizer / scheduler / scaler state for resuming
    best_top1, best_epoch, best_uri, metrics
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

CHECKPOINT_FORMAT = "vtp-timm/1"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DATA_CONFIG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def torch_device(device: str | None, cuda_available: bool | None = None) -> torch.device:
    """The contract's DEVICE ("cpu", "0", "0,1", "cuda:0") as a torch device: the first GPU it
    names. One process trains on one GPU; a job with several runs one rank per GPU (the manifest's
    distributed.gpus_per_process: 1), and Ray makes each rank's own GPU visible to it as "0".
    ``cuda_available``: torch's answer unless given (the unit test of the mapping)."""
    d = (device or "cpu").strip().lower()
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if d in ("", "cpu") or not cuda_available:
        return torch.device("cpu")
    if d.startswith("cuda"):
        return torch.device(d)
    first = d.split(",")[0].strip()
    return torch.device(f"cuda:{int(first)}" if first.isdigit() else "cuda")


def create_model(model_name: str, num_classes: int,
                 model_kwargs: dict[str, Any] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """``timm.create_model`` from config only (never a download); returns the model and the
    kwargs it was built with. ``img_size`` goes only to models that take it (ViT-like);
    convolutional nets accept any input size anyway."""
    import timm

    kwargs = dict(model_kwargs or {})
    try:
        return timm.create_model(model_name, pretrained=False, num_classes=num_classes, **kwargs), kwargs
    except TypeError as exc:
        if "img_size" not in kwargs or "img_size" not in str(exc):
            raise
    kwargs.pop("img_size")
    return timm.create_model(model_name, pretrained=False, num_classes=num_classes, **kwargs), kwargs


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Model weights from a .safetensors file, a plain state dict, or a checkpoint dict that holds
    one under ``model`` / ``state_dict`` / ``model_ema`` / ``state_dict_ema``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_ema", "state_dict_ema"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path.name} holds no state dict")
    # checkpoints written from DataParallel / torch.compile prefix every key
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}


def load_weights(model: torch.nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load what fits; tensors whose shape differs (the classifier of another class count) are
    skipped and the model keeps its fresh ones. Returns what was skipped and what was missing."""
    state = read_state_dict(path)
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(k for k in state if k in own and own[k].shape != state[k].shape)
    if not fitting:
        raise ValueError(f"no tensor of {Path(path).name} fits the model "
                         f"({len(state)} tensors, e.g. {next(iter(state), '-')})")
    result = model.load_state_dict(fitting, strict=False)
    return {"skipped": skipped, "missing": sorted(result.missing_keys),
            "unexpected": sorted(k for k in state if k not in own)}


def data_config_for(model: torch.nn.Module, image_size: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """timm's data config for ``model`` at ``image_size`` (square), with user overrides."""
    from timm.data import resolve_data_config

    args: dict[str, Any] = {"input_size": (3, image_size, image_size)}
    for key in ("interpolation", "mean", "std", "crop_pct", "crop_mode"):
        if overrides.get(key) is not None:
            args[key] = tuple(overrides[key]) if isinstance(overrides[key], list) else overrides[key]
    cfg = resolve_data_config(args=args, model=model)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items() if k in DATA_CONFIG_KEYS}


def eval_transform(data_config: dict[str, Any]):
    from timm.data import create_transform

    cfg = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data_config.items()}
    return create_transform(**cfg, is_training=False)


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


class ImageReadError(Exception):
    """An image of the dataset cannot be decoded (the trainer reports DATASET_ERROR)."""


class FolderDataset(torch.utils.data.Dataset):
    """``root/<class dir>/…`` images labelled with the index of their folder in ``class_dirs``
    (the training split's classes, so that a split missing a class keeps the same indices)."""

    def __init__(self, root: Path, class_dirs: Sequence[str], transform: Any = None) -> None:
        self.samples = [(p, i) for i, d in enumerate(class_dirs) for p in list_images(Path(root) / d)]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from PIL import Image

        path, target = self.samples[index]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except (OSError, ValueError) as exc:  # PIL.UnidentifiedImageError is an OSError
            raise ImageReadError(f"cannot read image {path.name}: {exc}") from None
        return (self.transform(img) if self.transform else img), target


def model_from_checkpoint(ckpt: dict[str, Any], device: torch.device) -> torch.nn.Module:
    model, _ = create_model(ckpt["model_name"], len(ckpt["class_names"]), ckpt.get("model_kwargs"))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()
