"""timm image-classification trainer for the Vision Training Platform (DESIGN §3).

Environment in (the contract): MODEL_NAME (any timm model), DATASET_ID, EPOCHS, BATCH_SIZE,
LEARNING_RATE, IMAGE_SIZE, DEVICE, NUM_CPUS, RESUME_FROM, CONFIG.advanced_config (keys in
timm_options.ADVANCED; unknown keys are a CONFIG_ERROR). Out: heartbeats every epoch and every
~2 s within one, `validation_complete` events with per-class precision/recall and the confusion
matrix, checkpoints `last` (every epoch, with optimizer/scheduler state for resuming) and `best`
(on a better val top-1) uploaded in the background, MLflow run `job-{id}`, and `done`.

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
    # cancel (or SIGTERM): keep the work done so far and exit 0; the platform marks the job CANCELLED
    if sdk.should_stop and state["epoch"] < opts.epochs:
        run.save_stopped()
        return 0
    run.complete(time.monotonic() - t_start)
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
        if opts.num_cpus:
            torch.set_num_threads(max(1, int(opts.num_cpus)))
        sdk.start_mlflow_run()
        sdk.log_params(opts.params())

        src_root = sdk.download_dataset()
        folder = sdk.convert_dataset(src_root, "imagefolder", val_fraction=opts.val_fraction, seed=opts.seed)
        self.class_dirs, self.class_names, self.class_ids = setup.class_info(src_root, folder / "train")
        self.num_classes = num_classes = len(self.class_dirs)
        self.model, self.model_kwargs, self.source = setup.build_model(sdk, opts, num_classes)
        resume = None
        if opts.resume_from:
            resume = setup.load_resume(sdk, opts, self.class_names)
            self.model.load_state_dict(resume["model"])
        self.data_config = common.data_config_for(self.model, opts.image_size, opts.adv)
        self.mixup, self.criterion = setup.build_loss(opts, num_classes)
        self.train_dl, self.val_dl, self.workers = setup.build_loaders(
            opts, folder, self.class_dirs, self.data_config, device, mixup_on=self.mixup is not None)
        self.model.to(device)
        # on a CPU channels-last weights and batches: oneDNN's convolutions are faster so (0.76-0.95x a
        # step on resnets, bench/README.md, training speed); on a GPU when the job asks for it
        self.channels_last = opts.channels_last if opts.channels_last is not None else device.type == "cpu"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.amp, self.amp_dtype = self.precision()
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
        self.seen = 0  # samples of the current epoch trained on

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
        train_images, val_images = len(self.train_dl.dataset), len(self.val_dl.dataset)
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

    def train_epoch(self, epoch: int) -> bool:
        """One pass over the training set; False when a stop was asked for mid-way."""
        torch, opts, sdk = self.torch, self.opts, self.sdk
        self.model.train()
        last_beat, loss_sum, self.seen = time.monotonic(), 0.0, 0
        for step, (x, y) in enumerate(self.train_dl, 1):
            if sdk.should_stop:
                return False
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.mixup is not None:
                x, y = self.mixup(x, y)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                loss = self.criterion(self.model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss.item()} at epoch {epoch} step {step}; "
                                         f"lower LEARNING_RATE ({opts.lr})")
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
        self.train_loss = loss_sum / max(self.seen, 1)
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

    def complete(self, elapsed_s: float) -> None:
        done, best = self.state["epoch"], self.best
        final = {**self.metrics, "epochs_completed": done, "num_classes": self.num_classes}
        self.sdk.log_metrics({"final_top1": final.get("top1", 0.0), "best_top1": best["top1"]}, step=done)
        self.sdk.log("INFO", f"training finished in {elapsed_s:.1f}s: top1={final.get('top1', 0):.4f} "
                             f"best_top1={best['top1']:.4f} (epoch {best['epoch']})")
        self.sdk.report_completed(final, checkpoints={"best": best["uri"] or self.last_uri, "last": self.last_uri})


if __name__ == "__main__":
    run_main(main)
