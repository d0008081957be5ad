"""The MLflow process of a trainer: MLflow's calls run here, not in the training process.

MLflow's import and its sqlite store's set-up are seconds of pure Python; on a thread of the
trainer they held the GIL against the training loop (py-spy: the training thread got ~55 % of its
samples while MLflow started, bench/README.md). In a process of their own they use another CPU.

Started by ``mlflow_helpers.MlflowTracker`` with the trainer's interpreter (``python -I``: the
SDK's folder is not on this process's path). It imports MLflow at once, so the import overlaps the
trainer's own start-up, then answers one JSON line per request on stdout, in order:

    {"op": "start", "tracking_uri": ..., "experiment": ..., "run_name": ...} -> {"run_id": ...}
    {"op": "call", "method": "log_metrics", "args": [...], "kwargs": {...}}   -> {}
    any failure                                                               -> {"error": "Type: message"}

It ends when stdin closes (the trainer ended or closed it). Standard library only, besides MLflow.
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
_ALLOWED = {"log_metrics", "log_param", "log_artifact", "end_run"}


def main() -> None:
    out = sys.stdout
    sys.stdout = sys.stderr  # anything MLflow prints must not corrupt the replies
    try:
        import mlflow
    except Exception as exc:  # reported with the first request
        mlflow, import_error = None, exc  # type: ignore[assignment]  # the module, or None when it failed to import
    for line in sys.stdin:
        try:
            request = json.loads(line)
            if mlflow is None:
                raise import_error
            reply = handle(mlflow, request)
        except Exception as exc:  # noqa: BLE001 - every failure is the trainer's to log, once
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def handle(mlflow, request: dict) -> dict:
    if request["op"] == "start":
        mlflow.set_tracking_uri(request["tracking_uri"])
        exp = mlflow.set_experiment(request["experiment"])
        existing = mlflow.search_runs(
            experiment_ids=[exp.experiment_id], output_format="list", max_results=1,
            filter_string=f"tags.mlflow.runName = '{request['run_name']}'")
        if existing:  # a later attempt of the same job continues its run
            run = mlflow.start_run(run_id=existing[0].info.run_id)
        else:
            run = mlflow.start_run(run_name=request["run_name"])
        if request.get("tags"):
            mlflow.set_tags(request["tags"])
        return {"run_id": run.info.run_id}
    if request["op"] == "call" and request["method"] in _ALLOWED:
        getattr(mlflow, request["method"])(*request.get("args", []), **request.get("kwargs", {}))
        return {}
    raise ValueError(f"unknown request {request.get('op')!r}/{request.get('method')!r}")


if __name__ == "__main__":
    main()
