"""Live progress of a job: an epoch bar with the latest loss and mAP, new events as they come."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ray_app.client import Client
from ray_app.jobs.api_models import JobView
SHOWN = ("loss", "train_loss", "box_loss", "val_loss", "mAP50", "metrics/mAP50(B)", "top1", "accuracy")


def summary(metrics: dict[str, Any]) -> str:
    parts = [f"{k}={v:.4g}" for k, v in metrics.items() if k in SHOWN and isinstance(v, (int, float))]
    return " ".join(parts[:4])


def watch(client: Client, job_id: str, console: Console) -> JobView:
    """Follows the job's stream (GET /v1/jobs/{id}/stream, no log lines) until it ends."""
    job = client.get_job(job_id)
    with Progress(TextColumn("[bold]{task.fields[state]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("epochs"), TextColumn("{task.fields[metrics]}"), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("train", total=job.epochs, state=job.state.value, metrics="")
        for message in client.stream(job_id, logs=False):
            if message.kind == "event":
                event = message.data
                if event.event_type not in ("trainer_process",):
                    progress.console.print(f"  [dim]{event.event_type}[/dim] {event.message}")
                continue
            job = message.job
            progress.update(task, completed=job.epoch or 0, total=job.total_epochs or job.epochs,
                            state=job.state.value, metrics=summary(job.latest_metrics))
    return job
