"""What to train: task, model, and the Ultralytics arguments of one job (validated up front).

Arguments come from three places, later ones winning:

1. the trainer's defaults for this machine (device, workers, amp, nbs = batch, ...);
2. ``CONFIG`` (the job's ``config``) and ``CONFIG.advanced_config``: Ultralytics' own argument
   names (``lr0``, ``mosaic``, ``optimizer``, ``patience``, ...) pass through unchanged;
3. the job's own fields (EPOCHS, BATCH_SIZE, IMAGE_SIZE): the platform tracks progress against
   them, so a different ``epochs``/``batch``/``imgsz`` in the config is refused.

``LEARNING_RATE`` becomes ``lr0`` unless the config names ``lr0`` itself. Any other name is
refused with CONFIG_ERROR before anything is downloaded or trained, naming the offending keys
(with Ultralytics' closest names as suggestions); so are values Ultralytics' own ``check_cfg``
rejects.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk import ConfigError, TrainerEnv

TASKS = {"object_detection": "detect", "instance_segmentation": "segment", "image_classification": "classify"}
TASK_SUFFIX = {"detect": "", "segment": "-seg", "classify": "-cls"}
KNOWN_SUFFIXES = ("-seg", "-cls", "-pose", "-obb", "-sem", "-depth")

# Keys of CONFIG's top level that are the platform's, not Ultralytics' (contract_env.build and
# seed 001's basic config put them there).
PLATFORM_KEYS = {"epochs", "batch", "batch_size", "imgsz", "image_size", "learning_rate", "lr", "device",
                 "model_name", "task_type", "advanced_config", "weights", "pretrained_weights",
                 "val_fraction", "val_ratio", "split_seed", "framework", "dataset_id",
                 "torch_threads",   # ul_runtime.torch_threads: the job's own thread count
                 "channels_last"}   # ul_runtime.use_channels_last: the model's memory format
WEIGHTS_KEYS = ("weights", "pretrained_weights")
# Ultralytics arguments the trainer itself owns: where data and runs live, which device Ray gave.
MANAGED = {"data", "model", "task", "mode", "project", "name", "save_dir", "resume", "exist_ok", "cfg", "device"}
JOB_FIELDS = {"epochs": "EPOCHS", "batch": "BATCH_SIZE", "imgsz": "IMAGE_SIZE"}


@dataclass
class Plan:
    task: str                       # detect | segment | classify
    model_stem: str                 # e.g. yolo11n-seg
    model_yaml: str                 # e.g. yolo11n-seg.yaml
    weights_uri: str | None         # CONFIG weights (s3://… or a local path)
    use_pretrained: bool            # look for models/pretrained/ultralytics/{stem}.pt
    user_args: dict[str, Any]       # validated Ultralytics arguments from the config
    val_fraction: float = 0.2
    split_seed: int = 0
    channels_last: bool | None = None   # None: the platform's default for the device
    warnings: list[str] = field(default_factory=list)


def ultralytics_task(task_type: str) -> str:
    try:
        return TASKS[task_type]
    except KeyError:
        raise ConfigError(f"the ultralytics trainer does not train task_type {task_type!r}; "
                          f"supported: {', '.join(TASKS)}") from None


def model_stem(model_name: str, task: str) -> str:
    """``yolo11n`` -> ``yolo11n-seg`` for segmentation; a task suffix that contradicts the task
    (``yolo11n-cls`` for detection) is a config error."""
    name = Path(model_name.strip()).name
    name = re.sub(r"\.(pt|ya?ml)$", "", name, flags=re.I)
    if not re.fullmatch(r"[A-Za-z0-9][\w.\-]*", name or ""):
        raise ConfigError(f"invalid model name {model_name!r}")
    wanted = TASK_SUFFIX[task]
    for suffix in KNOWN_SUFFIXES:
        if name.lower().endswith(suffix):
            if suffix != wanted:
                raise ConfigError(f"model {model_name!r} is a {suffix[1:]} model; task {task} needs "
                                  f"{name[: -len(suffix)]}{wanted or ''} (or the plain name)")
            return name
    return name + wanted


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=2, cutoff=0.6)
    return f"{key!r} (did you mean {' or '.join(repr(c) for c in close)}?)" if close else repr(key)


def collect_user_args(env: TrainerEnv, default_cfg: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Ultralytics arguments named in CONFIG and advanced_config, checked against DEFAULT_CFG_DICT."""
    advanced = env.advanced_config()
    top = {k: v for k, v in env.config.items() if k not in PLATFORM_KEYS}
    merged: dict[str, Any] = {**top, **advanced}
    valid = sorted(default_cfg)
    unknown = sorted(k for k in merged if k not in default_cfg and k not in PLATFORM_KEYS)
    if unknown:
        raise ConfigError("unknown hyperparameter(s) for ultralytics: "
                          + ", ".join(_suggest(k, valid) for k in unknown)
                          + "; use Ultralytics' own argument names (see ultralytics/cfg/default.yaml)")
    managed = sorted(k for k in merged if k in MANAGED)
    if managed:
        raise ConfigError(f"hyperparameter(s) {', '.join(managed)} are set by the platform, not the job config")
    warnings: list[str] = []
    job_values = {"epochs": env.epochs, "batch": env.batch_size, "imgsz": env.image_size}
    for key, var in JOB_FIELDS.items():
        if key in advanced and advanced[key] != job_values[key]:
            raise ConfigError(f"advanced_config {key}={advanced[key]!r} contradicts the job's {var}="
                              f"{job_values[key]}; set it on the job instead")
        merged.pop(key, None)
    # seed 001 style: advanced_config may repeat basic keys under the platform's names
    for key in PLATFORM_KEYS & set(advanced):
        merged.pop(key, None)
    return merged, warnings


def build_plan(env: TrainerEnv) -> Plan:
    """Everything the config decides; raises ConfigError (nothing downloaded or imported yet
    beyond ultralytics.cfg)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    task = ultralytics_task(env.task_type)
    if not env.model_name:
        raise ConfigError("MODEL_NAME is not set")
    stem = model_stem(env.model_name, task)
    if env.epochs < 1:
        raise ConfigError(f"EPOCHS must be at least 1 (got {env.epochs})")
    if env.batch_size < 1:
        raise ConfigError(f"BATCH_SIZE must be at least 1 (got {env.batch_size})")
    if env.image_size < 32:
        raise ConfigError(f"IMAGE_SIZE must be at least 32 (got {env.image_size})")
    user_args, warnings = collect_user_args(env, DEFAULT_CFG_DICT)
    config = {**env.config, **env.advanced_config()}
    weights = next((str(config[k]) for k in WEIGHTS_KEYS if config.get(k)), None)
    pretrained = user_args.get("pretrained", True)
    if isinstance(pretrained, str) and pretrained not in ("True", "False", "true", "false"):
        weights = weights or pretrained  # Ultralytics' pretrained=<path> names weights too
        user_args.pop("pretrained")
        pretrained = True
    use_pretrained = str(pretrained).lower() != "false"
    user_args.pop("pretrained", None)
    try:
        val_fraction = float(config.get("val_fraction", config.get("val_ratio", 0.2)))
        split_seed = int(config.get("split_seed", 0))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid dataset split setting: {exc}") from None
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be between 0 and 1 (got {val_fraction})")
    return Plan(task=task, model_stem=stem, model_yaml=f"{stem}.yaml", weights_uri=weights,
                use_pretrained=use_pretrained, user_args=user_args, val_fraction=val_fraction,
                split_seed=split_seed, channels_last=channels_last_choice(config), warnings=warnings)


def channels_last_choice(config: dict[str, Any]) -> bool | None:
    """`channels_last` from the job's config (top level or advanced_config, merged): true, false,
    or None for the platform's default (ul_runtime.use_channels_last)."""
    value = config.get("channels_last")
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"channels_last must be true or false (got {value!r})")
    return value


def check_values(args: dict[str, Any]) -> None:
    """Ultralytics' own type/range checks of the final arguments, as CONFIG_ERROR."""
    from ultralytics.cfg import DEFAULT_CFG_DICT, get_cfg

    try:
        get_cfg(DEFAULT_CFG_DICT, {k: v for k, v in args.items() if k != "save_dir"})
    except (TypeError, ValueError, SyntaxError) as exc:
        raise ConfigError(f"invalid hyperparameter value: {exc}") from None


def check_model_config(model_yaml: str) -> None:
    """The model's architecture file must ship with Ultralytics (nothing is downloaded)."""
    from ultralytics.nn.tasks import yaml_model_load

    try:
        yaml_model_load(model_yaml)
    except Exception as exc:  # FileNotFoundError, or Ultralytics' own lookup error
        raise ConfigError(f"unknown model {Path(model_yaml).stem!r}: Ultralytics has no architecture "
                          f"file for it ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                          ) from None
