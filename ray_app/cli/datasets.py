"""`vtp datasets`: upload, list, inspect and delete datasets through the API (no S3 keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table


from ray_app.cli.common import EXIT_JOB_FAILED, AsJson, Token, Url, call_api, api_client, emit, plain, console, err

datasets_app = typer.Typer(no_args_is_help=True, help="Upload, list and delete datasets (through the API: "
                           "no S3 keys needed).")


@datasets_app.command("upload")
def datasets_upload(
    path: Annotated[Path, typer.Argument(exists=True, help="a folder or an archive (.zip, .tar, .tar.gz): "
                                         "DICE, YOLO or ImageFolder")],
    dataset_id: Annotated[str, typer.Option("--id", help="the dataset's name (created on its first upload)")],
    description: Annotated[str, typer.Option(help="what it holds")] = "",
    project: Annotated[Optional[str], typer.Option("--project", help="the project a new dataset goes to "
                                                   "(default: default); a new version goes to its dataset's")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=32, help="parts sent at once")] = 4,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="wait for validation and show its report")] = True,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Upload a dataset as a new version (its content hash): straight to storage in parallel
    parts; run it again after an interruption and it sends only the parts that are missing.
    Exit 1 when validation finds problems."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    client = api_client(url, token)
    out = err if as_json else console
    with Progress(BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=out, transient=as_json) as progress:
        task = progress.add_task("upload", total=None)

        def started(plan) -> None:
            progress.update(task, total=plan.total_bytes)
            resumed = f", resuming: {plan.parts_done} of {plan.parts_total} parts already stored" if plan.parts_done else ""
            progress.console.print(f"[dim]{dataset_id} version {plan.version[:12]}: {plan.total_bytes} bytes in "
                                   f"{plan.parts_total} part(s){resumed}[/dim]")

        try:
            result = call_api(client.upload_dataset, path, dataset_id, description, concurrency,
                              lambda n: progress.advance(task, n), started, project_id=project)
        except ValueError as exc:  # not an archive, an empty folder
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
    if not result.created:
        out.print(f"this content is already version {result.version[:12]} of {dataset_id} ({result.state}): "
                  "nothing sent")
    else:
        out.print(f"uploaded {result.bytes_sent} bytes in {result.parts_sent} part(s)"
                  + (f", {result.parts_skipped} part(s) were already stored" if result.parts_skipped else ""))
    summary = {"dataset_id": dataset_id, "version": result.version, "created": result.created,
               "parts_total": result.parts_total, "parts_sent": result.parts_sent,
               "parts_skipped": result.parts_skipped, "bytes_sent": result.bytes_sent}
    if not wait:
        emit(summary | {"state": result.state}, as_json, lambda _: None)
        return
    version = call_api(client.wait_version, dataset_id, result.version)
    emit(summary | {"state": version.state, "report": plain(version.report)}, as_json,
          lambda _: _render_version(version))
    if version.state != "valid":
        raise typer.Exit(EXIT_JOB_FAILED)


def _render_version(v) -> None:
    color = {"valid": "green", "invalid": "red"}.get(v.state, "yellow")
    console.print(f"version [bold]{v.version[:12]}[/bold] [{color}]{v.state}[/{color}]  {v.filename}  "
                  f"{v.size_bytes} bytes  {v.uri}")
    if v.format:
        splits = ", ".join(f"{k} {n}" for k, n in v.splits.items())
        console.print(f"  {v.format}, {v.task_type}, {v.images} images ({splits}), classes: {', '.join(v.classes)}")
    if v.report and v.report.problems_total:
        table = Table("file", "problem", title=f"{v.report.problems_total} problem(s)")
        for p in v.report.problems:
            table.add_row(p.file or "", p.problem)
        console.print(table)


@datasets_app.command("list")
def datasets_list(url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Datasets with their newest version, its state and counts."""
    client = api_client(url, token)
    items = call_api(lambda: list(client.iter_datasets()))

    def render(datasets: list) -> None:
        table = Table("dataset", "versions", "newest", "state", "format", "task", "images", "classes")
        for d in datasets:
            v = d.versions[0] if d.versions else None
            table.add_row(d.id, str(len(d.versions)), v.version[:12] if v else "", v.state if v else "",
                          (v.format or "") if v else "", (v.task_type or "") if v else "",
                          str(v.images) if v else "", ", ".join(v.classes)[:40] if v else "")
        console.print(table)

    emit({"items": plain(items)} if as_json else items, as_json, render)


@datasets_app.command("get")
def datasets_get(dataset_id: str, version: Annotated[Optional[str], typer.Option(help="one version (hash or prefix)")] = None,
                 url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """A dataset's versions with their validation reports."""
    client = api_client(url, token)
    if version:
        v = call_api(client.get_version, dataset_id, version)
        emit(v, as_json, _render_version)
        return
    d = call_api(client.get_dataset, dataset_id)

    def render(d) -> None:
        console.print(f"[bold]{d.id}[/bold]  {d.description}  project: {d.project_id}  "
                      f"latest valid: {(d.latest_valid_version or 'none')[:12]}")
        for v in d.versions:
            _render_version(v)

    emit(d, as_json, render)


@datasets_app.command("rm")
def datasets_rm(dataset_id: str, url: Url = None, token: Token = None) -> None:
    """Delete a dataset and its stored versions (refused while a queued or running job uses it)."""
    call_api(api_client(url, token).delete_dataset, dataset_id)
    console.print(f"deleted dataset {dataset_id}")
