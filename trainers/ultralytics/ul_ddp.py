"""Ultralytics' own DDP on every GPU of the job, with the platform's callbacks (issue 27).

A job with several GPUs gives this trainer DEVICE "0,1,..." (every GPU Ray made visible to its one
process; the manifest's `distributed` block has no gpus_per_process). Ultralytics then trains
data-parallel itself: ``BaseTrainer.train`` pickles the trainer's class, arguments, model and
callbacks (``ultralytics/utils/dist.py: generate_ddp_file``, with cloudpickle), starts
``torch.distributed.run`` with one worker per GPU, and waits for it. That hand-off breaks the
platform's callbacks twice over: ``Bridge``'s callbacks hold the TrainerSDK (locks, threads, HTTP
clients), which cannot be pickled, and this process, the one holding the SDK, trains nothing.

So, in DDP:

- this process (the *parent*) builds one of the trainer classes below, leaves the Bridge's
  callbacks off it (what is pickled is Ultralytics' own callbacks and the module-level ones),
  names a summary file in ``ENV`` and lets Ultralytics spawn its workers;
- in the workers the same class is rebuilt from the pickle, and its ``__init__`` gives rank 0
  (Ultralytics' RANK 0: LOCAL_RANK 0 of its one node) a ``Worker``: its own TrainerSDK (the same
  contract environment, inherited: it reports for the job), heartbeats, the Bridge's callbacks,
  checkpoint uploads, and the offline AMP check; the other ranks get nothing (Ultralytics keeps
  their weights in step and does all reporting, saving and validation on rank 0);
- a stop request reaches rank 0 alone (its heartbeat's reply, or a signal): the Bridge then sets
  ``trainer.stop`` at the end of the epoch only, before Ultralytics broadcasts it to every rank
  (set between batches, rank 0 would leave the epoch alone and the others would wait for it in
  their next all-reduce). In DDP a cancel therefore takes effect at the end of the current epoch;
- when training ends (``teardown``, also after an exception) the worker writes the Bridge's state
  to the summary file, waits for its uploads and closes its SDK without ``done``; the parent reads
  the summary and finishes as always: the final checkpoints, the artifacts, the MLflow metrics
  (the worker's SDK runs without MLflow: the run has one writer, the parent) and ``done``.

Not run on GPUs here (no machine with two): tests/trainer_ultralytics/test_ultralytics_ddp.py
runs this hand-off for real on a CPU with a gang of one worker (Ultralytics' DDP needs CUDA for
more); whether NCCL and Ultralytics' own DDP behave on several GPUs is Ultralytics' part.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ultralytics.models.yolo import classify, detect, segment
from ultralytics.utils import DEFAULT_CFG, RANK

# JSON from the parent to its workers: {"parent": pid, "summary": path, "amp_forced": bool,
# "channels_last": bool}
ENV = "VTP_UL_DDP"
MLFLOW_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN")


def handed_off() -> dict[str, Any] | None:
    """The parent's hand-off when this process is one of its DDP workers (not the parent itself,
    whose environment holds it too), else None."""
    try:
        config = json.loads(os.environ.get(ENV) or "null")
    except ValueError:
        return None
    if not isinstance(config, dict) or config.get("parent") == os.getpid():
        return None
    return config


def strip_platform_callbacks(trainer: Any, owner: Any) -> int:
    """Remove the callbacks bound to ``owner`` (the parent's Bridge: it holds the SDK, which
    cannot be pickled) from ``trainer``; returns how many were removed."""
    removed = 0
    for event, callbacks in trainer.callbacks.items():
        kept = [cb for cb in callbacks if getattr(cb, "__self__", None) is not owner]
        removed += len(callbacks) - len(kept)
        trainer.callbacks[event] = kept
    return removed


def hand_off(summary: Path, amp_forced: bool, channels_last: bool) -> None:
    """What the parent tells its workers, through the environment they inherit."""
    summary.unlink(missing_ok=True)
    os.environ[ENV] = json.dumps({"parent": os.getpid(), "summary": str(summary), "amp_forced": amp_forced,
                                  "channels_last": channels_last})


def read_summary(summary: Path) -> dict[str, Any]:
    """The worker's account of training ({} when it wrote none: it died before its teardown)."""
    try:
        return json.loads(summary.read_text())
    except (OSError, ValueError):
        return {}


class Worker:
    """The platform's side of training inside Ultralytics' rank-0 DDP worker."""

    def __init__(self, trainer: Any) -> None:
        import ul_amp
        from sdk import TrainerSDK, amp
        from ul_callbacks import Bridge, Heartbeats

        config = handed_off() or {}
        self.summary = Path(config["summary"])
        # the contract's environment, inherited; MLflow stays the parent's (one writer per run)
        environ = {k: v for k, v in os.environ.items() if k not in MLFLOW_VARS}
        self.sdk = TrainerSDK(environ)
        self.beats = Heartbeats(self.sdk, int(trainer.epochs)).start()
        task = {"detect": "detect", "segment": "segment", "classify": "classify"}.get(str(trainer.args.task),
                                                                                     "detect")
        self.bridge = Bridge(self.sdk, task, self.beats, ddp=True)
        self.bridge.attach(trainer)
        trainer.add_callback("teardown", self.teardown)
        force = bool(config.get("amp_forced"))

        def report(ok: bool, why: str) -> None:
            self.sdk.log(*amp.report_line(ok, why, forced=force))

        # Ultralytics' own check would download a reference model: the offline one, as in the parent
        if not ul_amp.patch_ultralytics(report, force=force) and trainer.args.amp and not force:
            trainer.args.amp = False
        self.sdk.log("INFO", f"Ultralytics DDP worker (rank 0 of {os.environ.get('WORLD_SIZE', '1')}) reports "
                             "for the job")

    def teardown(self, trainer: Any) -> None:
        """Training ended (or failed): the parent's account, then no more callbacks from here."""
        b = self.bridge
        state = {"history": b.history, "final": b.final, "start_epoch": b.start_epoch,
                 "best_epoch": b.best_epoch, "stopped": b.stopped or self.sdk.should_stop,
                 "stop_reason": self.sdk.stop_reason, "last_uri": b.last_uri, "best_uri": b.best_uri,
                 "best_fitness": None if trainer.best_fitness is None else float(trainer.best_fitness),
                 "phase": b.phase}
        try:
            errors = self.sdk.wait_for_uploads()  # still heartbeating while they finish
            if errors:
                state["upload_errors"] = errors
            tmp = self.summary.with_suffix(".tmp")
            tmp.write_text(json.dumps(state))
            tmp.replace(self.summary)
        finally:
            self.beats.stop()
            self.sdk.close()  # flushes the callbacks; no `done`: the parent sends it


class PlatformDDP:
    """Mixed into Ultralytics' trainers: in the reporting DDP worker, the platform's callbacks."""

    vtp_worker: Worker | None = None

    def __init__(self, cfg: Any = DEFAULT_CFG, overrides: dict | None = None, _callbacks: Any = None) -> None:
        super().__init__(cfg, overrides, _callbacks)  # type: ignore[call-arg]
        config = handed_off()
        if config is None:
            return  # the parent (or a plain process): train.py attaches what it needs
        if config.get("channels_last"):  # the parent's patch of its own trainer was not pickled
            import ul_runtime

            ul_runtime.channels_last_models(self)  # every rank: DDP wants one memory format
        if RANK in (-1, 0):  # Ultralytics' rank 0 (-1: a gang of one, run as a plain process)
            self.vtp_worker = Worker(self)


# Importable by name (cloudpickle pickles classes of a module by reference): the workers rebuild
# exactly these from the parent's pickle.
class DetectionTrainer(PlatformDDP, detect.DetectionTrainer):
    pass


class SegmentationTrainer(PlatformDDP, segment.SegmentationTrainer):
    pass


class ClassificationTrainer(PlatformDDP, classify.ClassificationTrainer):
    pass


TRAINERS = {"detect": DetectionTrainer, "segment": SegmentationTrainer, "classify": ClassificationTrainer}
