"""`vtp jobs export`: export a finished job's model (ONNX, TorchScript...) and follow the export
until its files are in the job's artifacts."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ray_app.cli.common import EXIT_JOB_FAILED, AsJson, Token, Url, api_client, call_api, console, emit, err
from ray_app.jobs.export_models import ExportView


def register(jobs_app: typer.Typer) -> None:
    @jobs_app.command("export")
    def jobs_export(
        job_id: str,
        format: Annotated[str, typer.Option("--format", "-f", help="a format the job's trainer lists, "
                                            "e.g. onnx or torchscript")],
        image_size: Annotated[Optional[int], typer.Option(help="input size; default: the job's")] = None,
        half: Annotated[bool, typer.Option("--half", help="FP16 weights")] = False,
        dynamic: Annotated[bool, typer.Option("--dynamic", help="dynamic batch (and image) axes")] = False,
        timeout: Annotated[float, typer.Option(help="seconds to wait for the export")] = 1800,
        url: Url = None,
        token: Token = None,
        as_json: AsJson = False,
    ) -> None:
        """Export the finished job's best checkpoint and wait for its files."""
        client = api_client(url, token)
        options = {"image_size": image_size, "half": half, "dynamic": dynamic}
        view = call_api(client.export, job_id, format, **{k: v for k, v in options.items() if v is not None})

        def progress(v: ExportView) -> None:
            if not as_json:
                console.print(f"export {v.id} ({v.format}): {v.state}")

        try:  # a line per state it passes through: pending, running, succeeded
            view = call_api(client.wait_export, job_id, view.id, timeout=timeout, interval=1.0, on_change=progress)
        except TimeoutError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(EXIT_JOB_FAILED) from None

        def render(v: ExportView) -> None:
            if v.state != "succeeded":
                err.print(f"[red]export failed:[/red] {v.error}")
                return
            for f in v.files:
                console.print(f"  {f.name}  {f.size_bytes} bytes  {f.uri}", soft_wrap=True)
            console.print("download with")
            for f in v.files:
                console.print(f"  vtp jobs artifacts {job_id} {f.name}", soft_wrap=True)

        emit(view, as_json, render)
        if view.state != "succeeded":
            raise typer.Exit(EXIT_JOB_FAILED)
