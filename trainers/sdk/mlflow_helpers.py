"""Optional MLflow tracking. Everything is a silent no-op without MLFLOW_TRACKING_URI or without
mlflow installed, and a tracking failure never fails training (it is logged once per kind)."""
from __future__ import annotations

import math
import os
import re
from typing import Any

from .log import TraceLogger

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

_SECRET_NAME = re.compile(r"(secret|token|password|passwd|credential|access_key|api_key|private)", re.I)
_MAX_PARAM_LEN = 6000  # MLflow's limit for a param value


class MlflowTracker:
    def __init__(self, tracking_uri: str | None, project_id: str, job_id: str,
                 logger: TraceLogger, secrets: list[str]) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = f"project-{project_id}"
        self.run_name = f"job-{job_id}"
        self._log = logger
        self._secrets = set(secrets)
        self._mlflow: Any = None
        self.run_id: str | None = None
        self._warned: set[str] = set()

    @property
    def enabled(self) -> bool:
        return bool(self.tracking_uri)

    def _warn(self, kind: str, exc: BaseException) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            self._log.warning(f"mlflow {kind} failed: {type(exc).__name__}: {self._log.mask(str(exc))}")

    def start(self) -> str | None:
        """Start (or, on a later attempt of the same job, resume) the run ``job-{id}``."""
        if not self.enabled:
            return None
        if self.run_id:
            return self.run_id
        try:
            import mlflow  # lazy: heavy, and optional for trainers
        except ImportError as exc:
            self._warn("import", exc)
            self.tracking_uri = None
            return None
        try:
            mlflow.set_tracking_uri(self.tracking_uri)
            exp = mlflow.set_experiment(self.experiment_name)
            existing = mlflow.search_runs(
                experiment_ids=[exp.experiment_id], output_format="list", max_results=1,
                filter_string=f"tags.mlflow.runName = '{self.run_name}'")
            if existing:
                run = mlflow.start_run(run_id=existing[0].info.run_id)
            else:
                run = mlflow.start_run(run_name=self.run_name)
            self._mlflow = mlflow
            self.run_id = run.info.run_id
        except Exception as exc:
            self._warn("start_run", exc)
            return None
        return self.run_id

    def _safe(self, key: str, value: Any) -> bool:
        if _SECRET_NAME.search(key):
            return False
        text = str(value)
        return not any(s and s in text for s in self._secrets)

    def log_params(self, params: dict[str, Any]) -> None:
        if not (self.enabled and self.start()) or self._mlflow is None:
            return
        clean = {str(k): str(v)[:_MAX_PARAM_LEN] for k, v in _flatten(params).items() if self._safe(str(k), v)}
        for key, value in clean.items():  # one by one: a param logged by an earlier attempt stays
            try:
                self._mlflow.log_param(key, value)
            except Exception as exc:
                self._warn("log_param", exc)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if not (self.enabled and self.start()) or self._mlflow is None:
            return
        clean = {_metric_key(k): float(v) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if not clean:
            return
        try:
            self._mlflow.log_metrics(clean, step=step)
        except Exception as exc:
            self._warn("log_metrics", exc)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        if not (self.enabled and self.start()) or self._mlflow is None:
            return
        try:
            self._mlflow.log_artifact(path, artifact_path)
        except Exception as exc:
            self._warn("log_artifact", exc)

    def end(self, status: str = "FINISHED") -> None:
        if self._mlflow is None or not self.run_id:
            return
        try:
            self._mlflow.end_run(status=status)
        except Exception as exc:
            self._warn("end_run", exc)
        self._mlflow = None


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
