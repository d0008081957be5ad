"""Ultralytics YOLO trainer of the Vision Training Platform (DESIGN §3, §9; seed 002).

Detection, instance segmentation and classification with any YOLO family Ultralytics ships an
architecture file for (yolov8, yolo11, yolo12, yolo26, ...), driven by the contract's
environment and reporting through the SDK:

1. config   task/model/hyperparameters checked before anything else (CONFIG_ERROR);
2. dataset  downloaded through the node cache, validated, DICE converted to the YOLO layout
            (ImageFolder for classification), then checked by Ultralytics (DATASET_ERROR);
3. model    RESUME_FROM (a `last` with optimizer state) > CONFIG `weights` (s3:// or path) >
            models/pretrained/ultralytics/{model}.pt in the bucket > built from its YAML;
            never a download from the internet;
4. train    Ultralytics' trainer with the callbacks of ul_callbacks.py (heartbeats, validation
            events, background checkpoint uploads, MLflow, cancel); AMP on by default on a GPU
            and on a CPU with native bfloat16, kept when ul_amp's offline check of the job's own
            model agrees (Ultralytics' own check would download yolo26n.pt); `amp` in the job's
            config is kept either way; on a CPU the model in channels-last memory format;
5. finish   best/last tagged with the class map and uploaded, results.csv and plots uploaded,
            `done` with the final metrics and artifact URIs.

Run by the platform as ``python -u train.py`` in this folder; locally, set the contract's
variables (without BACKEND_BASE_URL the SDK only logs its callbacks).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
try:
    import sdk  # noqa: F401  (shipped by the platform with runtime_env.py_modules)
except ImportError:  # run by hand from the repository: the SDK sits next to this trainer
    sys.path.insert(0, str(HERE.parent))

import ul_amp  # noqa: E402  (imports torch and ultralytics only inside its functions)
import ul_runtime  # noqa: E402  (imports nothing of ultralytics: it must configure it first)
from sdk import (CallbackError, CheckpointError, DatasetError, ErrorType, SDKError, TrainerSDK,  # noqa: E402
                 run_main)
from sdk import amp  # noqa: E402
from sdk.contract import checkpoint_key  # noqa: E402
from sdk.errors import error_type_of  # noqa: E402
from sdk.storage import S3Storage  # noqa: E402

PRETRAINED_PREFIX = "models/pretrained/ultralytics"
MAX_PLOTS = 24
DATASET_HINTS = ("dataset", "no labels", "labels found", "images not found", "no valid images",
                 "no images found", "image not found", "corrupt", "data.yaml", "class")


def class_ids(root: Path, out: Path, names: dict[int, str]) -> dict[int, Any]:
    """Model index -> the dataset's own class id (DICE ids need not be 0..N-1, and ImageFolder
    orders classes by folder name)."""
    cmap = out / "class_map.json"  # written by the SDK's DICE -> YOLO conversion
    if cmap.is_file():
        return {int(e["index"]): e["class_id"] for e in json.loads(cmap.read_text())}
    ann = root / "annotations.json"
    if ann.is_file():  # DICE -> ImageFolder: one folder per class, named after it
        try:
            from sdk.datasets.convert import _safe_dir_name
        except ImportError:  # an SDK without the helper: assume the names are the folders
            def _safe_dir_name(name: str) -> str:
                return name
        dirs: dict[str, Any] = {}
        for c in json.loads(ann.read_text()).get("classes") or []:
            d = _safe_dir_name(str(c["name"]))
            dirs[f"{d}_{c['id']}" if d in dirs else d] = c["id"]
        return {int(i): dirs.get(str(n), int(i)) for i, n in names.items()}
    return {int(i): int(i) for i in names}


def classify_error(exc: BaseException, phase: str) -> ErrorType:
    """The SDK's classifier (out of memory, network, ...; FRAMEWORK_ERROR otherwise), and a
    dataset problem told by Ultralytics' wording while the data is being prepared."""
    error_type = error_type_of(exc, default=ErrorType.FRAMEWORK_ERROR)
    text = f"{type(exc).__name__}: {exc}".lower()
    if (error_type is not ErrorType.RESOURCE_ERROR and phase in ("dataset", "setup")
            and any(h in text for h in DATASET_HINTS)):
        return ErrorType.DATASET_ERROR
    return error_type


class UltralyticsJob:
    def __init__(self, sdk: TrainerSDK) -> None:
        self.sdk = sdk
        self.env = sdk.env
        self.work = Path(self.env.work_dir)
        self.phase = "config"
        self.bridge: Any = None
        self.beats: Any = None
        self.storage: S3Storage | None = None

    # ------------------------------------------------------------------ steps
    def run(self) -> int:
        env, sdk = self.env, self.sdk
        self.work.mkdir(parents=True, exist_ok=True)
        ul_runtime.prepare_environment(self.work)
        sdk.report_started(task_type=env.task_type, resume_from=env.resume_from, epochs=env.epochs,
                           device=env.device)
        from ul_callbacks import Heartbeats

        self.beats = Heartbeats(sdk, env.epochs).start()  # alive through imports, download, setup
        # 1. config (imports ultralytics.cfg only after its environment is set)
        import ul_config

        weights_dir = ul_runtime.configure_settings(self.work)
        plan = ul_config.build_plan(env)
        for warning in plan.warnings:
            sdk.log("WARNING", warning)
        ul_config.check_model_config(plan.model_yaml)
        device = ul_runtime.ultralytics_device(env.device)
        args = self.arguments(plan, device)
        ul_config.check_values(args)
        if env.checkpoints_location is not None:
            self.storage = S3Storage(env.checkpoints_location)
        # 2. dataset
        self.phase = "dataset"
        data, classes = self.prepare_data(plan)
        if sdk.should_stop:  # cancelled while preparing: nothing to save yet
            return self.stopped("stop requested before training")
        # 3. model
        self.phase = "model"
        source, path = self.model_source(plan, weights_dir)
        # 4. train
        return self.train(plan, args, data, classes, source, path)

    def arguments(self, plan: Any, device: str) -> dict[str, Any]:
        env = self.env
        gpu = device != "cpu"
        # on a CPU Ultralytics' own 0 (a worker process on the job's second CPU measured slower
        # inside the platform: bench/README.md, training speed); a job's own `workers` is kept
        workers = min(8, ul_runtime.job_cpus(default=2)) if gpu else 0
        args: dict[str, Any] = {
            "task": plan.task, "epochs": env.epochs, "batch": env.batch_size, "imgsz": env.image_size,
            "lr0": env.learning_rate, "device": device, "workers": workers,
            # Ultralytics' default on a GPU; on a CPU with native bfloat16 (AMX) the platform's:
            # kept when ul_amp's offline check of the job's own model agrees
            "amp": gpu or amp.native_cpu_bf16(),
            "nbs": env.batch_size,      # one optimizer step per batch: small datasets learn in few epochs
            "project": str(self.work / "runs"), "name": "train", "exist_ok": True,
            "save_dir": str(self.work / "runs" / "train"),
        }
        args.update(plan.user_args)  # Ultralytics' own names from CONFIG / advanced_config win
        if args.get("save") is False:
            self.sdk.log("WARNING", "save=False ignored: checkpoints are how a job resumes and serves predictions")
        args["save"] = True
        if ("lr0" not in plan.user_args and str(args.get("optimizer", "auto")).lower() == "auto"
                and env.learning_rate != 0.01):
            self.sdk.log("INFO", "optimizer=auto chooses its own learning rate; name an optimizer "
                         "(advanced_config.optimizer) for LEARNING_RATE to apply as lr0")
        return args

    def prepare_data(self, plan: Any) -> tuple[str, dict[str, Any]]:
        sdk = self.sdk
        root = sdk.download_dataset(dest=self.work / "dataset-source")
        target = "imagefolder" if plan.task == "classify" else "yolo"
        out = sdk.convert_dataset(root, target, out_dir=self.work / f"dataset-{target}",
                                  val_fraction=plan.val_fraction, seed=plan.split_seed)
        if plan.task == "classify":
            data = str(out)
        else:
            data = str(next((out / n for n in ("data.yaml", "data.yml") if (out / n).is_file()), out / "data.yaml"))
        from ultralytics.data.utils import check_cls_dataset, check_det_dataset

        try:
            info = check_cls_dataset(data, split="val") if plan.task == "classify" else check_det_dataset(data)
        except Exception as exc:
            raise DatasetError(f"Ultralytics cannot use the dataset: {type(exc).__name__}: {exc}") from None
        names = info.get("names") or {}
        if isinstance(names, list):
            names = dict(enumerate(names))
        if not names:
            raise DatasetError("the dataset has no classes")
        classes = {"names": {int(k): str(v) for k, v in names.items()}, "class_ids": class_ids(root, out, names)}
        sdk.event("dataset_prepared", f"{target} dataset with {len(names)} classes at {out}",
                  data={"format": target, "classes": [classes["names"][i] for i in sorted(classes["names"])],
                        "val_fraction": plan.val_fraction})
        return data, classes

    def model_source(self, plan: Any, weights_dir: Path) -> tuple[str, Path | None]:
        """('resume' | 'weights' | 'pretrained' | 'scratch', local .pt or None)."""
        import ul_checkpoints

        env, sdk = self.env, self.sdk
        if env.resume_from:
            path = sdk.download_checkpoint(env.resume_from, self.work / "resume" / "last.pt")
            if ul_checkpoints.resumable(ul_checkpoints.load(path)):
                return "resume", path
            sdk.log("WARNING", f"RESUME_FROM {env.resume_from} holds no optimizer state: "
                    "training starts again from its weights")
            return "weights", path
        if plan.weights_uri:
            uri = plan.weights_uri
            if uri.startswith("s3://"):
                return "weights", sdk.download_checkpoint(uri, self.work / "weights" / Path(uri).name)
            if not Path(uri).is_file():
                raise CheckpointError(f"weights {uri!r} not found (use an s3:// URI or a path on the node)")
            return "weights", Path(uri)
        if plan.use_pretrained and self.storage is not None:
            key = f"{PRETRAINED_PREFIX}/{plan.model_stem}.pt"
            if self.storage.head(key):
                return "pretrained", self.storage.download_file(key, weights_dir / f"{plan.model_stem}.pt")
            sdk.log("INFO", f"no pretrained weights at {self.storage.uri(key)}: "
                    f"training {plan.model_yaml} from scratch")
        return "scratch", None

    # ------------------------------------------------------------------ training
    def train(self, plan: Any, args: dict[str, Any], data: str, classes: dict[str, Any], source: str,
              path: Path | None) -> int:
        import ul_checkpoints
        from ul_callbacks import Bridge, StopTraining
        from ultralytics.models.yolo import classify, detect, segment

        env, sdk = self.env, self.sdk
        trainer_cls = {"detect": detect.DetectionTrainer, "segment": segment.SegmentationTrainer,
                       "classify": classify.ClassificationTrainer}[plan.task]
        if "," in str(args["device"]):  # several GPUs: Ultralytics' DDP, with the platform's part (ul_ddp)
            import ul_ddp

            trainer_cls = ul_ddp.TRAINERS[plan.task]
        save_dir = Path(args["save_dir"])
        self.offline_amp_check(args, forced="amp" in plan.user_args)
        if source == "resume":
            info = ul_checkpoints.prepare_resume(path, {
                "data": data, "project": args["project"], "name": args["name"], "save_dir": str(save_dir),
                "device": args["device"], "workers": args["workers"], "amp": args["amp"]}, env.epochs)
            if info["epoch"] + 1 >= env.epochs:
                return self.already_finished(plan, classes, path, info)
            ul_checkpoints.restore_results_csv(info["train_results"], save_dir / "results.csv")
            self.restore_best(save_dir / "weights" / "best.pt")
            overrides = {"resume": str(path), "data": data, "save_dir": str(save_dir),
                         "device": args["device"], "workers": args["workers"]}
            sdk.log("INFO", f"resuming from {env.resume_from} at epoch {info['epoch'] + 2} of {env.epochs}")
        else:
            overrides = {**args, "model": plan.model_yaml, "data": data,
                         "pretrained": str(path) if path is not None else False}
        self.phase = "setup"
        trainer = self.build_trainer(trainer_cls, overrides)
        # Ultralytics' trainer sets workers=0 on a CPU as it is built, whatever the job asked; its
        # dataloaders are built later, in train(): the job's own choice goes back in between
        trainer.args.workers = args["workers"]
        # a CPU's autocast is bfloat16, which needs no loss scaling: not Ultralytics' CUDA scaler
        trainer.add_callback("on_pretrain_routine_end", ul_amp.cpu_scaler_off)
        warnings.filterwarnings("ignore", message="torch.cuda.amp.GradScaler is enabled, but CUDA is not available")
        channels_last = ul_runtime.use_channels_last(plan.channels_last, args["device"])
        if channels_last:
            ul_runtime.channels_last_models(trainer)
        self.bridge = Bridge(sdk, plan.task, self.beats)
        ddp = bool(getattr(trainer, "ddp", False))  # Ultralytics will train in worker processes
        if not ddp:  # (in DDP its rank-0 worker gets the Bridge's callbacks: ul_ddp.Worker)
            self.bridge.attach(trainer)
        sdk.event("model_initialized", f"{plan.model_stem} ({source}) for {plan.task}",
                  data={"model": plan.model_stem, "source": source, "weights": str(path) if path else None,
                        "resume_from": env.resume_from, "save_dir": str(save_dir)})
        # The MLflow run (and its process) start with training, not before: MLflow's import
        # (~2 s of CPU) then runs on the CPU the training leaves free (torch_threads) instead of
        # competing with the imports and dataset preparation every job waits for.
        sdk.start_mlflow_run()
        sdk.log_params({"framework": "ultralytics", "task": plan.task, "model": plan.model_stem,
                        "dataset_id": env.dataset_id,
                        "channels_last": channels_last,
                        **{k: v for k, v in args.items()
                                                         if k not in ("project", "save_dir", "name")}})
        if ddp:
            return self.train_ddp(trainer, plan, classes, amp_forced="amp" in plan.user_args,
                                  channels_last=channels_last)
        try:
            trainer.train()
        except StopTraining as stop:
            return self.stopped(str(stop))
        self.phase = "finish"
        if self.sdk.should_stop:  # the stop came with the last epoch: nothing left to skip
            return self.stopped("stop requested during the last epoch")
        return self.finish(plan, trainer, classes)

    def build_trainer(self, trainer_cls: Any, overrides: dict[str, Any]) -> Any:
        return trainer_cls(overrides=overrides)

    def train_ddp(self, trainer: Any, plan: Any, classes: dict[str, Any], amp_forced: bool,
                  channels_last: bool) -> int:
        """Ultralytics' own DDP (ul_ddp.py): its rank-0 worker reports while training; this
        process hands it the platform's part, waits, and finishes from the worker's account."""
        import subprocess

        import ul_ddp

        summary = self.work / "ddp-summary.json"
        ul_ddp.hand_off(summary, amp_forced=amp_forced, channels_last=channels_last)
        self.beats.stop()  # the worker heartbeats for the job from now on: one voice, its epochs
        workers = trainer.world_size
        self.sdk.log("INFO", f"training on device {trainer.args.device} with Ultralytics' DDP "
                             f"({workers} worker process{'es' if workers != 1 else ''}; rank 0 reports)")
        try:
            trainer.train()
        except subprocess.CalledProcessError as exc:
            state = ul_ddp.read_summary(summary)
            if self.sdk.should_stop or state.get("stopped"):  # a signal ended the workers too
                self.bridge.restore(state)
                return self.stopped(state.get("stop_reason") or self.sdk.stop_reason or "stopped")
            raise RuntimeError(f"Ultralytics' DDP workers failed (exit code {exc.returncode}); "
                               "their output is in the job's log") from None
        state = ul_ddp.read_summary(summary)
        if not state:
            raise RuntimeError(f"Ultralytics' DDP workers ended without their summary ({summary})")
        self.bridge.restore(state)
        for epoch, metrics in enumerate(self.bridge.history, self.bridge.start_epoch + 1):
            self.sdk.log_metrics(metrics, step=epoch)  # MLflow is this process's (ul_ddp)
        if state.get("best_fitness") is not None:
            trainer.best_fitness = state["best_fitness"]
        if self.bridge.stopped or self.sdk.should_stop:
            return self.stopped(state.get("stop_reason") or self.sdk.stop_reason or "stopped")
        self.phase = "finish"
        return self.finish(plan, trainer, classes)

    def offline_amp_check(self, args: dict[str, Any], forced: bool) -> None:
        """Ultralytics' trainer checks AMP with a reference model it would download (check_amp in
        ultralytics/engine/trainer.py, called from _setup_train when amp is on): ul_amp puts an
        offline check of the job's own model in its place, and the outcome goes to the job's log.
        amp=True from the job's config is kept whatever the check says; amp=False skips it."""
        force = bool(forced and args.get("amp"))

        def report(ok: bool, why: str) -> None:
            self.sdk.log(*amp.report_line(ok, why, forced=force))

        if not ul_amp.patch_ultralytics(report, force=force) and args.get("amp") and not forced:
            self.sdk.log("INFO", "amp=False: this Ultralytics has no check_amp for the offline check to replace")
            args["amp"] = False

    def restore_best(self, target: Path) -> None:
        """A resumed attempt starts from the job's best so far: final evaluation and `best` stay
        the job's best, not only this attempt's."""
        key = checkpoint_key(self.env.job_id, "best")
        if self.storage is not None and self.storage.head(key):
            self.storage.download_file(key, target)

    def stopped(self, reason: str) -> int:
        """Cancelled (or SIGTERM): `last` is uploaded, no `done`; the platform records the outcome."""
        errors = self.sdk.wait_for_uploads()
        self.beats.stop()
        self.sdk.log("WARNING", f"training stopped ({reason}); checkpoint uploads: {errors or 'complete'}")
        self.sdk.flush()
        if (self.sdk.stop_reason or "").startswith("received SIG"):
            # not a cancel through the API: end by the signal so the platform sees a killed attempt
            # (and retries it from `last`) instead of a clean exit without `done`
            sig = signal.SIGINT if "SIGINT" in (self.sdk.stop_reason or "") else signal.SIGTERM
            self.sdk.close()
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        return 0

    def finish(self, plan: Any, trainer: Any, classes: dict[str, Any]) -> int:
        import ul_checkpoints

        env, sdk, bridge = self.env, self.sdk, self.bridge
        meta = {"task": plan.task, "task_type": env.task_type, "job_id": env.job_id, "model": plan.model_stem,
                "imgsz": env.image_size, **classes}
        for p in (trainer.best, trainer.last):
            ul_checkpoints.tag(Path(p), meta)
        last_uri = sdk.upload_checkpoint(trainer.last, "last") if Path(trainer.last).is_file() else bridge.last_uri
        best_uri = sdk.upload_checkpoint(trainer.best, "best") if Path(trainer.best).is_file() else None
        best_uri = best_uri or bridge.best_uri or last_uri
        artifacts = self.upload_artifacts(Path(trainer.save_dir), Path(trainer.csv))
        if Path(trainer.best).is_file():
            sdk.log_artifact(trainer.best, "weights")
        final = dict(bridge.history[-1]) if bridge.history else {}
        final.update(bridge.final)  # Ultralytics' evaluation of best.pt at the end
        final["epochs_completed"] = bridge.epochs_done
        if trainer.best_fitness is not None:
            final["best_fitness"] = float(trainer.best_fitness)
        if bridge.best_epoch:
            final["best_epoch"] = bridge.best_epoch
        sdk.log_metrics({f"final_{k}": v for k, v in final.items()})
        self.report_completed(final, {"best": best_uri, "last": last_uri}, artifacts)
        return 0

    def report_completed(self, final: dict[str, Any], checkpoints: dict[str, str | None],
                         artifacts: dict[str, str] | None = None) -> None:
        self.sdk.wait_for_uploads()  # still heartbeating while the checkpoints upload
        self.beats.stop()            # nothing may follow `done`
        self.sdk.report_completed(final, checkpoints=checkpoints, artifacts=artifacts)

    def upload_artifacts(self, save_dir: Path, csv: Path) -> dict[str, str]:
        sdk = self.sdk
        artifacts: dict[str, str] = {}
        if csv.is_file():
            artifacts["results.csv"] = sdk.upload_file(csv, "results.csv", content_type="text/csv")
            sdk.log_artifact(csv)
        if (save_dir / "args.yaml").is_file():
            artifacts["args.yaml"] = sdk.upload_file(save_dir / "args.yaml", "args.yaml", content_type="text/yaml")
        plots = sorted(p for p in save_dir.glob("*") if p.suffix.lower() in (".png", ".jpg") and p.is_file())
        for p in plots[:MAX_PLOTS]:
            ctype = "image/png" if p.suffix.lower() == ".png" else "image/jpeg"
            artifacts[p.name] = sdk.upload_file(p, f"plots/{p.name}", content_type=ctype)
        if (save_dir / "results.png").is_file():
            sdk.log_artifact(save_dir / "results.png", "plots")
        return artifacts

    def already_finished(self, plan: Any, classes: dict[str, Any], path: Path, info: dict[str, Any]) -> int:
        """RESUME_FROM is the last epoch's checkpoint (the attempt died before `done`): report it."""
        import ul_checkpoints
        from ul_callbacks import friendly

        sdk = self.sdk
        sdk.log("INFO", f"{path.name} already holds all {self.env.epochs} epochs: reporting it")
        ul_checkpoints.tag(path, {"task": plan.task, "task_type": self.env.task_type, "job_id": self.env.job_id,
                                  "model": plan.model_stem, "imgsz": self.env.image_size, **classes})
        last_uri = sdk.upload_checkpoint(path, "last")
        best_key = checkpoint_key(self.env.job_id, "best")
        best_uri = self.storage.uri(best_key) if self.storage is not None and self.storage.head(best_key) else last_uri
        final = friendly(info.get("train_metrics") or {})
        final["epochs_completed"] = self.env.epochs
        self.report_completed(final, {"best": best_uri, "last": last_uri})
        return 0


def main(sdk: TrainerSDK) -> int:
    job = UltralyticsJob(sdk)
    try:
        return job.run()
    except (SDKError, CallbackError, KeyboardInterrupt):
        if job.beats is not None:
            job.beats.stop()
        raise  # the SDK reports these with their own error type
    except Exception as exc:
        if job.beats is not None:
            job.beats.stop()
        phase = job.bridge.phase if job.bridge is not None and job.phase == "setup" else job.phase
        error_type = classify_error(exc, phase)
        message = f"{type(exc).__name__}: {exc}".strip()
        sdk.log("ERROR", f"{error_type} during {phase}: {message}")
        sdk.report_failed(error_type, message[:4000], traceback.format_exc(),
                          epochs_completed=job.bridge.epochs_done if job.bridge is not None else 0)
        return 1


if __name__ == "__main__":
    run_main(main)
