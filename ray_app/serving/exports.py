"""A finished job's model exported to ONNX, TorchScript... by its trainer's own `export.py`.

A trainer that can export names the entrypoint and the formats in its manifest
(`entrypoints.export`, `export_formats`); its `export.py` has

    def export(checkpoint_path: str, output_dir: str, format: str, image_size: int,
               half: bool = False, dynamic: bool = False, device: str = "cpu") -> list[str]

POST /v1/jobs/{id}/exports records a PENDING export through the store and starts `run_export`, a
Ray task in the trainer's runtime_env (its folder, its venv: export.py runs where train.py ran),
fire and forget. The task marks the export RUNNING, fetches the job's best checkpoint, calls
`export()` into a temporary folder, uploads each file to
`artifacts/job-{id}/exports/{export id}/<file>` (so the job's artifact routes list and serve
them), and records SUCCEEDED with the files, or FAILED with the error: an exception is recorded,
never lost. Ray retries the task once if its worker dies. The storage keys reach the task as an
argument (in `settings`), never through the runtime_env, which the dashboard shows.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import ray
from sdk.contract import artifacts_prefix

from ray_app.config import Settings
from ray_app.runtime import contract_env, runtime_env
from ray_app.runtime.registry import TrainerManifest
from ray_app.serving.trainer_files import fetch_checkpoint, load_entrypoint

log = logging.getLogger("ray_app.serving")

# formats whose export needs a GPU (TensorRT engines); none of the bundled trainers' formats do
GPU_FORMATS = frozenset({"engine"})


def export_folder(export_id: str) -> str:
    """Where an export's files lie among the job's artifacts (artifact names start with it)."""
    return f"exports/{export_id}/"


def export_files(settings: Settings, job_id: str, export_id: str, checkpoint: str, entrypoint: str,
                 fmt: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the trainer's export() and upload what it wrote; the files as ExportView shows them."""
    from ray_app.datasets.uploads import Storage

    storage = Storage(settings)
    module = load_entrypoint(entrypoint, "trainer_export")
    with tempfile.TemporaryDirectory(prefix="vtp-export-") as tmp:
        local = fetch_checkpoint(storage.client, checkpoint, Path(tmp))
        out_dir = Path(tmp) / "out"
        out_dir.mkdir()
        written = module.export(str(local), str(out_dir), fmt, int(options["image_size"]),
                                half=bool(options.get("half")), dynamic=bool(options.get("dynamic")),
                                device="0" if ray.get_gpu_ids() else "cpu")
        paths = [Path(p) for p in written or []]
        if not paths:
            raise RuntimeError(f"{entrypoint} wrote no file for format {fmt!r}")
        files = []
        for path in paths:
            if not path.is_file():
                raise RuntimeError(f"{entrypoint} reported {path}, which is not a file")
            name = export_folder(export_id) + path.name
            key = artifacts_prefix(job_id) + name
            storage.client.upload_file(str(path), storage.bucket, key)
            files.append({"name": name, "size_bytes": path.stat().st_size, "uri": storage.uri(key)})
    return files


def _run(settings: Settings, job_id: str, export_id: str, checkpoint: str, entrypoint: str, fmt: str,
         options: dict[str, Any]) -> str:
    from ray_app.store.client import StoreClient

    store = StoreClient(settings)
    asyncio.run(store.export_state(job_id, export_id, "running"))
    started = time.monotonic()
    try:
        files = export_files(settings, job_id, export_id, checkpoint, entrypoint, fmt, options)
    except BaseException as exc:  # recorded on the export, never lost; SystemExit from a trainer too
        log.error("export %s of job %s failed:\n%s", export_id, job_id, traceback.format_exc())
        error = f"{type(exc).__name__}: {exc}"[:4000]
        asyncio.run(store.export_state(job_id, export_id, "failed", error=error))
        if isinstance(exc, KeyboardInterrupt):
            raise
        return "failed"
    log.info("export %s of job %s to %s: %d file(s) in %.1fs", export_id, job_id, fmt, len(files),
             time.monotonic() - started)
    asyncio.run(store.export_state(job_id, export_id, "succeeded", files=files))
    return "succeeded"


# retried once if its worker dies (max_retries); an exception inside is recorded, not retried
run_export = ray.remote(num_cpus=1, max_retries=1)(_run)


def task_runtime_env(settings: Settings, manifest: TrainerManifest) -> dict[str, Any]:
    """The trainer's runtime_env with the offline switches and S3's endpoint (no keys). Blocking
    (it may build the trainer's venv, and uploads its folder): call it from a thread."""
    env = contract_env.storage(settings)
    public = {**contract_env.OFFLINE_ENV, **env.public, "STORAGE_TYPE": settings.storage_type,
              "STORAGE_BUCKET": settings.s3_bucket, "NUM_CPUS": "1",
              # a trainer's scratch (Ultralytics' config dir): under the platform's data dir
              "WORK_DIR": str(settings.data_dir / "work" / "exports")}
    return runtime_env.prepare(settings, manifest, public)


def start_export(settings: Settings, manifest: TrainerManifest, job_id: str, export_id: str, checkpoint: str,
                 fmt: str, options: dict[str, Any]) -> None:
    """Fire and forget: the task records its progress and outcome in the store."""
    assert manifest.entrypoints.export
    renv = task_runtime_env(settings, manifest)
    run_export.options(
        name=f"export-{job_id}-{export_id}", runtime_env=renv, num_gpus=1 if fmt in GPU_FORMATS else 0,
    ).remote(settings, job_id, export_id, checkpoint, manifest.entrypoints.export, fmt, options)
