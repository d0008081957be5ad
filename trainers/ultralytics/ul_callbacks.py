"""Ultralytics callbacks -> the trainer contract (DESIGN §3, §5).

* every epoch: a heartbeat with epoch, progress and metrics (friendly names), MLflow metrics,
  and a ``validation_complete`` event with per-class metrics;
* during an epoch: a heartbeat every ``interval`` seconds (1 s) from ``on_train_batch_end``
  with step/total_steps; :class:`Heartbeats` fills every other silence (setup, a slow batch,
  validation, uploads), so a slow epoch on a busy CPU stays alive;
* ``on_model_save``: ``last`` uploaded in the background each epoch while it still holds the
  optimizer state (Ultralytics strips it when training ends), ``best`` when fitness improved;
* a stop request (cancel, SIGTERM) sets ``trainer.stop`` between batches: Ultralytics validates
  and saves, then ``on_fit_epoch_end`` raises :class:`StopTraining` so the final evaluation is
  skipped and the process can exit quickly with ``last`` uploaded. In Ultralytics' DDP worker
  (``ddp=True``, ul_ddp.py) only at the end of the epoch, and without raising: Ultralytics then
  broadcasts the stop to every rank (a rank 0 that left mid-epoch or raised alone would leave the
  others waiting in their next collective).
"""
from __future__ import annotations

import re
from typing import Any

import ul_runtime
from sdk.liveness import Heartbeats  # noqa: F401  (the SDK's keep-alive; imported from here)

PRIMARY = {"detect": "mAP50-95", "segment": "mask_mAP50-95", "classify": "top1"}
_METRIC = re.compile(r"^metrics/(.+?)(?:\((B|M|P)\))?$")
_KIND_PREFIX = {None: "", "B": "", "M": "mask_", "P": "pose_"}
_SUMMARY_KEYS = {"Box-P": "precision", "Box-R": "recall", "Box-F1": "f1", "Mask-P": "mask_precision",
                 "Mask-R": "mask_recall", "Mask-F1": "mask_f1", "Images": "images", "Instances": "instances",
                 "top1_acc": "top1", "top5_acc": "top5"}


class StopTraining(Exception):
    """Raised from a callback once a stop was requested and `last` is saved."""


def friendly(raw: dict[str, Any]) -> dict[str, float]:
    """Ultralytics' metric keys -> short names: train_box_loss, precision, mAP50, mAP50-95,
    mask_mAP50, top1, top5, lr, fitness, ..."""
    out: dict[str, float] = {}
    for key, value in raw.items():
        try:
            value = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError):
            continue
        key = str(key)
        if key.startswith(("train/", "val/")):
            name = key.replace("/", "_")
        elif m := _METRIC.match(key):
            base = {"accuracy_top1": "top1", "accuracy_top5": "top5"}.get(m.group(1), m.group(1))
            name = _KIND_PREFIX[m.group(2)] + base
        elif key.startswith("lr/pg"):
            idx = key[len("lr/pg"):]
            name = "lr" if idx == "0" else f"lr_pg{idx}"
        else:
            name = key
        out[name] = value
    train_losses = [v for k, v in out.items() if k.startswith("train_") and k.endswith("_loss")]
    if train_losses and "train_loss" not in out:
        out["train_loss"] = sum(train_losses)
    return out


def _number(v: Any) -> Any:
    if hasattr(v, "item"):
        try:
            return v.item()
        except Exception:
            return str(v)
    return v


class Bridge:
    """Holds the per-run state the callbacks share; ``attach`` registers them on a trainer."""

    def __init__(self, sdk: Any, task: str, beats: Heartbeats, interval: float = 1.0, ddp: bool = False) -> None:
        self.sdk = sdk
        self.ddp = ddp  # in Ultralytics' rank-0 DDP worker: stop at epoch ends only, never raise
        self.beats = beats
        self.task = task
        self.interval = interval
        self.phase = "setup"          # setup -> train -> final
        self.batch = 0
        self.total_steps: int | None = None
        self.total_epochs: int | None = None
        self.epoch_closed: int | None = None
        self.history: list[dict[str, float]] = []
        self.final: dict[str, float] = {}
        self.best_epoch: int | None = None
        self.start_epoch = 0
        self.stopped = False
        self.last_uri: str | None = None
        self.best_uri: str | None = None

    def attach(self, trainer: Any) -> None:
        for event in ("on_pretrain_routine_end", "on_train_start", "on_train_epoch_start", "on_train_batch_end",
                      "on_train_epoch_end", "on_model_save", "on_fit_epoch_end", "on_val_start"):
            trainer.add_callback(event, getattr(self, event))

    @property
    def epochs_done(self) -> int:
        return len(self.history) + self.start_epoch

    def restore(self, state: dict[str, Any]) -> None:
        """The DDP worker's account (ul_ddp.Worker.teardown) in the parent's Bridge, which then
        finishes the job as if it had followed the training itself."""
        self.history = list(state.get("history") or [])
        self.final = dict(state.get("final") or {})
        self.start_epoch = int(state.get("start_epoch") or 0)
        self.best_epoch = state.get("best_epoch")
        self.stopped = bool(state.get("stopped"))
        self.last_uri = state.get("last_uri") or self.last_uri
        self.best_uri = state.get("best_uri") or self.best_uri
        self.phase = str(state.get("phase") or self.phase)

    # ----- setup -----
    def on_pretrain_routine_end(self, trainer: Any) -> None:
        ul_runtime.set_threads()
        self.start_epoch = int(getattr(trainer, "start_epoch", 0) or 0)

    def on_train_start(self, trainer: Any) -> None:
        threads = ul_runtime.set_threads()
        self.phase = "train"
        self.total_steps = len(trainer.train_loader)
        self.total_epochs = int(trainer.epochs)
        self.start_epoch = int(trainer.start_epoch or 0)
        self.sdk.log("INFO", f"training {trainer.epochs} epochs from epoch {self.start_epoch + 1} on "
                     f"{trainer.device} ({threads} torch threads, {getattr(trainer.train_loader, 'num_workers', 0)} data-loader "
                     f"workers, {ul_runtime.memory_format(trainer.model)} memory format, "
                     f"AMP {'on' if getattr(trainer, 'amp', False) else 'off'}, "
                     f"{self.total_steps} batches per epoch)")
        self.beats.beat(epoch=self.start_epoch + 1, total_epochs=trainer.epochs, step=0,
                        total_steps=self.total_steps)
        if self.sdk.should_stop:
            if self.ddp:  # applied at the end of the first epoch, on every rank at once
                self.stopped = True
                return
            raise StopTraining("stop requested before the first epoch")

    # ----- during an epoch -----
    def on_train_epoch_start(self, trainer: Any) -> None:
        self.batch = 0
        # the job shows the epoch in progress, and a cancel's reply reaches this epoch's batches
        # even when epochs are shorter than the heartbeat interval (the first is on_train_start's)
        if trainer.epoch > self.start_epoch:
            self.beats.beat(epoch=trainer.epoch + 1, total_epochs=trainer.epochs, step=0,
                            total_steps=self.total_steps)

    def on_train_batch_end(self, trainer: Any) -> None:
        self.batch += 1
        if self.sdk.should_stop and not trainer.stop and not self.stopped:
            self.stopped = True
            if self.ddp:  # Ultralytics' stop between batches is rank 0's alone: at the epoch's end
                self.sdk.log("WARNING", f"stopping at the end of epoch {trainer.epoch + 1} (every DDP rank "
                             f"together): {self.sdk.stop_reason}")
            else:
                trainer.stop = True  # Ultralytics ends the epoch here, validates and saves `last`
                self.sdk.log("WARNING", f"stopping after batch {self.batch} of epoch {trainer.epoch + 1}: "
                             f"{self.sdk.stop_reason}")
        if self.beats.since_last() >= self.interval:
            losses = friendly(self._losses(trainer))
            self.beats.beat(epoch=trainer.epoch + 1, total_epochs=trainer.epochs, step=self.batch,
                            total_steps=self.total_steps, metrics=losses)

    @staticmethod
    def _losses(trainer: Any) -> dict[str, Any]:
        # tloss: a dict of running means (8.4) or a tensor (8.3); None before the first batch
        return trainer.label_loss_items(trainer.tloss, prefix="train") if trainer.tloss is not None else {}

    def on_val_start(self, validator: Any) -> None:
        ul_runtime.set_threads()  # a stand-alone validation (final eval) reset them

    def on_train_epoch_end(self, trainer: Any) -> None:
        self.epoch_closed = trainer.epoch

    # ----- after validation -----
    def on_model_save(self, trainer: Any) -> None:
        # last.pt still holds the optimizer here; the SDK snapshots the file before returning
        self.last_uri = self.sdk.upload_checkpoint(trainer.last, "last")
        if trainer.best.exists() and trainer.best_fitness is not None and trainer.best_fitness == trainer.fitness:
            self.best_uri = self.sdk.upload_checkpoint(trainer.best, "best")
            self.best_epoch = trainer.epoch + 1

    def on_fit_epoch_end(self, trainer: Any) -> None:
        if self.epoch_closed != trainer.epoch:  # Ultralytics' final evaluation of best.pt
            self.phase = "final"
            self.final = friendly(trainer.metrics or {})
            return
        epoch = trainer.epoch + 1
        raw = {**self._losses(trainer), **(trainer.metrics or {}), **getattr(trainer, "lr", {})}
        metrics = friendly(raw)
        if trainer.fitness is not None:
            metrics["fitness"] = float(trainer.fitness)
        self.history.append(metrics)
        self.beats.beat(epoch=epoch, total_epochs=trainer.epochs, step=self.total_steps,
                        total_steps=self.total_steps, metrics=metrics)
        self.sdk.log_metrics(metrics, step=epoch)
        val = {k: v for k, v in metrics.items() if not k.startswith(("train_", "lr"))}
        primary = PRIMARY[self.task]
        names = getattr(trainer.validator, "names", None) or trainer.data.get("names") or {}
        self.sdk.report_validation(
            epoch, metrics=val, per_class=per_class_metrics(trainer.validator, self.task),
            primary_metric=(primary, val[primary]) if primary in val else None,
            class_names=[str(names[k]) for k in sorted(names)] if isinstance(names, dict) else list(names))
        if self.stopped or self.sdk.should_stop:
            if self.ddp:  # before Ultralytics broadcasts `stop` to every rank and they all leave
                if not self.stopped:  # heard after the epoch's last batch: said here, not there
                    self.sdk.log("WARNING", f"stopping at the end of epoch {epoch} (every DDP rank together): "
                                 f"{self.sdk.stop_reason}")
                self.stopped = True
                trainer.stop = True
                return
            self.stopped = True
            raise StopTraining(f"stopped after epoch {epoch}: {self.sdk.stop_reason}")


def per_class_metrics(validator: Any, task: str) -> dict[str, dict[str, Any]]:
    """{class name: {precision, recall, mAP50, mAP50-95, ...}} from the last validation."""
    metrics = getattr(validator, "metrics", None)
    out: dict[str, dict[str, Any]] = {}
    try:
        if task == "classify":
            cm = getattr(validator, "confusion_matrix", None)
            names = getattr(validator, "names", None) or {}
            if cm is None or getattr(cm, "matrix", None) is None:
                return {}
            m = cm.matrix  # rows: predicted, columns: true class
            for i in range(min(len(names), m.shape[1])):
                total = float(m[:, i].sum())
                if total > 0:
                    out[str(names[i])] = {"accuracy": round(float(m[i, i]) / total, 5), "images": int(total)}
            return out
        seg = getattr(metrics, "seg", None) if task == "segment" else None
        for i, row in enumerate(metrics.summary()):
            name = str(row.get("Class"))
            out[name] = {_SUMMARY_KEYS.get(k, k): _number(v) for k, v in row.items() if k != "Class"}
            if seg is not None and i < len(seg.ap50):  # the summary holds box mAPs only
                out[name].update({"mask_mAP50": round(float(seg.ap50[i]), 5),
                                  "mask_mAP50-95": round(float(seg.ap[i]), 5)})
    except Exception:  # per-class numbers are a nicety; never fail training over them
        return out
    return out
