"""Optional MLflow tracking, off the training thread and out of the training process.

Everything is a silent no-op without MLFLOW_TRACKING_URI or without mlflow installed, and a
tracking failure never fails training (it is logged once per kind). The caller only cleans its
arguments and enqueues; one background thread (``mlflow_worker.OrderedWorker``) hands the calls,
in submission order, to the MLflow process (``mlflow_child.py``, started with the run), where
MLflow's import and calls do not compete with training for this process's GIL. The run id is
known once the queued ``start`` has run: ``done`` waits for it (and for the queue to drain, so
the run holds everything when the job is final) with a bounded wait.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

from .log import TraceLogger
from .mlflow_worker import OrderedWorker

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

_SECRET_NAME = re.compile(r"(secret|token|password|passwd|credential|access_key|api_key|private)", re.I)
_MAX_PARAM_LEN = 6000  # MLflow's limit for a param value


class MlflowTracker:
    def __init__(self, tracking_uri: str | None, project_id: str, job_id: str,
                 logger: TraceLogger, secrets: list[str], staging_dir: Path | None = None,
                 max_queued: int = 10_000, tags: dict[str, str] | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = f"project-{project_id}"
        self.run_name = f"job-{job_id}"
        self.tags = dict(tags or {})
        self._log = logger
        self._secrets = set(secrets)
        self._staging = staging_dir
        self._mlflow: MlflowProcess | None = None  # once the run is started (worker thread)
        self._process: MlflowProcess | None = None
        self._run_id: str | None = None
        self._start_queued = False
        self._start_settled = threading.Event()  # start ran (run id known) or cannot happen
        self._ended = False
        self._warned: set[str] = set()
        self._worker = OrderedWorker("vtp-mlflow", max_queued, on_error=lambda e: self._warn("worker", e),
                                     on_drop=self._warn_drop)

    @property
    def enabled(self) -> bool:
        return bool(self.tracking_uri)

    def _warn(self, kind: str, exc: BaseException) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            text = str(exc) if isinstance(exc, MlflowProcessError) else f"{type(exc).__name__}: {exc}"
            self._log.warning(f"mlflow {kind} failed: {self._log.mask(text)}")

    def _warn_drop(self) -> None:
        self._log.warning("mlflow queue full: dropping tracking calls until it drains")

    # ----- caller side (training thread): clean the arguments, enqueue, return -----
    @property
    def run_id(self) -> str | None:
        """The run id once known, without waiting (see ``wait_run_id``)."""
        return self._run_id

    def wait_run_id(self, timeout: float) -> str | None:
        """The run id, waiting (bounded) for a queued start to run."""
        if self._start_queued:
            self._start_settled.wait(timeout)
        return self._run_id

    def start(self, wait: float | None = None) -> str | None:
        """Queue the start (or, on a later attempt of the same job, resume) of the run
        ``job-{id}``; returns the run id if already known, or after waiting ``wait`` seconds."""
        if not self.enabled or self._ended:
            return None
        if not self._start_queued:
            self._start_queued = True
            try:  # now, so that MLflow's import overlaps the trainer's own start-up
                self._process = MlflowProcess()
            except OSError as exc:
                self._warn("process", exc)
            if not self._worker.submit(self._do_start, force=True):
                self._start_settled.set()
        return self.wait_run_id(wait) if wait else self._run_id

    def _enqueue(self, task: Any) -> None:
        if not self.enabled or self._ended:
            return
        self.start()  # logging before start_mlflow_run starts the run, as before
        self._worker.submit(task)

    def log_params(self, params: dict[str, Any]) -> None:
        if not self.enabled:
            return
        # filtered here, on the caller: what is queued is already free of secrets
        clean = {str(k): str(v)[:_MAX_PARAM_LEN] for k, v in _flatten(params).items() if self._safe(str(k), v)}
        if clean:
            self._enqueue(lambda: self._do_log_params(clean))

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if not self.enabled:
            return
        clean = {_metric_key(k): float(v) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if clean:
            self._enqueue(lambda: self._call("log_metrics", clean, step=step))

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        """Logs the file as it is now: it is copied before this returns (the trainer may
        overwrite or delete it before the worker gets to it)."""
        if not self.enabled or self._ended:
            return
        src = Path(path)
        snap: Path | None = None
        if src.is_file():
            try:
                base = self._staging or Path(tempfile.gettempdir())
                folder = base / f"vtp-mlflow-{uuid.uuid4().hex[:12]}"
                folder.mkdir(parents=True, exist_ok=True)
                snap = folder / src.name  # MLflow names the artifact after the file
                shutil.copyfile(src, snap)
            except OSError as exc:
                self._warn("log_artifact", exc)
                return
        target = str(snap or src)  # a missing file fails in the worker and is logged once there

        def task() -> None:
            try:
                self._call("log_artifact", target, artifact_path)
            finally:
                if snap is not None:
                    shutil.rmtree(snap.parent, ignore_errors=True)
        self._enqueue(task)

    def end(self, status: str = "FINISHED") -> None:
        """Queue the end of the run (once); returns at once."""
        if self._ended:
            return
        self._ended = True
        if self._start_queued:
            self._worker.submit(lambda: self._do_end(status), force=True)

    def wait(self, timeout: float) -> bool:
        """Wait (bounded) until every queued call has run."""
        return self._worker.wait(timeout)

    def close(self, timeout: float) -> bool:
        """End the run if not ended, run what is queued (bounded) and stop the worker."""
        self.end()
        ok = self._worker.close(timeout)
        if not ok:
            # ended now, not once its current call returns: it may wait on what failed the
            # attempt (MLflow's artifacts go to the job's bucket), and it shares our output
            self._log.warning(f"mlflow calls still queued after {timeout:.0f}s: not waiting for them")
            if self._process is not None:
                self._process.proc.kill()
        elif self._process is not None:
            self._process.close()
        return ok

    def _safe(self, key: str, value: Any) -> bool:
        if _SECRET_NAME.search(key):
            return False
        text = str(value)
        return not any(s and s in text for s in self._secrets)

    # ----- worker side (the one background thread) -----
    def _do_start(self) -> None:
        try:
            if self._process is None:
                return
            try:
                reply = self._process.request({"op": "start", "tracking_uri": self.tracking_uri,
                                               "experiment": self.experiment_name, "run_name": self.run_name,
                                               "tags": self.tags})
            except MlflowProcessError as exc:
                if str(exc).startswith(("ModuleNotFoundError", "ImportError")):
                    self._warn("import", exc)
                    self.tracking_uri = None
                else:
                    self._warn("start_run", exc)
                return
            self._mlflow = self._process
            self._run_id = reply["run_id"]
        finally:
            self._start_settled.set()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        if self._mlflow is None:  # the run did not start: nothing to log into (warned once)
            return
        try:
            self._mlflow.request({"op": "call", "method": method, "args": list(args), "kwargs": kwargs})
        except Exception as exc:
            self._warn(method, exc)

    def _do_log_params(self, clean: dict[str, str]) -> None:
        for key, value in clean.items():  # one by one: a param logged by an earlier attempt stays
            self._call("log_param", key, value)

    def _do_end(self, status: str) -> None:
        if self._mlflow is None or not self._run_id:
            return
        self._call("end_run", status=status)
        self._mlflow = None


class MlflowProcessError(Exception):
    """A failure reported by (or about) the MLflow process: its text is "Type: message"."""


class MlflowProcess:
    """The MLflow process (``mlflow_child.py``), one JSON request and one reply line at a time;
    used by the one worker thread only."""

    def __init__(self) -> None:
        child = Path(__file__).with_name("mlflow_child.py")
        # -I: the SDK's folder (with modules named like PyPI packages) stays off the child's path
        self.proc = subprocess.Popen([sys.executable, "-I", "-u", str(child)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (OSError, ValueError) as exc:  # a broken pipe, or closed
            raise MlflowProcessError(f"the MLflow process is gone: {exc}") from None
        if not line:
            raise MlflowProcessError(f"the MLflow process exited (code {self.proc.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise MlflowProcessError(reply["error"])
        return reply

    def close(self, timeout: float = 10.0) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def _metric_key(key: str) -> str:
    # MLflow allows alphanumerics, _ - . / and space; Ultralytics names like "metrics/mAP50(B)".
    return re.sub(r"[^\w\-./ ]", "_", str(key))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{name}."))
        else:
            out[name] = v
    return out
