"""Building blocks of the timm trainer: data, model and weights, optimizer/scheduler/loss,
evaluation. Imported by train.py once the configuration has been checked (torch and timm are
slow to import; a bad config fails before that)."""
from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path
from typing import Any

import torch

import timm_common as common
import timm_options
from sdk import CheckpointError, ConfigError, DatasetError, TrainerSDK
from sdk import distributed as dist


# ----------------------------------------------------------------------------- data
def class_info(src_root: Path, train_dir: Path) -> tuple[list[str], list[str], list[Any]]:
    """(folder per index, class name per index, dataset class id per index). For DICE data the
    names and ids are the DICE ones, in class-id order; otherwise the sorted folder names."""
    dirs = sorted(d.name for d in train_dir.iterdir() if d.is_dir()) if train_dir.is_dir() else []
    if not dirs:
        raise DatasetError(f"no class folders under {train_dir}")
    ann = src_root / "annotations.json"
    if ann.is_file():
        try:
            from sdk.datasets.convert import _safe_dir_name  # how the SDK names the folders
            classes = sorted(json.loads(ann.read_text())["classes"], key=lambda c: (str(type(c["id"])), c["id"]))
            folder: dict[Any, str] = {}
            for c in classes:
                d = _safe_dir_name(str(c["name"]))
                folder[c["id"]] = f"{d}_{c['id']}" if d in folder.values() else d
            if sorted(folder.values()) == dirs:
                return ([folder[c["id"]] for c in classes], [str(c["name"]) for c in classes],
                        [c["id"] for c in classes])
        except (ImportError, KeyError, TypeError, ValueError):
            pass
    return dirs, list(dirs), list(range(len(dirs)))


def build_loaders(opts: timm_options.Options, folder: Path, class_dirs: list[str], data_config: dict[str, Any],
                  device: torch.device, mixup_on: bool, rank: int = 0, world: int = 1):
    """(train loader, validation loader, DataLoader workers, the training sampler or None).

    One process: shuffled by a seeded generator, as ever. A rank of ``world``: BATCH_SIZE is the
    job's (global) batch, each rank taking BATCH_SIZE // world of it (as Ultralytics' DDP does), so
    a job trains with the same batch and learning rate whatever its number of ranks (a checkpoint
    resumes with any); a seeded DistributedSampler gives each rank a 1/world share, reshuffled
    each epoch (``set_epoch``). Validation is sharded without padding (rank r: images r, r+world,
    ...), every image seen once; train.py sums the counts over ranks."""
    from timm.data import create_transform

    cfg = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data_config.items()}
    train_tf = create_transform(
        **cfg, is_training=True, no_aug=opts.no_aug, scale=tuple(opts.scale), ratio=tuple(opts.ratio),
        hflip=opts.hflip, vflip=opts.vflip, color_jitter=opts.color_jitter, auto_augment=opts.auto_augment,
        re_prob=opts.re_prob)
    train_ds = common.FolderDataset(folder / "train", class_dirs, train_tf)
    val_ds = common.FolderDataset(folder / "val", class_dirs, common.eval_transform(data_config))
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise DatasetError(f"the dataset needs training and validation images "
                           f"(train: {len(train_ds)}, val: {len(val_ds)})")
    sampler = None
    per_rank = len(train_ds)
    if world > 1:
        sampler = torch.utils.data.distributed.DistributedSampler(
            train_ds, num_replicas=world, rank=rank, shuffle=True, seed=opts.seed, drop_last=False)
        per_rank = len(sampler)
        val_ds = torch.utils.data.Subset(val_ds, range(rank, len(val_ds), world))
    batch = min(max(1, opts.batch_size // world), per_rank)
    if mixup_on:
        batch = max(2, batch - batch % 2)  # timm's Mixup pairs samples within a batch
    cpus = max(1, int(opts.num_cpus or os.cpu_count() or 1))
    if opts.workers is not None:
        workers = opts.workers
    elif device.type == "cuda":
        workers = min(8, max(2, cpus - 1))
    else:  # small CPU jobs: the training itself needs every core
        workers = 0 if cpus <= 4 else min(4, cpus // 2)
    common_kw: dict[str, Any] = {"num_workers": workers, "pin_memory": device.type == "cuda",
                                 "persistent_workers": workers > 0}
    gen = torch.Generator().manual_seed(opts.seed)
    # BatchNorm cannot train on a batch of one; mixup needs full (even) batches
    drop_last = mixup_on or per_rank % batch == 1
    order: dict[str, Any] = {"sampler": sampler} if sampler is not None else {"shuffle": True, "generator": gen}
    train_dl = torch.utils.data.DataLoader(train_ds, batch_size=batch, drop_last=drop_last, **order, **common_kw)
    val_dl = torch.utils.data.DataLoader(val_ds, batch_size=max(batch, 32), shuffle=False, **common_kw)
    return train_dl, val_dl, workers, sampler


# ----------------------------------------------------------------------------- model
def build_model(sdk: TrainerSDK, opts: timm_options.Options, num_classes: int,
                work: Path) -> tuple[torch.nn.Module, dict, str]:
    kwargs: dict[str, Any] = {"img_size": opts.image_size}
    for key in ("drop_rate", "drop_path_rate"):
        if opts.adv[key] is not None:
            kwargs[key] = opts.adv[key]
    random.seed(opts.seed)  # model init, augmentation and data order follow the seed
    torch.manual_seed(opts.seed)
    try:
        model, kwargs = common.create_model(opts.model_name, num_classes, kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {opts.model_name!r} does not accept these options: {exc}") from None
    source = "random init (pretrained=False)"
    weights = None
    if opts.resume_from:
        pass  # the resume checkpoint brings the weights
    elif opts.pretrained:
        weights, source = fetch_pretrained(sdk, opts.model_name, work), "bucket pretrained weights"
    elif opts.weights:
        weights, source = fetch(sdk, opts.weights, "weights", work), f"weights {opts.weights}"
    if weights is not None:
        try:
            report = common.load_weights(model, weights)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ConfigError(f"cannot load {source} into {opts.model_name}: {exc}") from None
        if report["skipped"]:
            sdk.log("INFO", f"weights: {len(report['skipped'])} tensor(s) re-initialised for {num_classes} "
                            f"classes: {', '.join(report['skipped'][:6])}")
        if report["missing"]:
            sdk.log("WARNING", f"weights: {len(report['missing'])} tensor(s) missing: "
                               f"{', '.join(report['missing'][:6])}")
    return model, kwargs, source


def seed_rank(seed: int, rank: int) -> None:
    """After the model is built (the same initial weights on every rank): each rank its own random
    stream for augmentation and dropout, reproducible from the job's seed."""
    random.seed(seed + rank)
    torch.manual_seed(seed + rank)


def fetch(sdk: TrainerSDK, uri: str, what: str, work: Path) -> Path:
    dest = work / "weights"
    dest.mkdir(parents=True, exist_ok=True)
    try:
        return sdk.download_checkpoint(uri, dest)
    except CheckpointError as exc:
        raise ConfigError(f"{what} {uri!r} cannot be read: {exc}") from None


def fetch_pretrained(sdk: TrainerSDK, model_name: str, work: Path) -> Path:
    keys = [f"models/pretrained/timm/{model_name}{ext}" for ext in (".safetensors", ".pth")]
    for key in keys:
        try:
            return fetch(sdk, key, "pretrained", work)
        except ConfigError:
            continue
    raise ConfigError(f"pretrained=true but no weights for {model_name!r} in the bucket "
                      f"(looked for {' and '.join(keys)}); nothing is downloaded from a hub")


def build_optimization(opts: timm_options.Options, model: torch.nn.Module, updates_per_epoch: int):
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    extra: dict[str, Any] = {}
    if opts.opt_eps is not None:
        extra["eps"] = opts.opt_eps
    if opts.opt_betas is not None:
        extra["betas"] = tuple(opts.opt_betas)
    try:
        optimizer = create_optimizer_v2(model, opt=opts.opt, lr=opts.lr, weight_decay=opts.weight_decay,
                                        momentum=opts.momentum, layer_decay=opts.layer_decay, **extra)
    except (ValueError, TypeError, KeyError, AssertionError) as exc:
        raise ConfigError(f"optimizer opt={opts.opt!r}: {exc}") from None
    try:
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=opts.sched, num_epochs=max(1, opts.epochs - opts.cooldown_epochs),
            decay_epochs=opts.decay_epochs, decay_milestones=list(opts.decay_milestones),
            cooldown_epochs=opts.cooldown_epochs, patience_epochs=opts.patience_epochs,
            decay_rate=opts.decay_rate, min_lr=opts.min_lr, warmup_lr=opts.warmup_lr,
            warmup_epochs=opts.warmup_epochs, plateau_mode="max",
            step_on_epochs=not opts.sched_on_updates, updates_per_epoch=updates_per_epoch)
    except (ValueError, TypeError, KeyError, AssertionError) as exc:
        raise ConfigError(f"scheduler sched={opts.sched!r}: {exc}") from None
    return optimizer, scheduler


def build_loss(opts: timm_options.Options, num_classes: int):
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if opts.mixup > 0 or opts.cutmix > 0:
        mixup = Mixup(mixup_alpha=opts.mixup, cutmix_alpha=opts.cutmix, prob=opts.mixup_prob,
                      switch_prob=opts.mixup_switch_prob, mode=opts.mixup_mode,
                      label_smoothing=opts.label_smoothing, num_classes=num_classes)
        return mixup, SoftTargetCrossEntropy()
    if opts.label_smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=opts.label_smoothing)
    return None, torch.nn.CrossEntropyLoss()


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model, loader, device, num_classes, tick, autocast: torch.dtype | None = None,
             channels_last: bool = False) -> dict[str, Any]:
    """Loss, top-1 (top-5 past five classes), the confusion matrix and per-class precision and
    recall over ``loader``; under autocast in ``autocast``'s dtype when given, as training runs.
    In a distributed job each rank evaluates its shard and the counts are summed over ranks
    before anything is computed from them: every rank gets the metrics of the whole set."""
    model.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    loss_sum, n, top5_hits = 0.0, 0, 0
    for i, (x, y) in enumerate(loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with (torch.autocast(device_type=device.type, dtype=autocast) if autocast is not None
              else contextlib.nullcontext()):
            logits = model(x)
        logits = logits.float()
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        n += y.numel()
        pred = logits.argmax(1)
        cm += torch.bincount((y * num_classes + pred).cpu(), minlength=num_classes ** 2).view(num_classes, num_classes)
        if num_classes > 5:
            top5_hits += (logits.topk(5, 1).indices == y[:, None]).any(1).sum().item()
        tick(i + 1)
    if dist.active():  # one process: as it was
        cm = dist.all_reduce_tensor(cm)
        sums = dist.all_reduce_sum({"loss_sum": loss_sum, "n": n, "top5_hits": top5_hits})
        loss_sum, n, top5_hits = sums["loss_sum"], int(sums["n"]), int(sums["top5_hits"])
    correct = cm.diag()
    predicted, actual = cm.sum(0), cm.sum(1)
    out: dict[str, Any] = {"val_loss": loss_sum / max(n, 1), "top1": correct.sum().item() / max(n, 1),
                           "confusion_matrix": cm.tolist(),
                           "precision": (correct / predicted.clamp(min=1)).tolist(),
                           "recall": (correct / actual.clamp(min=1)).tolist(), "support": actual.tolist()}
    if num_classes > 5:  # top-5 of five or fewer classes is always 1
        out["top5"] = top5_hits / max(n, 1)
    return out


def load_resume(sdk: TrainerSDK, opts: timm_options.Options, class_names: list[str], work: Path) -> dict[str, Any]:
    dest = work / "resume"
    dest.mkdir(parents=True, exist_ok=True)
    path = sdk.download_checkpoint(opts.resume_from, dest)
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {opts.resume_from}: {exc}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != common.CHECKPOINT_FORMAT:
        raise CheckpointError(f"{opts.resume_from} is not a timm trainer checkpoint")
    if ckpt["model_name"] != opts.model_name or list(ckpt["class_names"]) != class_names:
        raise CheckpointError(f"{opts.resume_from} is for {ckpt['model_name']} with classes {ckpt['class_names']}, "
                              f"not {opts.model_name} with {class_names}")
    sdk.log("INFO", f"resuming from {opts.resume_from} after epoch {ckpt['epoch']}")
    return ckpt
