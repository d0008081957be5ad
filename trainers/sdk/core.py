"""TrainerSDK: the seed 001 API on top of the contract (DESIGN §3)."""
from __future__ import annotations

import itertools
import threading
import time
import traceback as tb_module
import uuid
from pathlib import Path
from typing import Any, Literal, Mapping

from . import contract
from .callbacks import BackgroundSender, CallbackClient, Outcome
from .datasets import DatasetCache
from .env import TrainerEnv
from .errors import CallbackError, ErrorType, error_type_of
from .liveness import KeepAlive
from .log import TraceLogger
from .mlflow_helpers import MlflowTracker
from .sdk_storage import StorageMixin
from .signals import StopSignals
from .storage import CheckpointUploader, S3Storage


# the contract's metric cleaning (numbers only, non-finite ones by name), by its old name
_clean_metrics = contract.wire_metrics


class TrainerSDK(StorageMixin):
    """Talks to the platform for one trainer process (see README.md in this folder)."""

    def __init__(self, environ: Mapping[str, str] | None = None, *,
                 install_signal_handlers: bool = True) -> None:
        self.env = TrainerEnv.from_environ(environ)
        e = self.env
        self.logger = TraceLogger(e.trace_id, e.secrets)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._stop_reason: str | None = None
        self._stop_logged = False
        self._done: dict[str, Any] | None = None
        self._closed = False
        self._start = time.monotonic()
        self._last_epoch: int | None = None
        # the last heartbeat's state and time: what the keep-alive repeats while the SDK waits
        self._beat_state: dict[str, Any] = {}
        self._last_beat_at = time.monotonic()
        # a beat well within the platform's heartbeat timeout (passed as VTP_HEARTBEAT_TIMEOUT_S)
        keepalive_s = min(15.0, max(0.5, e.setting("VTP_HEARTBEAT_TIMEOUT_S", 300.0) / 4))
        # a rank > 0 of a distributed job is silent: no callbacks, no keep-alive, no MLflow (rank 0
        # speaks for the job; the platform gives this rank no token); its log still reaches the job's
        self.keepalive = KeepAlive(self._repeat_heartbeat, lambda: time.monotonic() - self._last_beat_at,
                                   keepalive_s, enabled=not e.silent)
        self._done_timeout = e.setting("VTP_DONE_TIMEOUT_S", 60.0)
        self._flush_timeout = e.setting("VTP_CALLBACK_FLUSH_TIMEOUT_S", 10.0)
        # from the last epoch's first heartbeat, callbacks wait (this long at most) to go with done
        self._linger = e.setting("VTP_CALLBACK_LINGER_S", 10.0)
        self._lingering = False
        # how long done/close wait for queued MLflow calls (the run id and a complete run)
        self._mlflow_timeout = e.setting("VTP_MLFLOW_TIMEOUT_S", 60.0)
        self._backoff = (e.setting("VTP_CALLBACK_BACKOFF_BASE_S", 0.2), e.setting("VTP_CALLBACK_BACKOFF_MAX_S", 5.0))
        timeout = e.setting("VTP_CALLBACK_TIMEOUT_S", 10.0)
        base, token = (None, None) if e.silent else (e.callback_base, e.callback_token)
        self._sender_client = CallbackClient(base, e.job_id, token, timeout)
        self._done_client = CallbackClient(base, e.job_id, token, timeout)
        self._sender: BackgroundSender | None = None
        if self._sender_client.enabled:
            self._sender = BackgroundSender(
                self._sender_client, self.logger, self._request_stop,
                max_items=int(e.setting("VTP_CALLBACK_QUEUE_MAX", 10_000)),
                backoff_base=self._backoff[0], backoff_cap=self._backoff[1])
        elif e.silent:
            self.logger.info(f"rank {e.rank} of {e.world_size}: rank 0 reports for the job")
        else:
            self.logger.warning("BACKEND_BASE_URL/CALLBACK_URL not set: callbacks are only logged (dry run)")
        self._storages: dict[str, S3Storage] = {}
        self._uploader: CheckpointUploader | None = None
        self._cache: DatasetCache | None = None
        self.mlflow = MlflowTracker(None if e.silent else e.mlflow_tracking_uri, e.project_id, e.job_id, self.logger, e.secrets,
                                    staging_dir=e.tmp_dir / f"vtp-mlflow-{e.job_id}", tags=e.run_tags())
        self._signals = StopSignals(self._request_stop)
        if install_signal_handlers:
            self._signals.install()

    # ----- identity and configuration -----
    job_id = property(lambda self: self.env.job_id)
    trace_id = property(lambda self: self.env.trace_id)
    attempt = property(lambda self: self.env.attempt)
    task_type = property(lambda self: self.env.task_type)
    work_dir = property(lambda self: self.env.work_dir)

    def get_basic_config(self) -> dict[str, Any]:
        return self.env.basic_config()

    def get_advanced_config(self) -> dict[str, Any]:
        return self.env.advanced_config()

    def get_full_config(self) -> dict[str, Any]:
        return {"basic": self.get_basic_config(), "advanced": self.get_advanced_config()}

    def log(self, level: str, message: str) -> None:
        self.logger.log(level, message)

    @property
    def is_main(self) -> bool:
        """Whether this process speaks for the job: rank 0, or the only process. Every other rank
        of a distributed job is silent (callbacks, MLflow and checkpoint uploads are rank 0's)."""
        return not self.env.silent

    # ----- stop requests -----
    def _request_stop(self, reason: str) -> None:
        if self._stop_reason is None:  # keep the first reason; called from signal handler too
            self._stop_reason = reason

    @property
    def should_stop(self) -> bool:
        if self._stop_reason and not self._stop_logged:
            self._stop_logged = True
            self.logger.warning(f"stop requested: {self._stop_reason}")
        return self._stop_reason is not None

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason

    # ----- low-level callbacks -----
    def _envelope(self) -> dict[str, Any]:
        """The envelope fields of a new callback (contract.envelope): a fresh idempotency key."""
        return {"event_id": str(uuid.uuid4()), "attempt": self.env.attempt, "seq": next(self._seq),
                "trace_id": self.env.trace_id}

    def heartbeat(self, epoch: int | None = None, total_epochs: int | None = None, step: int | None = None,
                  total_steps: int | None = None, progress: float | None = None,
                  metrics: Mapping[str, Any] | None = None) -> None:
        """Queue a heartbeat; returns at once. A reply should_continue=false sets should_stop.
        A no-op on a silent rank (> 0): its stop comes from rank 0 through sdk.distributed.any_rank."""
        if self.env.silent:
            return
        body = contract.heartbeat_body(epoch=epoch, total_epochs=total_epochs, step=step, total_steps=total_steps,
                                       progress=progress, metrics=metrics, **self._envelope())
        if epoch is not None:
            self._last_epoch = epoch
        self._beat_state = {"epoch": epoch, "total_epochs": total_epochs, "step": step, "total_steps": total_steps,
                            "progress": progress}
        self._last_beat_at = time.monotonic()
        if self._sender:
            self._sender.submit("heartbeat", body, epoch=epoch)
            total = total_epochs or self.env.epochs
            if epoch is not None and total and epoch >= total and not self._lingering and self._linger > 0:
                # the last epoch: what is sent from now on can ride with done, which then costs
                # one round trip at the end, not two (bounded: a long last epoch reports as usual)
                self._lingering = True
                self._sender.hold(self._linger)
        else:
            self.logger.debug(f"heartbeat (dry run): epoch={epoch} progress={body['progress']}")

    def _repeat_heartbeat(self) -> None:
        """The keep-alive's heartbeat: the trainer's last state again, without metrics."""
        self.heartbeat(**self._beat_state)

    def event(self, event_type: str, message: str = "", level: str = "info",
              data: Mapping[str, Any] | None = None) -> None:
        """Queue an event; returns at once. Events are delivered in order, at least once.
        A no-op on a silent rank (> 0): rank 0 tells the job's story."""
        if self.env.silent:
            return
        if not contract.valid_event_type(str(event_type)):
            fixed = contract.coerce_event_type(event_type)
            self.logger.warning(f"event type {event_type!r} is not one the platform accepts "
                                f"({contract.EVENT_TYPE_PATTERN}, at most {contract.MAX_EVENT_TYPE} characters): "
                                f"sent as {fixed!r}")
            event_type = fixed
        body = contract.event_body(event_type, self.logger.mask(str(message)), level, data, **self._envelope())
        if self._sender:
            self._sender.submit("event", body)
        level = body["level"]
        self.logger.log(level, f"event {event_type}: {message}" if message else f"event {event_type}")

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until queued heartbeats/events are delivered (bounded)."""
        return self._sender.flush(self._flush_timeout if timeout is None else timeout) if self._sender else True

    def done(self, status: contract.DoneStatus, *, error: str | None = None, error_type: ErrorType | str | None = None,
             traceback: str | None = None, final_metrics: Mapping[str, Any] | None = None,
             artifacts: Mapping[str, str] | None = None,
             training_time_seconds: float | None = None) -> dict[str, Any]:
        """Send the one ``done`` callback (blocking, bounded). Raises CallbackError (exit 2)
        when the backend cannot be told; a second call returns the first reply. On a silent rank
        (> 0) the outcome is only logged."""
        with self._lock:
            if self._done is not None:
                self.logger.info(f"done already reported ({self._done.get('status')}); ignoring {status}")
                return self._done
            self._done = {"status": status, "pending": True}
        if status not in contract.DONE_STATUSES:
            raise ValueError("status must be 'succeeded' or 'failed'")
        if self.env.silent:  # rank 0 reports the job's outcome; this rank's ends in its log
            outcome = f"{status} ({error_type}: {self.logger.mask(str(error))})" if error else status
            self.logger.info(f"rank {self.env.rank} of {self.env.world_size} ends: {outcome}; "
                             "rank 0 reports for the job")
            self._done = {"status": status, "silent": True}
            return self._done
        # queued behind the run's other MLflow calls; drains while the callbacks flush below
        self.mlflow.end("FINISHED" if status == "succeeded" else "FAILED")
        t0 = time.monotonic()
        elapsed = t0 - self._start  # training time: not the flush and the waits below
        # the queued callbacks keep going out meanwhile; `done` follows them (below)
        # the job record names the run, so the run should hold everything once the job is final
        budget = self._mlflow_budget()
        with self.keepalive.waiting():
            flushed = self.mlflow.wait(max(0.0, budget - (time.monotonic() - t0)))
        if not flushed:
            self.logger.warning(f"mlflow still busy after {budget:.0f}s: reporting done without waiting for it")
        body = contract.done_body(
            status, error=self.logger.mask(str(error)) if error else None, error_type=error_type,
            traceback=self.logger.mask(traceback) if traceback else None, final_metrics=final_metrics,
            artifacts=artifacts,
            mlflow_run_id=self.mlflow.run_id,  # known once the queued start has run
            training_time_seconds=training_time_seconds if training_time_seconds is not None else elapsed,
            **self._envelope())  # without seq: done is once per attempt
        self.logger.info(f"reporting done: {status}" + (f" ({body['error_type']}: {error})" if error else ""))
        if not self._done_client.enabled:
            self._done = {"status": status, "dry_run": True}
            return self._done
        deadline = time.monotonic() + self._done_timeout
        # after every queued heartbeat/event, and with the last of them in one request
        reply = (self._sender.finish("done", body, min(self._flush_timeout, self._done_timeout), deadline)
                 if self._sender else None)
        if reply is None:  # the backlog did not drain in time: done goes anyway, as its own request
            if self._sender:
                self.logger.warning("some heartbeats/events were not delivered before done")
            reply = self._done_client.send_until("done", body, deadline, *self._backoff)
        if reply.outcome is Outcome.OK:
            self._done = {**reply.data, "status": status}
            return self._done
        if reply.outcome is Outcome.CONFLICT:  # another outcome was recorded first (e.g. cancelled)
            self.logger.warning(f"backend already holds a different outcome for this job ({reply.reason}); "
                                "not retrying")
            self._done = {**reply.data, "status": status, "conflict": True}
            return self._done
        if reply.outcome is Outcome.RETRY:
            reason = f"backend unreachable for {self._done_timeout:.0f}s while reporting done: {reply.reason}"
        else:
            reason = f"backend refused the done callback: {reply.reason}"
        self._done = {"status": status, "delivered": False, "reason": reason}
        self.logger.error(f"callback failure, exit code 2: {reason}")
        raise CallbackError(reason)

    _progress = staticmethod(contract.progress_percent)

    # ----- seed 001 reporting API -----
    def report_started(self, stage: str = "training", total_epochs: int | None = None,
                       operation_type: str | None = None, **data: Any) -> None:
        stage = operation_type or stage
        self.event("started", f"{stage} started (attempt {self.env.attempt})", data={
            "stage": stage, "total_epochs": total_epochs or self.env.epochs, "attempt": self.env.attempt,
            "framework": self.env.framework, "model_name": self.env.model_name, **data})

    def report_progress(self, epoch: int, total_epochs: int | None = None, step: int | None = None,
                        total_steps: int | None = None, metrics: Mapping[str, Any] | None = None,
                        extra_data: Mapping[str, Any] | None = None) -> None:
        self.heartbeat(epoch, total_epochs or self.env.epochs, step, total_steps, metrics=metrics)

    def report_validation(self, epoch: int, metrics: Mapping[str, Any] | None = None,
                          per_class: Mapping[str, Any] | None = None, *, task_type: str | None = None,
                          primary_metric: tuple[str, float] | None = None,
                          all_metrics: Mapping[str, Any] | None = None, class_names: list[str] | None = None,
                          visualization_urls: Mapping[str, str] | None = None) -> None:
        merged = _clean_metrics({**(all_metrics or {}), **(metrics or {})})
        data: dict[str, Any] = {"epoch": epoch, "metrics": merged, "task_type": task_type or self.env.task_type}
        if per_class:
            data["per_class"] = dict(per_class)
        if primary_metric:
            data["primary_metric"] = {"name": primary_metric[0], "value": float(primary_metric[1])}
        if class_names:
            data["class_names"] = list(class_names)
        if visualization_urls:
            data["visualization_urls"] = dict(visualization_urls)
        self.event("validation_complete", f"validation at epoch {epoch}", data=data)

    def report_completed(self, final_metrics: Mapping[str, Any] | None = None,
                         checkpoints: Mapping[str, str] | None = None, total_epochs: int | None = None,
                         artifacts: Mapping[str, str] | None = None, **_: Any) -> dict[str, Any]:
        """Wait for pending checkpoint uploads, then send done=succeeded (blocking)."""
        arts = {**(artifacts or {}), **(checkpoints or {})}
        errors = self.wait_for_uploads()
        if errors:
            failure = self.upload_failure(errors)
            self.report_failed(failure.error_type, str(failure))
            raise failure
        metrics = dict(final_metrics or {})
        if total_epochs is not None:
            metrics.setdefault("epochs_completed", total_epochs)
        return self.done("succeeded", final_metrics=metrics, artifacts=arts)

    def report_failed(self, error_type: ErrorType | str, message: str, traceback: str | None = None,
                      epochs_completed: int | None = None, final_metrics: Mapping[str, Any] | None = None) -> dict[str, Any]:
        metrics = dict(final_metrics or {})
        if epochs_completed is not None:
            metrics["epochs_completed"] = epochs_completed
        self.wait_for_uploads(timeout=self._flush_timeout)  # a resumable 'last' should land
        return self.done("failed", error=message, error_type=error_type, traceback=traceback,
                         final_metrics=metrics)

    # ----- MLflow (optional; silent no-ops without MLFLOW_TRACKING_URI) -----
    # Every call is queued for one background thread and returns at once (MLflow's first call
    # costs seconds); done() waits, bounded, for the queue and sends the run id.
    def start_mlflow_run(self, wait: bool | float = False) -> str | None:
        """Queue the run's start; returns its id if known (``wait``: True or seconds to wait)."""
        timeout = (self._mlflow_timeout if wait is True else float(wait)) if wait else None
        return self.mlflow.start(wait=timeout)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.mlflow.log_params(dict(params))

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        self.mlflow.log_metrics(dict(metrics), step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path)

    def _mlflow_budget(self) -> float:
        """How long done/close wait for queued MLflow calls: no longer than for the callbacks
        after a stop request (a signal gives the process a grace period), and once the attempt
        failed: the platform should learn why within its liveness windows, and what failed it
        (storage unreachable, say) may be what MLflow's calls wait on too (its artifacts go to
        the same bucket); a failed run closed late costs little."""
        failed = self._done is not None and self._done.get("status") == "failed"
        return min(self._mlflow_timeout, self._flush_timeout) if self._stop_reason or failed else self._mlflow_timeout

    @property
    def mlflow_run_id(self) -> str | None:
        """The run id, waiting (bounded) for a queued start: whoever asks needs the real id."""
        return self.mlflow.wait_run_id(self._mlflow_timeout)

    # ----- lifecycle -----
    def close(self) -> None:
        """Finish uploads, deliver queued callbacks (bounded), release resources. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.mlflow.end()  # queued now so the run closes while uploads and callbacks finish
        try:
            if self._uploader is not None:
                errors = self._uploader.close(self.env.setting("VTP_UPLOAD_TIMEOUT_S", 1800.0))
                if errors:
                    self.logger.error(f"checkpoint uploads failed: {errors}")
            if self._sender is not None:
                self._sender.close(self._flush_timeout)
        finally:
            self._sender_client.close()
            self._done_client.close()
            self.mlflow.close(self._mlflow_budget())
            if self._cache is not None:
                self._cache.release_all()
            self._signals.restore()

    def __enter__(self) -> "TrainerSDK":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        try:
            if exc is not None and self._done is None and not isinstance(exc, CallbackError):
                if not (isinstance(exc, SystemExit) and exc.code in (0, None)):
                    message = str(exc) or type(exc).__name__
                    if isinstance(exc, KeyboardInterrupt):
                        message = "interrupted"
                    self.report_failed(error_type_of(exc), message,
                                       "".join(tb_module.format_exception(exc_type, exc, tb)))
        finally:
            self.close()
        return False
