"""`vtp demo` (`make demo`): from nothing to a trained detector on this machine.

Brings the platform up, generates a small DICE detection dataset (coloured shapes) and uploads
it through the API (validated on arrival, a version by content hash), submits an Ultralytics YOLO job, shows its progress live, and prints where everything is.
Idempotent: a second run reuses the running platform, the uploaded dataset and the trainer's
environment, and follows a demo job that is still running instead of starting another.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from ray_app.cli.watch import watch
from ray_app.client import Client
from ray_app.datasets import make_detection
from ray_app.jobs.api_models import JobView
from ray_app.jobs.states import JobState
from ray_app.local.platform import LocalPlatform
from ray_app.serving import mlflow_server

DATASET_ID = "demo-shapes"
PROJECT = "demo"


def ensure_dataset(platform: LocalPlatform, client: Client, console: Console) -> str:
    """The demo dataset as a valid uploaded version: uploaded through the API the first time
    (as a user would from any machine), found by its content hash after that."""
    folder = platform.data_dir / "demo" / DATASET_ID
    if not (folder / "annotations.json").exists():
        make_detection(folder, n_images=64, size=128, seed=0)
    result = client.upload_dataset(folder, DATASET_ID, "64 images of coloured shapes (vtp demo)")
    version = client.wait_version(DATASET_ID, result.version, timeout=300)
    if not result.created:
        console.print(f"[dim]dataset {DATASET_ID} already uploaded (version {version.version[:12]}, {version.state})[/dim]")
    else:
        console.print(f"dataset {DATASET_ID}: 64 images of coloured shapes uploaded as version "
                      f"{version.version[:12]}: {version.state}, {version.images} images, {version.splits}")
    if version.state != "valid":
        raise RuntimeError(f"the demo dataset is {version.state}: {version.report}")
    return DATASET_ID


def ensure_job(client: Client, epochs: int, console: Console) -> JobView:
    for state in (JobState.RUNNING, JobState.QUEUED, JobState.PENDING):
        running = client.list_jobs(project_id=PROJECT, state=state.value, limit=1).items
        if running:
            console.print(f"[dim]following demo job {running[0].id} ({state.value})[/dim]")
            return running[0]
    job = client.submit({
        "framework": "ultralytics", "task_type": "object_detection", "model_name": "yolo11n",
        "dataset_id": DATASET_ID, "project_id": PROJECT, "epochs": epochs, "batch_size": 16,
        "image_size": 128, "learning_rate": 0.01, "num_cpus": 2,
        # 64 images: one optimizer step per batch (nbs = batch) so it learns in a few epochs
        "config": {"nbs": 16, "seed": 0},
    })
    console.print(f"submitted job [bold]{job.id}[/bold] (yolo11n, {epochs} epochs, dataset version "
                  f"{(job.dataset_version or '')[:12]}, trace {job.trace_id})")
    return job


def run_demo(data_dir: Path | None, port: int, epochs: int, console: Console) -> JobView:
    platform = LocalPlatform(data_dir, http_port=port, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    platform.up()
    settings = platform.platform_settings()
    client = Client(platform.api_url, settings.resolved_api_tokens()[0])
    ensure_dataset(platform, client, console)
    submitted = ensure_job(client, epochs, console)
    console.print(f"watch it in the console   {platform.api_url}/#/jobs/{submitted.id}   "
                  f"(sign in with the token in {settings.api_token_file})")
    job = watch(client, submitted.id, console)
    console.print()
    console.print(f"[bold]{job.state}[/bold]  job {job.id}")
    if job.state == JobState.SUCCEEDED:
        for name, value in job.final_metrics.items():
            console.print(f"  {name:24} {value:.4g}" if isinstance(value, float) else f"  {name:24} {value}")
        console.print(f"  checkpoint (best)        {job.artifacts.get('best')}")
        console.print(f"  mlflow run               {job.mlflow_run_id}  (MLFLOW_TRACKING_URI="
                      f"{mlflow_server.tracking_uri(settings)} MLFLOW_TRACKING_TOKEN=<the token>)")
        console.print(f"  download best.pt         vtp jobs artifacts {job.id} best.pt")
    else:
        console.print(f"  [red]{job.error_type}: {job.error}[/red]")
    console.print(f"  console                  {platform.api_url}/   (token: {settings.api_token_file})")
    console.print(f"  API docs                 {platform.api_url}/docs")
    console.print(f"  Ray dashboard            {platform.dashboard_url}")
    console.print(f"  predict                  vtp jobs predict {job.id} IMAGE")
    console.print("  stop everything          vtp down   (or: make down; data stays in "
                  f"{platform.data_dir})")
    return job
