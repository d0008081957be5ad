"""`vtp sweeps`: start a hyperparameter sweep from a YAML file, follow its trials live, list,
inspect and cancel sweeps. Every trial is a job of the sweep's project (`vtp jobs list --sweep ID`).

A sweep file holds the body of POST /v1/sweeps:

    name: lr-search
    project_id: default
    job: {framework: ultralytics, task_type: object_detection, model_name: yolo11n,
          dataset_id: shapes, epochs: 10}
    space:
      learning_rate: {loguniform: [0.0001, 0.1]}
      batch_size: {choice: [8, 16]}
    metric: mAP50
    mode: max
    num_trials: 8
    max_concurrent: 2
    scheduler: {type: asha, grace_period: 2}
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Column, Table

from ray_app.cli.common import EXIT_JOB_FAILED, AsJson, Token, Url, api_client, call_api, console, emit, err
from ray_app.client import Client
from ray_app.sweeps.models import SweepPage, SweepState, SweepView, TrialView

POLL_S = 1.0

sweeps_app = typer.Typer(no_args_is_help=True, help="Hyperparameter sweeps: many trials of a job over a search "
                         "space, run by Ray Tune (every trial a job).")

STATUS_STYLE = {"succeeded": "green", "failed": "red", "running": "cyan", "stopped_early": "yellow",
                "cancelled": "magenta", "pending": "dim"}


# ---------------------------------------------------------------------------- formatting


def _number(value: float | str | None) -> float | None:
    """A metric as a number to compare (None for a missing one, or one that is not a number)."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return None if math.isnan(number) else number


def _metric(value: float | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _params(params: dict[str, Any], sep: str = " ") -> str:
    return sep.join(f"{k}={_value(v)}" for k, v in params.items())


def ranked(view: SweepView) -> list[TrialView]:
    """The trials best first by their best metric (the sweep's mode); those without one last, by trial."""
    sign = -1.0 if view.mode == "max" else 1.0

    def key(t: TrialView) -> tuple[int, float, int]:
        number = _number(t.best_metric)
        return (1, 0.0, t.trial) if number is None else (0, sign * number, t.trial)

    return sorted(view.trials, key=key)


def trials_table(view: SweepView, trials: list[TrialView], title: str | None = None) -> Table:
    """The trials (`trials`, in that order): the metric columns are the sweep's metric."""
    table = Table(Column("#", justify="right"), Column("job", no_wrap=True), Column("status", no_wrap=True),
                  Column("params", overflow="fold"), Column("epochs", justify="right"),
                  Column("last", justify="right", no_wrap=True), Column("best", justify="right", no_wrap=True),
                  title=title)
    for t in trials:
        style = STATUS_STYLE.get(t.status, "")
        status = f"[{style}]{t.status}[/{style}]" if style else t.status
        mark = " *" if view.best_job_id == t.job_id else ""
        table.add_row(str(t.trial), t.job_id + mark, status, escape(_params(t.params, "\n")), str(t.epochs_run),
                      _metric(t.last_metric), _metric(t.best_metric))
    return table


def _counts(view: SweepView) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in view.counts.items() if n)
    return f"{len(view.trials)}/{view.num_trials} started" + (f" ({counts})" if counts else "")


def live_table(view: SweepView) -> Table:
    """The live view of a sweep: its trials in the order they started."""
    title = (f"sweep {view.id} [bold]{view.state.value}[/bold]: {_counts(view)}; "
             f"{view.metric} ({view.mode}) best {_metric(view.best_metric) or '-'}")
    return trials_table(view, sorted(view.trials, key=lambda t: t.trial), title=title)


def print_summary(view: SweepView, out: Console) -> None:
    when = {k: getattr(view, k) for k in ("created_at", "started_at", "finished_at")}
    rows: list[tuple[str, Any]] = [
        ("id", f"[bold]{view.id}[/bold]"), ("name", escape(view.name)), ("project", view.project_id),
        ("state", f"[bold]{view.state.value}[/bold]"), ("search", view.search),
        ("metric", f"{view.metric} ({view.mode})"),
        ("scheduler", ", ".join(f"{k}={v}" for k, v in view.scheduler.items()) if view.scheduler else "none"),
        ("trials", _counts(view)), ("max concurrent", view.max_concurrent),
        ("space", escape(", ".join(f"{k}={v}" for k, v in view.space.items()))),
        ("best job", view.best_job_id or ""), ("best metric", _metric(view.best_metric)),
    ]
    if view.error:
        rows.append(("error", f"[red]{escape(view.error)}[/red]"))
    if view.cancelled_by:
        rows.append(("cancelled by", view.cancelled_by))
    if view.mlflow_parent_run_id:
        rows.append(("mlflow run", view.mlflow_parent_run_id))
    if view.registered_model is not None:
        rows.append(("registered model", escape(str(view.registered_model.model_dump(exclude_none=True)))))
    rows += [(k.removesuffix("_at"), v.isoformat(" ")[:19]) for k, v in when.items() if v is not None]
    for label, value in rows:
        out.print(f"{label:16} {value}")


def print_best(view: SweepView, out: Console) -> None:
    best = view.best
    if best is None:
        out.print(f"sweep {view.id} [bold]{view.state.value}[/bold]: no trial reported {view.metric}")
    else:
        out.print(f"sweep {view.id} [bold]{view.state.value}[/bold]; best trial {best.trial}: job "
                  f"[bold]{best.job_id}[/bold] {view.metric}={_metric(best.best_metric)} ({best.status})")
        out.print(f"  params  {escape(_params(best.params))}")
    if view.registered_model is not None:
        out.print(f"  registered as {escape(str(view.registered_model.model_dump(exclude_none=True)))}")
    if view.error:
        out.print(f"[red]{escape(view.error)}[/red]")


# ---------------------------------------------------------------------------- watching


def follow(client: Client, sweep_id: str, out: Console, interval: float = POLL_S) -> SweepView:
    """Polls the sweep, its trials as a live table, until it is final."""
    view = client.get_sweep(sweep_id)
    with Live(live_table(view), console=out, refresh_per_second=4, auto_refresh=False) as live:
        while not view.state.is_terminal:
            time.sleep(interval)
            view = client.get_sweep(sweep_id)
            live.update(live_table(view), refresh=True)
    return view


def _finish_watch(client: Client, sweep_id: str, as_json: bool) -> None:
    out = err if as_json else console
    try:
        view = call_api(follow, client, sweep_id, out, POLL_S)
    except KeyboardInterrupt:
        err.print(f"stopped watching; the sweep goes on (vtp sweeps get {sweep_id}, vtp sweeps cancel {sweep_id})")
        raise typer.Exit(130) from None
    emit(view, as_json, lambda v: print_best(v, console))
    if view.state != SweepState.SUCCEEDED:
        raise typer.Exit(EXIT_JOB_FAILED)


# ---------------------------------------------------------------------------- commands


def read_body(path: Path) -> dict[str, Any]:
    """The sweep file (YAML or JSON; `-`: standard input) as a body; exit 2 when it is not one."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
        body = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        err.print(f"[red]error:[/red] cannot read the sweep file {path}: {exc}")
        raise typer.Exit(2) from None
    if not isinstance(body, dict):
        err.print(f"[red]error:[/red] the sweep file {path} must hold a mapping (the body of POST /v1/sweeps: "
                  "name, job, space, metric, ...)")
        raise typer.Exit(2)
    return body


@sweeps_app.command("create")
def sweeps_create(
    file: Annotated[Path, typer.Option("-f", "--file", help="YAML (or JSON) file with the sweep: name, project_id, "
                                       "job, space, metric, mode, num_trials, ... (`-`: standard input)")],
    watch_sweep: Annotated[bool, typer.Option("--watch", help="follow its trials live until it ends; exit 1 "
                                              "unless it SUCCEEDED")] = False,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Start a sweep from a file; the API checks it whole (every value the space can give)."""
    body = read_body(file)
    client = api_client(url, token)
    view = call_api(client.create_sweep, body)
    line = (f"sweep [bold]{view.id}[/bold] {view.state.value}: {view.num_trials} trials, {view.search} search, "
            f"{view.metric} ({view.mode})")
    if watch_sweep:  # with --json, standard output holds the final sweep alone
        (err if as_json else console).print(line)
    else:
        emit(view, as_json, lambda v: console.print(f"{line}; follow it with vtp sweeps watch {v.id}"))
    if watch_sweep:
        _finish_watch(client, view.id, as_json)


@sweeps_app.command("watch")
def sweeps_watch(sweep_id: str, url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Live table of the sweep's trials until it ends, then its best trial (exit 1 unless it SUCCEEDED)."""
    _finish_watch(api_client(url, token), sweep_id, as_json)


@sweeps_app.command("list")
def sweeps_list(
    project: Annotated[Optional[str], typer.Option("--project", help="only this project's sweeps")] = None,
    state: Annotated[Optional[SweepState], typer.Option(case_sensitive=False, help="only sweeps in this state")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    cursor: Annotated[Optional[str], typer.Option(help="next_cursor of the previous page")] = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """List sweeps, newest first."""
    page = call_api(api_client(url, token).list_sweeps, project, state.value if state else None, cursor, limit)

    def render(p: SweepPage) -> None:
        # the id is what get/cancel take: never cut
        table = Table(Column("id", no_wrap=True), Column("name", overflow="fold"), Column("project", overflow="fold"),
                      Column("state", no_wrap=True), Column("trials", no_wrap=True), Column("best", overflow="fold"))
        for s in p.items:
            done = sum(n for k, n in s.counts.items() if k not in ("pending", "running"))
            best = f"{s.metric}={_metric(s.best_metric)}" if s.best_metric is not None else f"{s.metric} ({s.mode})"
            table.add_row(s.id, escape(s.name), escape(s.project_id), s.state.value, f"{done}/{s.num_trials}",
                          escape(best))
        console.print(table)
        if p.next_cursor:
            console.print(f"[dim]more: --cursor {p.next_cursor}[/dim]")

    emit(page, as_json, render)


@sweeps_app.command("get")
def sweeps_get(sweep_id: str, url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """One sweep: its settings and state, then its trials best first (by the sweep's metric and mode)."""
    view = call_api(api_client(url, token).get_sweep, sweep_id)

    def render(v: SweepView) -> None:
        print_summary(v, console)
        if v.trials:
            console.print(trials_table(v, ranked(v), title=f"trials by best {v.metric} ({v.mode}); * the sweep's best"))

    emit(view, as_json, render)


@sweeps_app.command("cancel")
def sweeps_cancel(sweep_id: str, url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Cancel a sweep and every trial it runs (idempotent)."""
    view = call_api(api_client(url, token).cancel_sweep, sweep_id)
    emit(view, as_json, lambda v: console.print(f"sweep {v.id}: cancel requested ({v.state.value})"))
