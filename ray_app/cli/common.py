"""What every `vtp` command shares: the consoles, the exit codes, the API options (--url,
--token, --json) and how a command reaches the API and prints its answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from pydantic import BaseModel

from ray_app.client import APIError, Client, ClientConfig

console = Console()
err = Console(stderr=True)

EXIT_JOB_FAILED = 1
EXIT_API_ERROR = 3

ApiPort = Annotated[int, typer.Option(help="API port on 127.0.0.1", envvar="VTP_HTTP_PORT")]
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", envvar="VTP_DATA_DIR", help="platform data directory")]
Url = Annotated[Optional[str], typer.Option("--url", envvar="VTP_API_URL", help="API base URL "
                                            "(default: the platform `vtp up` runs on this machine)")]
Token = Annotated[Optional[str], typer.Option("--token", envvar="VTP_API_TOKEN", show_default=False,
                                              help="API token (default: the local platform's)")]
AsJson = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def api_client(url: str | None, token: str | None = None) -> Client:
    try:
        return Client(config=ClientConfig.resolve(url, token))
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def plain(data: Any) -> Any:
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    if isinstance(data, list):
        return [plain(d) for d in data]
    return data


def emit(data: Any, as_json: bool, render) -> None:
    if as_json:
        console.print_json(json.dumps(plain(data), default=str))
    else:
        render(data)


def call_api(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except APIError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_API_ERROR) from None
