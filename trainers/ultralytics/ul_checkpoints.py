"""Ultralytics checkpoints: read, patch for a resumed attempt, tag with the platform's metadata."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sdk import CheckpointError

META_KEY = "vtp"  # our metadata inside a .pt: class ids, task, job; Ultralytics ignores unknown keys


def load(path: str | Path) -> dict[str, Any]:
    from ultralytics.utils.patches import torch_load

    try:
        ckpt = torch_load(str(path), map_location="cpu")
    except Exception as exc:
        raise CheckpointError(f"{Path(path).name} is not a readable checkpoint: {type(exc).__name__}: {exc}") from None
    if not isinstance(ckpt, dict) or not (ckpt.get("ema") or ckpt.get("model")):
        raise CheckpointError(f"{Path(path).name} is not an Ultralytics checkpoint (no model inside)")
    return ckpt


def save(ckpt: dict[str, Any], path: str | Path) -> None:
    from ultralytics.utils.patches import torch_save

    tmp = Path(path).with_suffix(".tmp")
    torch_save(ckpt, str(tmp))
    tmp.replace(path)


def resumable(ckpt: dict[str, Any]) -> bool:
    """A `last` taken during training: epoch and optimizer state are still inside."""
    return ckpt.get("optimizer") is not None and int(ckpt.get("epoch", -1)) >= 0


def prepare_resume(path: Path, updates: dict[str, Any], total_epochs: int) -> dict[str, Any]:
    """Point the checkpoint's train_args at this attempt (data, save_dir, device, ...) and the
    job's full epoch count; returns {epoch, train_results, train_args} of the checkpoint."""
    ckpt = load(path)
    if not resumable(ckpt):
        raise CheckpointError(f"{path.name} holds no optimizer state (a final or stripped checkpoint); "
                              "it cannot resume training")
    args = dict(ckpt.get("train_args") or {})
    args.update(updates)
    args["epochs"] = total_epochs
    args["exist_ok"] = True
    args["resume"] = False  # set again by Ultralytics from the resume= argument
    ckpt["train_args"] = args
    save(ckpt, path)
    return {"epoch": int(ckpt["epoch"]), "train_results": ckpt.get("train_results") or {},
            "train_metrics": ckpt.get("train_metrics") or {}, "train_args": args}


def restore_results_csv(results: dict[str, list], csv_path: Path) -> None:
    """Write the earlier attempts' rows so results.csv covers every epoch of the job."""
    if not results or "epoch" not in results:
        return
    keys = list(results)
    rows = zip(*(results[k] for k in keys))
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", encoding="utf-8") as f:
        f.write(",".join(keys) + "\n")
        for row in rows:
            f.write(",".join("" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v) for v in row) + "\n")


def tag(path: Path, meta: dict[str, Any]) -> None:
    """Store the platform's metadata (DICE class ids per model index, task, job) in the .pt."""
    if not path.is_file():
        return
    ckpt = load(path)
    ckpt[META_KEY] = meta
    save(ckpt, path)


def metadata(ckpt: dict[str, Any]) -> dict[str, Any]:
    meta = ckpt.get(META_KEY)
    return meta if isinstance(meta, dict) else {}
