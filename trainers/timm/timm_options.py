"""The job's configuration for the timm trainer: the contract's basic values plus a checked
``advanced_config``. Unknown keys and values of the wrong type are a CONFIG_ERROR that names
them, raised before any data is downloaded. Names of optimizers and schedulers pass through to
timm (``create_optimizer_v2`` / ``create_scheduler_v2``), which checks them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdk import ConfigError, TrainerEnv
from sdk.env import env_number

_NUM = (int, float)
_UNSET = object()

# key: (accepted types, default, what it is). A tuple of types; "list2" = two numbers,
# "list3" = three numbers, "intlist" = list of integers. None in types: may be null.
ADVANCED: dict[str, tuple[tuple[Any, ...], Any, str]] = {
    # optimizer -> timm.optim.create_optimizer_v2
    "opt": ((str,), "sgd", "optimizer name (timm.optim.list_optimizers())"),
    "weight_decay": (_NUM, 2e-5, "weight decay"),
    "momentum": (_NUM, 0.9, "momentum (SGD-like optimizers)"),
    "opt_eps": (_NUM + (None,), None, "optimizer epsilon"),
    "opt_betas": (("list2", None), None, "optimizer betas [b1, b2]"),
    "layer_decay": (_NUM + (None,), None, "layer-wise lr decay"),
    "clip_grad": (_NUM + (None,), None, "gradient norm clipping"),
    # scheduler -> timm.scheduler.create_scheduler_v2
    "sched": ((str,), "cosine", "lr scheduler name (cosine, step, multistep, plateau, tanh, poly)"),
    "warmup_epochs": ((int,), 0, "warmup epochs"),
    "warmup_lr": (_NUM, 1e-5, "lr at the start of warmup"),
    "min_lr": (_NUM, 0.0, "lower lr bound"),
    "cooldown_epochs": ((int,), 0, "epochs at min_lr after the schedule"),
    "decay_epochs": (_NUM, 90, "step scheduler period"),
    "decay_milestones": (("intlist",), [90, 180, 270], "multistep scheduler milestones"),
    "decay_rate": (_NUM, 0.1, "step/multistep/plateau decay factor"),
    "patience_epochs": ((int,), 10, "plateau scheduler patience"),
    "sched_on_updates": ((bool,), False, "step the scheduler every optimizer update, not every epoch"),
    # loss and regularisation
    "label_smoothing": (_NUM, 0.1, "label smoothing"),
    "drop_rate": (_NUM + (None,), None, "classifier dropout (create_model drop_rate)"),
    "drop_path_rate": (_NUM + (None,), None, "stochastic depth (create_model drop_path_rate)"),
    "mixup": (_NUM, 0.0, "mixup alpha (0 = off)"),
    "cutmix": (_NUM, 0.0, "cutmix alpha (0 = off)"),
    "mixup_prob": (_NUM, 1.0, "probability of applying mixup/cutmix to a batch"),
    "mixup_switch_prob": (_NUM, 0.5, "probability of cutmix instead of mixup when both are on"),
    "mixup_mode": ((str,), "batch", "batch, pair or elem"),
    # augmentation -> timm.data.create_transform
    "no_aug": ((bool,), False, "no training augmentation"),
    "hflip": (_NUM, 0.5, "horizontal flip probability"),
    "vflip": (_NUM, 0.0, "vertical flip probability"),
    "scale": (("list2",), [0.08, 1.0], "random-resized-crop area range"),
    "ratio": (("list2",), [3 / 4, 4 / 3], "random-resized-crop aspect range"),
    "color_jitter": (_NUM, 0.4, "colour jitter strength"),
    "auto_augment": ((str, None), None, "e.g. rand-m9-mstd0.5"),
    "re_prob": (_NUM, 0.0, "random erasing probability"),
    "interpolation": ((str, None), None, "bilinear, bicubic, ... (default: the model's)"),
    "mean": (("list3", None), None, "normalisation mean (default: the model's)"),
    "std": (("list3", None), None, "normalisation std (default: the model's)"),
    "crop_pct": (_NUM + (None,), None, "eval centre-crop fraction (default: the model's)"),
    "crop_mode": ((str, None), None, "center, squash or border"),
    # data
    "val_fraction": (_NUM, 0.2, "validation share when the dataset has no split"),
    "seed": ((int,), 0, "seed of the split, the model init and the data order"),
    "workers": ((int, None), None, "DataLoader workers (default: 0 on small CPU jobs)"),
    # weights
    "pretrained": ((bool,), False, "start from models/pretrained/timm/{model}.(safetensors|pth) in the bucket"),
    "weights": ((str, None), None, "start from this checkpoint (s3:// URI or key in the bucket)"),
    # runtime
    "amp": ((bool, None), None, "mixed precision: float16 autocast on a GPU, bfloat16 on a CPU (default: "
                                "on where the offline check of the model agrees, on a GPU and on a CPU with "
                                "native bfloat16; true/false: kept either way)"),
    "channels_last": ((bool, None), None, "channels-last memory format for the model and its batches "
                                          "(default: on a CPU, where oneDNN's convolutions are faster so)"),
    "save_period": ((int,), 0, "also keep checkpoints/job-{id}/epoch-N.pt every N epochs (0 = off)"),
}


def _type_ok(value: Any, types: tuple[Any, ...]) -> bool:
    for t in types:
        if t is None and value is None:
            return True
        if t in ("list2", "list3") and isinstance(value, list) and len(value) == int(t[-1]) and all(
                isinstance(v, _NUM) and not isinstance(v, bool) for v in value):
            return True
        if t == "intlist" and isinstance(value, list) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            return True
        if isinstance(t, type) and isinstance(value, t) and not (isinstance(value, bool) and t is not bool):
            return True
    return False


def _describe(types: tuple[Any, ...]) -> str:
    names = {int: "integer", float: "number", str: "string", bool: "boolean", None: "null",
             "list2": "list of 2 numbers", "list3": "list of 3 numbers", "intlist": "list of integers"}
    out = []
    for t in types:
        if names[t] not in out and not (t is int and float in types):
            out.append(names[t])
    return " or ".join(out)


@dataclass
class Options:
    model_name: str
    epochs: int
    batch_size: int
    lr: float
    image_size: int
    device: str
    num_cpus: float
    resume_from: str | None
    adv: dict[str, Any] = field(default_factory=dict)  # every ADVANCED key, defaults filled in
    given: dict[str, Any] = field(default_factory=dict)  # what the job set

    def __getattr__(self, name: str) -> Any:  # opts.weight_decay etc.
        adv = self.__dict__.get("adv", {})
        if name in adv:
            return adv[name]
        raise AttributeError(name)

    def params(self) -> dict[str, Any]:
        """For MLflow: the effective configuration (no secrets in here)."""
        return {"model_name": self.model_name, "epochs": self.epochs, "batch_size": self.batch_size,
                "learning_rate": self.lr, "image_size": self.image_size, "device": self.device,
                **{k: v for k, v in self.adv.items() if v is not None}}


def parse(env: TrainerEnv, advanced: dict[str, Any]) -> Options:
    unknown = sorted(set(advanced) - set(ADVANCED))
    if unknown:
        raise ConfigError(f"unknown advanced_config key(s) for the timm trainer: {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(ADVANCED))})")
    bad = [f"{k}={advanced[k]!r} (expected {_describe(ADVANCED[k][0])})"
           for k in sorted(advanced) if not _type_ok(advanced[k], ADVANCED[k][0])]
    if bad:
        raise ConfigError(f"invalid advanced_config value(s): {'; '.join(bad)}")
    adv = {k: advanced.get(k, spec[1]) for k, spec in ADVANCED.items()}
    if adv["weights"] is None and isinstance(env.config.get("weights"), str):
        adv["weights"] = env.config["weights"]  # CONFIG's basic keys may carry it too
    checks = [
        (env.epochs >= 1, f"EPOCHS={env.epochs} must be at least 1"),
        (env.batch_size >= 1, f"BATCH_SIZE={env.batch_size} must be at least 1"),
        (env.learning_rate > 0, f"LEARNING_RATE={env.learning_rate} must be positive"),
        (8 <= env.image_size <= 4096, f"IMAGE_SIZE={env.image_size} must be within 8..4096"),
        (0 < adv["val_fraction"] < 1, f"val_fraction={adv['val_fraction']} must be within (0, 1)"),
        (0 <= adv["label_smoothing"] < 1, f"label_smoothing={adv['label_smoothing']} must be within [0, 1)"),
        (adv["mixup"] >= 0 and adv["cutmix"] >= 0, "mixup and cutmix must not be negative"),
        (adv["mixup_mode"] in ("batch", "pair", "elem"),
         f"mixup_mode={adv['mixup_mode']!r} is not batch, pair or elem"),
        (adv["save_period"] >= 0, "save_period must not be negative"),
        (adv["workers"] is None or adv["workers"] >= 0, "workers must not be negative"),
        (not (adv["pretrained"] and adv["weights"]), "give either pretrained or weights, not both"),
    ]
    problems = [msg for ok, msg in checks if not ok]
    if problems:
        raise ConfigError("; ".join(problems))
    if not env.model_name:
        raise ConfigError("MODEL_NAME is not set")
    num_cpus = env_number("NUM_CPUS", 0.0)
    return Options(model_name=env.model_name, epochs=env.epochs, batch_size=env.batch_size,
                   lr=env.learning_rate, image_size=env.image_size, device=env.device,
                   num_cpus=num_cpus, resume_from=env.resume_from, adv=adv, given=dict(advanced))


def check_model_name(name: str) -> None:
    """The name must be one timm knows (any of ``timm.list_models()``; a ``.tag`` is allowed)."""
    import timm
    from timm.models import split_model_name_tag

    base, _tag = split_model_name_tag(name)
    if timm.is_model(base):
        return
    close = timm.list_models(f"*{base[:6]}*")[:8] if len(base) >= 3 else []
    hint = f"; similar: {', '.join(close)}" if close else ""
    raise ConfigError(f"unknown timm model {name!r} (not in timm.list_models(){hint})")
