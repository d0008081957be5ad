"""timm image-classification trainer for the Vision Training Platform (DESIGN §3).

Environment in (the contract): MODEL_NAME (any timm model), DATASET_ID, EPOCHS, BATCH_SIZE,
LEARNING_RATE, IMAGE_SIZE, DEVICE, NUM_CPUS, RESUME_FROM, CONFIG.advanced_config (keys in
timm_options.ADVANCED; unknown keys are a CONFIG_ERROR). Out: heartbeats every epoch and every
~2 s within one, `validation_complete` events with per-class precision/recall and the confusion
matrix, checkpoints `last` (every epoch, with optimizer/scheduler state for resuming) and `best`
(on a better val top-1) uploaded in the background, MLflow run `job-{id}`, and `done`.

Data-parallel when WORLD_SIZE > 1 (trainers/README.md, "Distributed trainers"): one process per
rank, DistributedDataParallel over Gloo (CPU) or NCCL (one GPU per rank, DEVICE's first), a seeded
DistributedSampler, BATCH_SIZE split over the ranks, validation sharded and summed over ranks, the
train loss averaged over ranks by samples, the stop decided together (any_rank), checkpoints of the
unwrapped model written by rank 0 alone (they resume with any number of ranks). Every rank logs
`rank R/W epoch E: trained on N samples` each epoch and `rank R/W weights sha256 HEX` at the end
(a single process too, as rank 0/1).

Files: train.py (this: config check, the loop, reporting), timm_options.py (advanced_config keys
and checks), timm_setup.py (data, model/weights, optimizer/scheduler/loss, evaluation),
timm_common.py (checkpoint format, model and transforms shared with predict.py).

Models are built from config (`pretrained=False`) or from weights in the bucket; nothing is
downloaded from a hub. Run it locally with nothing but storage variables (callbacks are then only
logged): `DATASET_ID=… MODEL_NAME=test_resnet EPOCHS=2 IMAGE_SIZE=64 STORAGE_BUCKET=… python train.py`.
"""
from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper modules beside this file

# Only light imports here: torch and timm take seconds, and a bad config must fail before them.
import timm_options  # noqa: E402
from sdk import CallbackError, ConfigError, ErrorType, TrainerSDK, amp, run_main  # noqa: E402
from sdk import distributed as dist  # noqa: E402
from sdk.errors import error_type_of  # noqa: E402
from sdk.liveness import Heartbeats  # noqa: E402

HEARTBEAT_EVERY_S = 2.0


# ----------------------------------------------------------------------------- main
def main(sdk: TrainerSDK) -> int:
    state: dict[str, Any] = {"epoch": 0}
    try:
        return train(sdk, state)
    except CallbackError:
        raise  # exit 2: the backend cannot be told anything
    except BaseException as exc:  # noqa: BLE001 - reported with its type and traceback
        # ImageReadError: timm_common's, also when re-raised from a DataLoader worker
        etype = (ErrorType.DATASET_ERROR if type(exc).__name__ == "ImageReadError"
                 else error_type_of(exc, default=ErrorType.FRAMEWORK_ERROR))
        sdk.log("ERROR", f"{etype}: {type(exc).__name__}: {exc}")
        sdk.report_failed(etype, f"{type(exc).__name__}: {exc}" if etype == ErrorType.FRAMEWORK_ERROR else str(exc),
                          traceback.format_exc(), epochs_completed=state["epoch"])
        # SystemExit, not `return 1`: run_main reads a returned 1 as True (1 == True), i.e. success
        raise SystemExit(1) from None


def train(sdk: TrainerSDK, state: dict[str, Any]) -> int:
    t_start = time.monotonic()
    opts = timm_options.parse(sdk.env, sdk.get_advanced_config())  # before anything slow
    sdk.report_started(total_epochs=opts.epochs, resume_from=opts.resume_from)
    # heartbeats from a thread until the loop starts: imports, MLflow, download, model build
    with Heartbeats(sdk, opts.epochs):
        run = TimmRun(sdk, opts, state)
    run.announce()
    for epoch in range(state["epoch"] + 1, opts.epochs + 1):
        if not run.train_epoch(epoch):
            break
        run.validate(epoch)
        state["epoch"] = epoch
        run.save_epoch(epoch)
    run.log_checksum()
    # cancel (or SIGTERM): keep the work done so far and exit 0; the platform marks the job CANCELLED
    # (run.stopped, not sdk.should_stop: on a rank > 0 the stop came from rank 0 through any_rank)
    if run.stopped and state["epoch"] < opts.epochs:
        if sdk.is_main:  # alone, no collective: its wait for the upload may outlast VTP_DIST_TIMEOUT_S
            run.save_stopped()
    else:
        run.complete(time.monotonic() - t_start)  # rank 0 reports; the others' SDK sends nothing
    dist.shutdown()
    return 0


class TimmRun:
    """One training run: what the loop needs, built while the keep-alive thread beats (imports,
    MLflow, dataset, model, resume), and the steps of an epoch."""

    def __init__(self, sdk: TrainerSDK, opts: timm_options.Options, state: dict[str, Any]):
        timm_options.check_model_name(opts.model_name)  # imports timm (and torch)
        import torch

        import timm_common as common
        import timm_setup as setup

        self.sdk, self.opts, self.state, self.torch, self.common, self.setup = sdk, opts, state, torch, common, setup
        if sdk.task_type and sdk.task_type != "image_classification":
            raise ConfigError(f"the timm trainer does image_classification, not {sdk.task_type}")
        self.device = device = common.torch_device(opts.device)
        self.rank, self.world = dist.rank(), dist.world_size()
        if device.type == "cuda" and self.world > 1:
            torch.cuda.set_device(device)  # NCCL and DDP work on the current device
        if opts.num_cpus:
            torch.set_num_threads(max(1, int(opts.num_cpus)))
        sdk.start_mlflow_run()
        sdk.log_params(opts.params())
        # a rank's own files: ranks on one node may share WORK_DIR (the converted dataset, downloads)
        work = sdk.work_dir if self.world == 1 else sdk.work_dir / f"rank-{self.rank}"

        src_root = sdk.download_dataset()
        folder = sdk.convert_dataset(src_root, "imagefolder", val_fraction=opts.val_fraction, seed=opts.seed,
                                     out_dir=work / "dataset-imagefolder")
        self.class_dirs, self.class_names, self.class_ids = setup.class_info(src_root, folder / "train")
        self.num_classes = num_classes = len(self.class_dirs)
        self.model, self.model_kwargs, self.source = setup.build_model(sdk, opts, num_classes, work)
        if self.world > 1:  # the same initial weights on every rank (DDP checks), each its own augmentation
            setup.seed_rank(opts.seed, self.rank)
        resume = None
        if opts.resume_from:  # every rank loads it: its own download of the same checkpoint
            resume = setup.load_resume(sdk, opts, self.class_names, work)
            self.model.load_state_dict(resume["model"])
        self.data_config = common.data_config_for(self.model, opts.image_size, opts.adv)
        self.mixup, self.criterion = setup.build_loss(opts, num_classes)
        self.train_dl, self.val_dl, self.workers, self.sampler = setup.build_loaders(
            opts, folder, self.class_dirs, self.data_config, device, mixup_on=self.mixup is not None,
            rank=self.rank, world=self.world)
        val_ds = self.val_dl.dataset  # a rank's shard (a Subset) in a distributed job
        self.val_images = len(val_ds.dataset if isinstance(val_ds, torch.utils.data.Subset) else val_ds)
        self.model.to(device)
        # on a CPU channels-last weights and batches: oneDNN's convolutions are faster so (0.76-0.95x a
        # step on resnets, bench/README.md, training speed); on a GPU when the job asks for it
        self.channels_last = opts.channels_last if opts.channels_last is not None else device.type == "cpu"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.amp, self.amp_dtype = self.precision()
        # what trains: the model itself, or its DistributedDataParallel wrapper (gradients averaged
        # over ranks in backward); self.model stays the plain module: evaluation, checkpoints and
        # checksums use it, so a checkpoint holds no "module." prefix and resumes with any world size
        self.net = self.model
        if dist.init(device.type):
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.optimizer, self.scheduler = setup.build_optimization(opts, self.model, len(self.train_dl))
        # float16 needs loss scaling; bfloat16 (the CPU's autocast dtype) has float32's range
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.best: dict[str, Any] = {"top1": -1.0, "epoch": 0, "uri": None}
        self.metrics: dict[str, Any] = {}
        if resume is not None:
            self._resume(resume)
        self.total_steps = len(self.train_dl) + len(self.val_dl)
        self.updates = state["epoch"] * len(self.train_dl)
        self.ckpt_dir = sdk.work_dir / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.last_uri = opts.resume_from
        self.seen = 0  # samples of the current epoch trained on (by this rank)
        self.stopped = False  # the gang agreed to stop (any_rank): on every rank, not only rank 0

    def precision(self) -> tuple[bool, Any]:
        """(AMP on, its dtype): autocast where the SDK's offline check of this model agrees (float16 on
        a GPU; bfloat16 on a CPU that has it natively, elsewhere it is emulated and slower); the
        job's `amp` is kept either way, and the check's outcome goes to the log."""
        asked, dtype = self.opts.amp, amp.autocast_dtype(self.device.type)
        if asked is False:
            return False, dtype
        ok, why = amp.decide(self.model, imgsz=self.opts.image_size)
        self.sdk.log(*amp.report_line(ok, why, forced=bool(asked)))
        return bool(ok or asked), dtype

    def _resume(self, resume: dict[str, Any]) -> None:
        """Restore what the `last` checkpoint saved: optimizer, scheduler, scaler, epoch, best."""
        self.optimizer.load_state_dict(resume["optimizer"])
        self.scheduler.load_state_dict(resume["scheduler"])
        if resume.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(resume["scaler"])
        self.state["epoch"] = int(resume["epoch"])
        self.best = {"top1": resume.get("best_top1", -1.0), "epoch": resume.get("best_epoch", 0),
                     "uri": resume.get("best_uri")}
        self.metrics = dict(resume.get("metrics") or {})
        self.sdk.event("resumed", f"resuming after epoch {self.state['epoch']} of {self.opts.epochs}",
                       data={"resume_from": self.opts.resume_from, "epoch": self.state["epoch"]})

    def announce(self) -> None:
        n_params = sum(p.numel() for p in self.model.parameters())
        train_images, val_images = len(self.train_dl.dataset), self.val_images
        self.sdk.event(
            "model_initialized", f"{self.opts.model_name}: {n_params / 1e6:.2f}M parameters, {self.num_classes} classes",
            data={"model_name": self.opts.model_name, "parameters": n_params, "num_classes": self.num_classes,
                  "class_names": self.class_names, "weights": self.source, "data_config": self.data_config,
                  "device": str(self.device), "amp": self.amp, "workers": self.workers,
                  "amp_dtype": amp.dtype_name(self.amp_dtype) if self.amp else None,
                  "channels_last": self.channels_last,
                  "torch_threads": self.torch.get_num_threads(), "train_images": train_images,
                  "val_images": val_images})
        self.sdk.log_params({"num_classes": self.num_classes, "parameters": n_params, "train_images": train_images,
                             "val_images": val_images, "channels_last": self.channels_last,
                             "amp_effective": self.amp})
        precision = f"AMP on ({amp.dtype_name(self.amp_dtype)})" if self.amp else "AMP off"
        self.sdk.log("INFO", f"training {self.opts.epochs} epochs on {self.device} ({self.torch.get_num_threads()} "
                     f"torch threads, {self.workers} data-loader workers, "
                     f"{'channels_last' if self.channels_last else 'contiguous'} memory format, {precision}, "
                     f"{len(self.train_dl)} batches per epoch)")
        if self.world > 1:
            self.sdk.log("INFO", f"rank {self.rank}/{self.world} data-parallel over {dist.backend_for(self.device.type)}"
                                 f": {len(self.sampler) if self.sampler is not None else train_images} of {train_images} training "
                                 f"images an epoch, batch "
                                 f"{self.train_dl.batch_size} per rank, {self.train_dl.batch_size * self.world} in all")

    def train_epoch(self, epoch: int) -> bool:
        """One pass over the training set (this rank's share of it); False when a stop was asked
        for mid-way (on any rank: rank 0 hears a cancel, each rank its own SIGTERM)."""
        torch, opts, sdk = self.torch, self.opts, self.sdk
        self.model.train()
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        last_beat, loss_sum, self.seen = time.monotonic(), 0.0, 0
        for step, (x, y) in enumerate(self.train_dl, 1):
            if dist.any_rank(sdk.should_stop):  # together: a rank leaving alone hangs the others
                self.stopped = True
                return False
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.mixup is not None:
                x, y = self.mixup(x, y)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                loss = self.criterion(self.net(x), y)
            diverged = not torch.isfinite(loss)
            # together, or the ranks whose loss is finite would wait for the others in backward and
            # then report the one that left as a lost peer (retried) instead of a divergence (final)
            if dist.any_rank(diverged):
                raise FloatingPointError(f"training loss is {loss.item() if diverged else 'not finite on another rank'}"
                                         f" at epoch {epoch} step {step}; lower LEARNING_RATE ({opts.lr})")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if opts.clip_grad:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), opts.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.updates += 1
            if opts.sched_on_updates:
                self.scheduler.step_update(num_updates=self.updates)
            loss_sum += loss.item() * x.shape[0]
            self.seen += x.shape[0]
            if time.monotonic() - last_beat >= HEARTBEAT_EVERY_S:
                last_beat = time.monotonic()
                sdk.heartbeat(epoch, opts.epochs, step, self.total_steps)
        sdk.log("INFO", f"rank {self.rank}/{self.world} epoch {epoch}: trained on {self.seen} samples")
        # BatchNorm statistics: each rank's last forward updated its own; rank 0's everywhere, so
        # validation, checkpoints and checksums are the same on every rank
        dist.broadcast_buffers(self.model)
        # the loss over every rank's samples, as one process would have computed it
        total = dist.all_reduce_sum({"loss_sum": loss_sum, "seen": self.seen})
        self.train_loss = total["loss_sum"] / max(total["seen"], 1)
        return True

    def validate(self, epoch: int) -> None:
        """Evaluate, report the epoch (heartbeat, `validation_complete`, MLflow), step the scheduler."""
        sdk, opts, best = self.sdk, self.opts, self.best
        last_beat = [time.monotonic()]

        def tick(i: int) -> None:  # heartbeats through a long validation
            if time.monotonic() - last_beat[0] >= HEARTBEAT_EVERY_S:
                last_beat[0] = time.monotonic()
                sdk.heartbeat(epoch, opts.epochs, len(self.train_dl) + i, self.total_steps)

        val = self.setup.evaluate(self.model, self.val_dl, self.device, self.num_classes, tick,
                                  autocast=self.amp_dtype if self.amp else None, channels_last=self.channels_last)
        lr = self.optimizer.param_groups[0]["lr"]
        metrics = {"train_loss": self.train_loss, "lr": lr, "val_loss": val["val_loss"], "top1": val["top1"]}
        if "top5" in val:
            metrics["top5"] = val["top5"]
        self.improved = val["top1"] > best["top1"]
        if self.improved:
            best.update(top1=val["top1"], epoch=epoch)
        metrics |= {"best_top1": best["top1"], "best_epoch": best["epoch"]}
        self.metrics = metrics
        sdk.report_progress(epoch, opts.epochs, self.total_steps, self.total_steps, metrics=metrics)
        per_class = {name: {"precision": val["precision"][i], "recall": val["recall"][i], "support": val["support"][i]}
                     for i, name in enumerate(self.class_names)}
        sdk.event("validation_complete", f"epoch {epoch}: top1={val['top1']:.4f} val_loss={val['val_loss']:.4f}",
                  data={"epoch": epoch, "task_type": "image_classification", "metrics": metrics,
                        "primary_metric": {"name": "top1", "value": val["top1"]}, "class_names": self.class_names,
                        "per_class": per_class, "confusion_matrix": val["confusion_matrix"]})
        sdk.log_metrics(metrics, step=epoch)
        top5 = f" top5={val['top5']:.4f}" if "top5" in val else ""
        if sdk.is_main:  # the same on every rank: said once
            sdk.log("INFO", f"epoch {epoch}/{opts.epochs} train_loss={metrics['train_loss']:.4f} "
                            f"val_loss={val['val_loss']:.4f} top1={val['top1']:.4f}{top5} lr={lr:.3g}")
        if opts.sched == "plateau":
            self.scheduler.step(epoch, val["top1"])
        else:
            self.scheduler.step(epoch)

    def save(self, name: str, epoch: int) -> str:
        """Everything a resumed attempt needs (model, optimizer, scheduler, scaler, best so far)."""
        path = self.ckpt_dir / f"{name}.pt"
        self.torch.save({
            "format": self.common.CHECKPOINT_FORMAT, "model_name": self.opts.model_name,
            "model_kwargs": self.model_kwargs, "class_names": self.class_names, "class_ids": self.class_ids,
            "class_dirs": self.class_dirs, "data_config": self.data_config, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None, "epoch": epoch,
            "best_top1": self.best["top1"], "best_epoch": self.best["epoch"], "best_uri": self.best["uri"],
            "metrics": self.metrics, "advanced_config": self.opts.given}, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        return self.sdk.upload_checkpoint(path, name)  # snapshotted now, uploaded in the background

    def save_epoch(self, epoch: int) -> None:
        """The epoch's checkpoints, written and uploaded by rank 0 while the other ranks wait."""
        dist.save_on_main(lambda: self._save_epoch(epoch))

    def _save_epoch(self, epoch: int) -> None:
        if self.improved:  # best first: the platform resumes from the newest non-best checkpoint
            self.best["uri"] = self.save("best", epoch)
        self.last_uri = self.save("last", epoch)
        if self.opts.save_period and epoch % self.opts.save_period == 0:
            self.save(f"epoch-{epoch}", epoch)

    def save_stopped(self) -> None:
        done, epochs = self.state["epoch"], self.opts.epochs
        partial = f" (epoch {done + 1} partly trained)" if self.seen else ""
        uri = self.save("last", done)
        errors = self.sdk.wait_for_uploads()
        self.sdk.event("stopped", f"stopped after {done} of {epochs} epochs{partial}; last saved to {uri}",
                       data={"epochs_completed": done, "last": uri, "upload_errors": errors,
                             "reason": self.sdk.stop_reason})

    def log_checksum(self) -> None:
        """Every rank's weights as one hash: identical across ranks when data parallelism worked."""
        digest = dist.state_checksum(self.model.state_dict())
        self.sdk.log("INFO", f"rank {self.rank}/{self.world} weights sha256 {digest}")

    def complete(self, elapsed_s: float) -> None:
        done, best = self.state["epoch"], self.best
        final = {**self.metrics, "epochs_completed": done, "num_classes": self.num_classes}
        self.sdk.log_metrics({"final_top1": final.get("top1", 0.0), "best_top1": best["top1"]}, step=done)
        if self.sdk.is_main:
            self.sdk.log("INFO", f"training finished in {elapsed_s:.1f}s: top1={final.get('top1', 0):.4f} "
                                 f"best_top1={best['top1']:.4f} (epoch {best['epoch']})")
        self.sdk.report_completed(final, checkpoints={"best": best["uri"] or self.last_uri, "last": self.last_uri})


if __name__ == "__main__":
    run_main(main)
