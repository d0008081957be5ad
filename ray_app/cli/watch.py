"""Live progress of a job: an epoch bar with the latest loss and mAP, new events as they come."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ray_app.client import Client
from ray_app.jobs.api_models import JobView
SHOWN = ("loss", "train_loss", "box_loss", "val_loss", "mAP50", "metrics/mAP50(B)", "top1", "accuracy")


def summary(metrics: dict[str, Any]) -> str:
    parts = [f"{k}={v:.4g}" for k, v in metrics.items() if k in SHOWN and isinstance(v, (int, float))]
    return " ".join(parts[:4])


def watch(client: Client, job_id: str, console: Console, interval: float = 1.0) -> JobView:
    job = client.get_job(job_id)
    after = 0
    with Progress(TextColumn("[bold]{task.fields[state]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("epochs"), TextColumn("{task.fields[metrics]}"), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("train", total=job.epochs, state=job.state.value, metrics="")
        while True:
            for event in client.events(job_id, after).items:
                after = event.seq
                if event.event_type not in ("trainer_process",):
                    progress.console.print(f"  [dim]{event.event_type}[/dim] {event.message}")
            job = client.get_job(job_id)
            progress.update(task, completed=job.epoch or 0, total=job.total_epochs or job.epochs,
                            state=job.state.value, metrics=summary(job.latest_metrics))
            if job.state.is_terminal:
                return job
            time.sleep(interval)
