"""`vtp`: run the single-machine platform and drive jobs over the HTTP API.

Exit codes scripts can rely on: 0 success; 1 the watched job (or sweep) ended FAILED or CANCELLED;
2 bad usage, or settings the platform refuses (named, with the reason); 3 the API refused the request
or could not be reached.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table


from ray_app.client import Client
from ray_app.config import Settings
from ray_app.jobs.api_models import JobView, LogLine
from ray_app.jobs.states import JobState
from ray_app.scheduling import priority as levels

from ray_app.cli.common import (
    EXIT_API_ERROR,
    EXIT_JOB_FAILED,
    ApiPort,
    AsJson,
    DataDir,
    Token,
    Url,
    call_api,
    api_client,
    emit,
    console,
    err,
)
from ray_app.cli.datasets import datasets_app
from ray_app.cli.exports import register as register_exports
from ray_app.cli.queue import register as register_queue
from ray_app.cli.sweeps import sweeps_app
from ray_app.cli.teams import register as register_teams

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
jobs_app = typer.Typer(no_args_is_help=True, help="Submit and follow training jobs.")
trainers_app = typer.Typer(no_args_is_help=True, help="The registered trainers and their environments.")
app.add_typer(jobs_app, name="jobs")
app.add_typer(trainers_app, name="trainers")
app.add_typer(datasets_app, name="datasets")
app.add_typer(sweeps_app, name="sweeps")

# ---------------------------------------------------------------------------- platform


@app.command()
def up(data_dir: DataDir = None, port: ApiPort = 8000) -> None:
    """Start the single-machine platform (Ray head, S3, Serve API on 127.0.0.1)."""
    from ray_app.local.platform import LocalPlatform

    local = LocalPlatform(data_dir, http_port=port, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    local.up()
    console.print(f"[green]platform up[/green]\n  console    {local.api_url}/\n"
                  f"  API        {local.api_url}   (docs: {local.api_url}/docs)\n"
                  f"  dashboard  {local.dashboard_url}\n  data       {local.data_dir}\n"
                  f"  API token  {local.settings.api_token_file}\n  stop with  vtp down")


@app.command()
def demo(
    data_dir: DataDir = None,
    port: ApiPort = 8000,
    epochs: Annotated[int, typer.Option(help="training epochs")] = 25,
) -> None:
    """The whole flow on this machine: platform up, sample dataset, a YOLO job watched live."""
    from ray_app.local.demo import run_demo

    job = run_demo(data_dir, port, epochs, console)
    if job.state != JobState.SUCCEEDED:
        raise typer.Exit(EXIT_JOB_FAILED)


@app.command()
def down(data_dir: DataDir = None) -> None:
    """Stop every process of the single-machine platform; the data stays for the next `up`."""
    from ray_app.local.platform import LocalPlatform

    stopped = LocalPlatform(data_dir).down()
    console.print(f"stopped {stopped} processes")


@app.command()
def deploy(port: Annotated[int, typer.Option(help="API port (Serve HTTP proxy)", envvar="VTP_HTTP_PORT")] = 8000,
           address: Annotated[Optional[str], typer.Option(help="Ray address; default: this job's cluster")] = None) -> None:
    """Deploy the API onto a running Ray cluster (e.g. inside `ray job submit`), with the VTP_*
    settings of the environment."""
    from ray_app.deploy import deploy_platform

    settings = Settings.from_env({"VTP_HTTP_PORT": str(port)})  # the environment, read once here
    settings.check_production()
    url = deploy_platform(settings, port, address=address)
    console.print(f"platform deployed: {url} (docs: {url}/docs)")


@app.command()
def status(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Where the platform listens and whether it is healthy."""
    from ray_app.local.platform import LocalPlatform

    info = LocalPlatform(data_dir).status()
    emit(info, as_json, lambda d: console.print("\n".join(f"{k:14} {v}" for k, v in d.items())))
    if not info["health"]:
        raise typer.Exit(EXIT_API_ERROR)


# ---------------------------------------------------------------------------- trainers


@trainers_app.command("list")
def trainers_list(as_json: AsJson = False) -> None:
    """Trainers found in the trainer paths (VTP_TRAINER_PATHS), with tasks, models, resources."""
    from ray_app.runtime.registry import TrainerRegistry

    registry = TrainerRegistry(Settings().trainer_paths)
    data = [m.model_dump(mode="json") | {"folder": str(m.folder)} for m in registry.trainers.values()]

    def render(items: list[dict[str, Any]]) -> None:
        table = Table("name", "tasks", "models", "env", "folder")
        for t in items:
            table.add_row(t["name"], ", ".join(t["task_types"]), ", ".join(t["models"]), t["env"], t["folder"])
        console.print(table)
        for problem in registry.problems:
            err.print(f"[yellow]skipped:[/yellow] {problem}")

    emit(data, as_json, render)


@trainers_app.command("build-env")
def trainers_build_env(name: str, data_dir: DataDir = None) -> None:
    """Build (or reuse) the trainer's own virtualenv, used through Ray's py_executable."""
    from ray_app.runtime import venvs
    from ray_app.runtime.registry import TrainerRegistry, UnknownTrainer

    overrides: dict[str, Any] = {"data_dir": data_dir} if data_dir else {}
    settings = Settings(**overrides)
    try:
        manifest = TrainerRegistry(settings.trainer_paths).get(name)
    except UnknownTrainer as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    path = venvs.build(settings.venvs_dir, manifest, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    console.print(f"{name}: {venvs.python_of(path)}")


# ---------------------------------------------------------------------------- jobs


@jobs_app.command("submit")
def jobs_submit(
    framework: Annotated[str, typer.Option(help="trainer, e.g. ultralytics, timm")],
    model: Annotated[str, typer.Option("--model", help="model name, e.g. yolo11n")],
    dataset: Annotated[str, typer.Option("--dataset", help="dataset id")],
    task_type: Annotated[str, typer.Option("--task-type")] = "object_detection",
    epochs: int = 10,
    batch_size: int = 16,
    learning_rate: float = 0.01,
    image_size: int = 640,
    project: Annotated[str, typer.Option("--project")] = "default",
    workers: Annotated[int, typer.Option(help="workers (a gang placed all or nothing; the resources "
                                         "below are per worker)")] = 1,
    placement_strategy: Annotated[str, typer.Option(help="PACK (few nodes) or SPREAD (many)")] = "PACK",
    num_gpus: Annotated[float, typer.Option(help="GPUs per worker")] = 0,
    num_cpus: Annotated[Optional[float], typer.Option(help="CPUs per worker (default: the trainer's)")] = None,
    memory_mb: Annotated[Optional[int], typer.Option(help="memory per worker, MiB")] = None,
    max_attempts: Optional[int] = None,
    priority: Annotated[Optional[str], typer.Option(help="its place in the queue, higher first: 0-100 or low (20), "
                                                    "normal (50), high (80); default: normal")] = None,
    config: Annotated[str, typer.Option(help="JSON object of framework arguments")] = "{}",
    advanced_config: Annotated[str, typer.Option(help="JSON object")] = "{}",
    watch_job: Annotated[bool, typer.Option("--watch", help="follow until the job ends")] = False,
    dataset_version: Annotated[Optional[str], typer.Option(help="a version of an uploaded dataset "
                                                           "(hash or prefix); default: its newest valid one")] = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Submit a training job."""
    try:
        cfg, adv = json.loads(config), json.loads(advanced_config)
    except json.JSONDecodeError as exc:
        err.print(f"[red]error:[/red] --config/--advanced-config must be JSON: {exc}")
        raise typer.Exit(2) from None
    try:
        level = None if priority is None else levels.parse(priority)  # the range is the API's to check
    except ValueError as exc:
        err.print(f"[red]error:[/red] --priority: {exc}")
        raise typer.Exit(2) from None
    body = {"framework": framework, "model_name": model, "dataset_id": dataset, "task_type": task_type,
            "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
            "image_size": image_size, "project_id": project, "num_gpus": num_gpus, "config": cfg,
            "advanced_config": adv, "workers": workers, "placement_strategy": placement_strategy.upper()}
    for name, value in (("num_cpus", num_cpus), ("memory_mb", memory_mb), ("max_attempts", max_attempts),
                        ("dataset_version", dataset_version), ("priority", level)):
        if value is not None:
            body[name] = value
    client = api_client(url, token)
    job = call_api(client.submit, body)
    version = f", dataset version {job.dataset_version[:12]}" if job.dataset_version else ""
    emit(job, as_json, lambda j: console.print(f"job [bold]{j.id}[/bold] {j.state} (trace {j.trace_id}{version})"))
    if watch_job:
        _finish_watch(client, job.id, as_json)


@jobs_app.command("list")
def jobs_list(state: Optional[str] = None, project: Optional[str] = None, limit: int = 50,
              id_prefix: Annotated[Optional[str], typer.Option(help="only jobs whose id starts with this")] = None,
              sweep: Annotated[Optional[str], typer.Option("--sweep", help="only this sweep's trials")] = None,
              url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """List jobs, newest first."""
    page = call_api(api_client(url, token).list_jobs, state=state, project_id=project, limit=limit,
                    id_prefix=id_prefix, sweep_id=sweep)

    def render(p) -> None:
        table = Table("id", "state", "framework", "model", "dataset", "epoch", "progress", "created")
        for j in p.items:
            table.add_row(j.id, j.state, j.framework, j.model_name, j.dataset_id,
                          f"{j.epoch or 0}/{j.epochs}", f"{j.progress:.0f}%", j.created_at.isoformat()[:19])
        console.print(table)

    emit(page, as_json, render)


@jobs_app.command("get")
def jobs_get(job_id: str, url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """One job: state, progress, metrics, error, artifacts."""
    job = call_api(api_client(url, token).get_job, job_id)

    def render(view: JobView) -> None:
        j = view.model_dump(mode="json")
        for k, v in j.items():
            if k not in ("config", "advanced_config", "attempts", "ranks"):
                console.print(f"{k:22} {v}")
        if j.get("ranks"):  # where the current attempt's ranks run
            ranks = Table("rank", "node", "pid", title=f"ranks ({j['workers']} worker(s), {j['placement_strategy']})")
            for r in j["ranks"]:
                ranks.add_row(str(r["rank"]), (r["node_id"] or "")[:12], str(r["pid"] or ""))
            console.print(ranks)
        if j.get("attempts"):
            table = Table("attempt", "outcome", "started", "ended", "node", "exit", "error type", "reason",
                          "resumed from", title="attempts")
            for a in j["attempts"]:
                exit_ = a["signal"] or ("" if a["exit_code"] is None else str(a["exit_code"]))
                table.add_row(str(a["attempt"]), a["outcome"], a["started_at"] or "", a["ended_at"],
                              (a["node_id"] or "")[:12], exit_, a["error_type"] or "", a["reason"] or "",
                              a["resume_from"] or "")
            console.print(table)

    emit(job, as_json, render)


@jobs_app.command("watch")
def jobs_watch(job_id: str, url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Live progress bar and metrics until the job ends (exit 1 if it did not succeed)."""
    _finish_watch(api_client(url, token), job_id, as_json)


def _finish_watch(client: Client, job_id: str, as_json: bool) -> None:
    from ray_app.cli.watch import watch

    job = call_api(watch, client, job_id, err if as_json else console)
    metrics = call_api(client.metrics, job_id).items

    def render(j: JobView) -> None:
        columns = sorted({k for m in metrics for k in m.metrics})[:8]
        table = Table("attempt", "epoch", *columns)
        for m in metrics:
            values = [m.metrics.get(c) for c in columns]
            table.add_row(str(m.attempt), str(m.epoch),
                          *[f"{v:.4g}" if isinstance(v, (int, float)) else "" for v in values])
        console.print(table)
        console.print(f"[bold]{j.state}[/bold] final metrics: {j.final_metrics}")
        if j.error:
            console.print(f"[red]{j.error_type}: {j.error}[/red]")
        for name, uri in j.artifacts.items():
            console.print(f"  {name:18} {uri}")
        if j.mlflow_run_id:
            console.print(f"  mlflow run         {j.mlflow_run_id}")
        console.print(f"  files              vtp jobs artifacts {j.id}")

    emit(job, as_json, render)
    if job.state != JobState.SUCCEEDED:
        raise typer.Exit(EXIT_JOB_FAILED)


@jobs_app.command("logs")
def jobs_logs(job_id: str, follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
              rank: Annotated[Optional[int], typer.Option(help="only this rank's lines (a job of several "
                                                          "workers); default: every rank's, tagged")] = None,
              url: Url = None, token: Token = None) -> None:
    """The trainer's output; --follow keeps printing until the job ends."""
    client = api_client(url, token)
    if follow:  # the job's stream: each line as it is stored, until the job ends
        call_api(_follow, client, job_id, rank)
        return
    after = 0
    while True:
        page = call_api(client.logs, job_id, after, None, rank)
        for line in page.items:
            sys.stdout.write(_tagged(line) + "\n")
        sys.stdout.flush()
        if page.next_after is None:
            return
        after = page.next_after


def _tagged(line: LogLine) -> str:
    """A rank's line says whose it is (rank 0's, and a single process's, as they are)."""
    return f"[rank {line.rank}] {line.line}" if line.rank else line.line


def _follow(client: Client, job_id: str, rank: int | None = None) -> None:
    for message in client.stream(job_id, events=False):
        if message.kind == "log" and (rank is None or message.data.rank == rank):
            sys.stdout.write(_tagged(message.data) + "\n")
            sys.stdout.flush()


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Ask a job to stop (idempotent)."""
    job = call_api(api_client(url, token).cancel, job_id)
    emit(job, as_json, lambda j: console.print(f"job {j.id}: cancel requested ({j.state})"))


@jobs_app.command("artifacts")
def jobs_artifacts(
    job_id: str,
    name: Annotated[Optional[str], typer.Argument(help="a file to download (as listed); none: list them")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="file or folder to save to "
                                                   "(default: the current folder)")] = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """List a job's checkpoints, plots and files, or download one (with the API token alone)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    client = api_client(url, token)
    page = call_api(client.artifacts, job_id)
    if name is None:
        def render(p) -> None:
            table = Table("name", "kind", "size", "modified")
            for a in p.items:
                table.add_row(a.name, a.kind, str(a.size_bytes), a.last_modified.isoformat()[:19] if a.last_modified else "")
            console.print(table)

        emit(page, as_json, render)
        return
    size = next((a.size_bytes for a in page.items if a.name == name), None)
    if size is None:
        err.print(f"[red]error:[/red] job {job_id} has no artifact {name!r}; "
                  f"it has: {', '.join(a.name for a in page.items) or 'none'}")
        raise typer.Exit(EXIT_API_ERROR)
    out = err if as_json else console
    with Progress(BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=out, transient=as_json) as progress:
        task = progress.add_task("download", total=size)
        path = call_api(client.download_artifact, job_id, name, output or Path.cwd(), lambda n: progress.advance(task, n))
    emit({"name": name, "path": str(path), "size_bytes": path.stat().st_size}, as_json,
          lambda d: console.print(f"saved {d['path']} ({d['size_bytes']} bytes)"))


@jobs_app.command("predict")
def jobs_predict(
    job_id: str,
    images: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="image files")],
    conf: float = 0.25,
    top_k: int = 5,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Run the finished job's best checkpoint on images."""
    result = call_api(api_client(url, token).predict, job_id, list(images), conf, top_k)

    def render(r) -> None:
        for pred in r.predictions:
            console.print(f"[bold]{pred.get('image')}[/bold]")
            for box in pred.get("boxes", []):
                console.print(f"  {box['class_name']:12} {box['confidence']:.2f}  xyxy={[round(v, 1) for v in box['xyxy']]}")
            for cls in pred.get("top_k", []):
                console.print(f"  {cls['class_name']:12} {cls['probability']:.3f}")
        console.print(f"[dim]{r.checkpoint} in {r.inference_seconds}s[/dim]")

    emit(result, as_json, render)


register_exports(jobs_app)  # vtp jobs export (cli/exports.py)
register_teams(app)  # vtp whoami, tokens, admin users, projects, audit (cli/teams.py)
register_queue(app)  # vtp queue (cli/queue.py)


def main() -> None:
    from pydantic import ValidationError

    from ray_app.config import MissingProductionSetting

    try:
        app()
    except (ValidationError, MissingProductionSetting) as exc:
        # the platform's settings refused at start (VTP_* variables that contradict each other,
        # or production secrets missing): the reason, not a traceback
        reasons = [e["msg"].removeprefix("Value error, ") for e in exc.errors()] if isinstance(exc, ValidationError) \
            else [str(exc)]
        for reason in reasons:
            err.print(f"[red]settings refused:[/red] {reason}")
        sys.exit(2)

