"""`vtp queue` and `vtp projects set-quota`: the shared cluster's queue (GET /v1/queue): the jobs
not running yet, in the order they are offered to the cluster, each with its priority and why it
waits; then each project's use against its quota and its fair share, the cluster's free capacity
and whether preemption is on (the controller's last decision: a 503 while no controller runs).
And a project's quota, fair-share weight and preemptibility (PUT /v1/projects/{id}/quota, platform
admins; `vtp projects set-quota` is registered with the other project commands, cli/teams.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Optional, TypeVar

import typer
from rich.table import Column, Table

from ray_app.cli.common import AsJson, Token, Url, api_client, call_api, console, emit, err
from ray_app.client._calls import UNSET, Unset
from ray_app.scheduling.models import QueueView
from ray_app.teams.models import ProjectView

N = TypeVar("N", int, float)
LIMIT = "(none: unlimited; not given: unchanged)"


def _n(value: float) -> str:
    return f"{value:g}"


def used(in_use: float, limit: float | None) -> str:
    """What a project holds against its limit: `2/4`; `2/-` with no limit."""
    return f"{_n(in_use)}/{'-' if limit is None else _n(limit)}"


def only_project(view: QueueView, project: str | None) -> QueueView:
    """The queue with only this project's jobs and share (positions stay the queue's own)."""
    if project is None:
        return view
    return view.model_copy(update={"jobs": [j for j in view.jobs if j.project_id == project],
                                   "projects": [p for p in view.projects if p.project_id == project]})


def render(view: QueueView) -> None:
    if view.jobs:
        # the id is what other commands take: never cut (the reason folds first)
        jobs = Table(Column("#", justify="right"), Column("job", no_wrap=True), Column("project", overflow="fold"),
                     "priority", "state", Column("waiting for", overflow="fold"), title="queue (offered in this order)")
        for j in view.jobs:
            jobs.add_row("-" if j.position is None else str(j.position), j.job_id, j.project_id, j.priority_name,
                         j.state, j.waiting_for)
        console.print(jobs)
        if view.total is not None and view.total > len(view.jobs):
            console.print(f"[dim]the first {len(view.jobs)} of {view.total} jobs waiting[/dim]")
    else:
        console.print("no job waiting")
    if view.projects:
        projects = Table(Column("project", overflow="fold"), "GPUs", "CPUs", "jobs", "weight", "share", "waiting",
                         "preemptible", title="projects: in use/quota (-: unlimited)")
        for p in view.projects:
            projects.add_row(p.project_id, used(p.in_use.gpus, p.quota.max_gpus), used(p.in_use.cpus, p.quota.max_cpus),
                             used(p.in_use.running_jobs, p.quota.max_running_jobs), _n(p.weight), f"{p.share:.3g}",
                             str(p.waiting), "yes" if p.preemptible else "no")
        console.print(projects)
    if view.capacity is not None:
        free, total = view.capacity.free, view.capacity.total
        console.print(f"capacity: {_n(free.cpus)}/{_n(total.cpus)} CPUs, {_n(free.gpus)}/{_n(total.gpus)} GPUs free")
    console.print(f"preemption: {'on' if view.preemption else 'off'}")
    if view.decided_at:
        took = f" (the pass took {view.pass_ms:.3g} ms)" if view.pass_ms is not None else ""
        console.print(f"[dim]decided at {view.decided_at[:19]}{took}[/dim]")


def queue(
    project: Annotated[Optional[str], typer.Option("--project", help="only this project's jobs and share")] = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """The jobs waiting, in the order they are offered to the cluster, why each waits, and the
    projects' use against their quotas and fair shares (you see your projects; platform admins
    see all)."""
    view = only_project(call_api(api_client(url, token).get_queue), project)
    emit(view, as_json, render)


# ---------------------------------------------------------------------------- a project's quota


def quota_summary(p: ProjectView) -> str:
    def limit(value: float | None) -> str:
        return "-" if value is None else _n(value)

    return (f"quota: {limit(p.max_gpus)} GPUs, {limit(p.max_cpus)} CPUs, {limit(p.max_running_jobs)} jobs "
            f"(-: unlimited); weight {_n(p.weight)}; preemptible {'yes' if p.preemptible else 'no'}")


def _limit(value: str | None, option: str, number: Callable[[str], N]) -> N | None | Unset:
    """A limit as typed: a number, or `none` (unlimited, sent as null); UNSET if not given."""
    if value is None:
        return UNSET
    if value.strip().lower() == "none":
        return None
    try:
        return number(value)
    except ValueError:
        kind = "whole number" if number is int else "number"
        raise typer.BadParameter(f"{value!r} is not a {kind} or none", param_hint=f"'{option}'") from None


def projects_set_quota(
    project_id: Annotated[str, typer.Argument(help="the project")],
    gpus: Annotated[Optional[str], typer.Option("--gpus", metavar="N|none",
                                                help=f"the most GPUs its jobs hold at once {LIMIT}")] = None,
    cpus: Annotated[Optional[str], typer.Option("--cpus", metavar="N|none", help=f"the most CPUs {LIMIT}")] = None,
    jobs: Annotated[Optional[str], typer.Option("--jobs", metavar="N|none", help="the most jobs offered to the "
                                                f"cluster at once {LIMIT}")] = None,
    weight: Annotated[Optional[float], typer.Option(help="its fair share against other projects' (> 0; 2: twice "
                                                    "that of a project of weight 1)")] = None,
    preemptible: Annotated[Optional[bool], typer.Option("--preemptible/--no-preemptible", help="whether its jobs "
                                                        "may be preempted for jobs of higher priority")] = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Set a project's quota, fair-share weight and preemptibility (platform admins): only the
    options given change. Jobs already over a new quota are not stopped: the project's next ones wait."""
    max_gpus, max_cpus = _limit(gpus, "--gpus", float), _limit(cpus, "--cpus", float)
    max_jobs = _limit(jobs, "--jobs", int)
    if all(v is UNSET for v in (max_gpus, max_cpus, max_jobs)) and weight is None and preemptible is None:
        err.print("[red]error:[/red] nothing to set: give --gpus, --cpus, --jobs, --weight or --[no-]preemptible")
        raise typer.Exit(2)
    project = call_api(api_client(url, token).set_quota, project_id, max_gpus=max_gpus, max_cpus=max_cpus,
                       max_running_jobs=max_jobs, weight=UNSET if weight is None else weight,
                       preemptible=UNSET if preemptible is None else preemptible)
    emit(project, as_json, lambda p: console.print(f"project [bold]{p.id}[/bold]: {quota_summary(p)}"))


# ---------------------------------------------------------------------------- registration


def register(app: typer.Typer) -> None:
    """Add `vtp queue` to `vtp`."""
    app.command("queue")(queue)
