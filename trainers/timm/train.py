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
from sdk import CallbackError, ConfigError, ErrorType, TrainerSDK, run_main  # noqa: E402
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
        timm_options.check_model_name(opts.model_name)  # imports timm (and torch)
        import torch

        import timm_common as common
        import timm_setup as setup

        if sdk.task_type and sdk.task_type != "image_classification":
            raise ConfigError(f"the timm trainer does image_classification, not {sdk.task_type}")
        device = common.torch_device(opts.device)
        if opts.num_cpus:
            torch.set_num_threads(max(1, int(opts.num_cpus)))
        amp = device.type == "cuda" and opts.amp is not False
        if opts.amp and device.type != "cuda":
            sdk.log("INFO", "amp is GPU-only: training in float32 on the CPU")
        sdk.start_mlflow_run()
        sdk.log_params(opts.params())

        src_root = sdk.download_dataset()
        folder = sdk.convert_dataset(src_root, "imagefolder", val_fraction=opts.val_fraction, seed=opts.seed)
        class_dirs, class_names, class_ids = setup.class_info(src_root, folder / "train")
        num_classes = len(class_dirs)
        model, model_kwargs, source = setup.build_model(sdk, opts, num_classes)
        resume = None
        if opts.resume_from:
            resume = setup.load_resume(sdk, opts, class_names)
            model.load_state_dict(resume["model"])
        data_config = common.data_config_for(model, opts.image_size, opts.adv)
        mixup, criterion = setup.build_loss(opts, num_classes)
        train_dl, val_dl, workers = setup.build_loaders(opts, folder, class_dirs, data_config, device,
                                                        mixup_on=mixup is not None)
        model.to(device)
        optimizer, scheduler = setup.build_optimization(opts, model, len(train_dl))
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        best = {"top1": -1.0, "epoch": 0, "uri": None}
        metrics: dict[str, Any] = {}
        if resume is not None:
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            if resume.get("scaler") and amp:
                scaler.load_state_dict(resume["scaler"])
            state["epoch"] = int(resume["epoch"])
            best = {"top1": resume.get("best_top1", -1.0), "epoch": resume.get("best_epoch", 0),
                    "uri": resume.get("best_uri")}
            metrics = dict(resume.get("metrics") or {})
            sdk.event("resumed", f"resuming after epoch {state['epoch']} of {opts.epochs}",
                      data={"resume_from": opts.resume_from, "epoch": state["epoch"]})
    n_params = sum(p.numel() for p in model.parameters())
    sdk.event("model_initialized", f"{opts.model_name}: {n_params / 1e6:.2f}M parameters, {num_classes} classes",
              data={"model_name": opts.model_name, "parameters": n_params, "num_classes": num_classes,
                    "class_names": class_names, "weights": source, "data_config": data_config,
                    "device": str(device), "amp": amp, "workers": workers, "torch_threads": torch.get_num_threads(),
                    "train_images": len(train_dl.dataset), "val_images": len(val_dl.dataset)})
    sdk.log_params({"num_classes": num_classes, "parameters": n_params, "train_images": len(train_dl.dataset),
                    "val_images": len(val_dl.dataset)})

    ckpt_dir = sdk.work_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last_uri = opts.resume_from

    def save(name: str, epoch: int, metrics: dict[str, Any]) -> str:
        path = ckpt_dir / f"{name}.pt"
        torch.save({
            "format": common.CHECKPOINT_FORMAT, "model_name": opts.model_name, "model_kwargs": model_kwargs,
            "class_names": class_names, "class_ids": class_ids, "class_dirs": class_dirs,
            "data_config": data_config, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if amp else None,
            "epoch": epoch, "best_top1": best["top1"], "best_epoch": best["epoch"], "best_uri": best["uri"],
            "metrics": metrics, "advanced_config": opts.given}, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        return sdk.upload_checkpoint(path, name)  # snapshotted now, uploaded in the background

    total_steps = len(train_dl) + len(val_dl)
    updates = state["epoch"] * len(train_dl)
    for epoch in range(state["epoch"] + 1, opts.epochs + 1):
        model.train()
        last_beat, loss_sum, seen, stopped = time.monotonic(), 0.0, 0, False
        for step, (x, y) in enumerate(train_dl, 1):
            if sdk.should_stop:
                stopped = True
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if mixup is not None:
                x, y = mixup(x, y)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                loss = criterion(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss.item()} at epoch {epoch} step {step}; "
                                         f"lower LEARNING_RATE ({opts.lr})")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if opts.clip_grad:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), opts.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            updates += 1
            if opts.sched_on_updates:
                scheduler.step_update(num_updates=updates)
            loss_sum += loss.item() * x.shape[0]
            seen += x.shape[0]
            if time.monotonic() - last_beat >= HEARTBEAT_EVERY_S:
                last_beat = time.monotonic()
                sdk.heartbeat(epoch, opts.epochs, step, total_steps)
        if stopped:
            break

        def tick(i: int, _t=[time.monotonic()]) -> None:  # heartbeats through a long validation
            if time.monotonic() - _t[0] >= HEARTBEAT_EVERY_S:
                _t[0] = time.monotonic()
                sdk.heartbeat(epoch, opts.epochs, len(train_dl) + i, total_steps)

        val = setup.evaluate(model, val_dl, device, num_classes, amp, tick)
        lr = optimizer.param_groups[0]["lr"]
        metrics = {"train_loss": loss_sum / max(seen, 1), "lr": lr, "val_loss": val["val_loss"], "top1": val["top1"]}
        if "top5" in val:
            metrics["top5"] = val["top5"]
        improved = val["top1"] > best["top1"]
        if improved:
            best.update(top1=val["top1"], epoch=epoch)
        metrics |= {"best_top1": best["top1"], "best_epoch": best["epoch"]}
        sdk.report_progress(epoch, opts.epochs, total_steps, total_steps, metrics=metrics)
        per_class = {name: {"precision": val["precision"][i], "recall": val["recall"][i], "support": val["support"][i]}
                     for i, name in enumerate(class_names)}
        sdk.event("validation_complete", f"epoch {epoch}: top1={val['top1']:.4f} val_loss={val['val_loss']:.4f}",
                  data={"epoch": epoch, "task_type": "image_classification", "metrics": metrics,
                        "primary_metric": {"name": "top1", "value": val["top1"]}, "class_names": class_names,
                        "per_class": per_class, "confusion_matrix": val["confusion_matrix"]})
        sdk.log_metrics(metrics, step=epoch)
        top5 = f" top5={val['top5']:.4f}" if "top5" in val else ""
        sdk.log("INFO", f"epoch {epoch}/{opts.epochs} train_loss={metrics['train_loss']:.4f} "
                        f"val_loss={val['val_loss']:.4f} top1={val['top1']:.4f}{top5} lr={lr:.3g}")
        if opts.sched == "plateau":
            scheduler.step(epoch, val["top1"])
        else:
            scheduler.step(epoch)
        state["epoch"] = epoch
        if improved:  # best first: the platform resumes from the newest non-best checkpoint
            best["uri"] = save("best", epoch, metrics)
        last_uri = save("last", epoch, metrics)
        if opts.save_period and epoch % opts.save_period == 0:
            save(f"epoch-{epoch}", epoch, metrics)

    # cancel (or SIGTERM): keep the work done so far and exit 0; the platform marks the job CANCELLED
    if sdk.should_stop and state["epoch"] < opts.epochs:
        partial = f" (epoch {state['epoch'] + 1} partly trained)" if seen else ""
        uri = save("last", state["epoch"], metrics)
        errors = sdk.wait_for_uploads()
        sdk.event("stopped", f"stopped after {state['epoch']} of {opts.epochs} epochs{partial}; last saved to {uri}",
                  data={"epochs_completed": state["epoch"], "last": uri, "upload_errors": errors,
                        "reason": sdk.stop_reason})
        return 0
    final = {**metrics, "epochs_completed": state["epoch"], "num_classes": num_classes}
    sdk.log_metrics({"final_top1": final.get("top1", 0.0), "best_top1": best["top1"]}, step=state["epoch"])
    sdk.log("INFO", f"training finished in {time.monotonic() - t_start:.1f}s: top1={final.get('top1', 0):.4f} "
                    f"best_top1={best['top1']:.4f} (epoch {best['epoch']})")
    sdk.report_completed(final, checkpoints={"best": best["uri"] or last_uri, "last": last_uri})
    return 0


if __name__ == "__main__":
    run_main(main)
