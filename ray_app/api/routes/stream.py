"""GET /v1/jobs/{id}/stream: a job's live changes by Server-Sent Events (DESIGN §10).

One stream per viewer, read from the database like the other reads (store/reads.py), never from
the single writer. What it sends, each as an SSE `event`:

  job    the job (the API's JobView) whenever it changed: state, progress, epoch, latest metrics
  event  each of the job's events, in order
  log    each line of the trainer's output, in order
  end    once the job is final and its output complete (or a short grace after): then it closes

Every message's `id` is the stream's position, `<event seq>-<log seq>`: a client that reconnects
with `Last-Event-ID` (EventSource does it by itself) continues after what it had, and gets the
job's current state first. The metric history is GET /v1/jobs/{id}/metrics; the `job` messages
carry each new epoch's metrics as they arrive.

GET /v1/stream/jobs: the job list's changes, so a console's list of jobs stays live without
polling its pages. It sends:

  ready  first, at once: `{"position": "<pos>"}`, where the stream stands
  job    the job (JobView) each time its row changed after the stream's position, in the order of
         the changes (updated_at, then creation): created, a state change, a heartbeat's progress,
         a cancel request, a new attempt. A job changed several times between two reads is sent
         once, as it is now.

A position is `<updated_at in microseconds since 1970-01-01 UTC>-<job num>` of the last change
sent; every message's `id` is one. The stream starts after `Last-Event-ID` (a reconnect:
EventSource sends it by itself), else after `?since=`, else at the newest change when it opens.
So a client opens the stream, waits for `ready`, then loads the first page of GET /v1/jobs and
applies the `job` messages on top (by id): a change made while the page loaded comes as a message,
none is lost. Filters are the client's: every change to every job of the caller's projects is sent.

Both streams check the caller's token again every RECHECK_S: a revoked or expired token, a
disabled user, or (for a job's stream) a caller no longer in the job's project ends the stream.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse

from ray_app.api.access import Caller, User, Who
from ray_app.api.deps import Ctx
from ray_app.api.documented import NOT_FOUND, USER_ROUTE
from ray_app.jobs.api_models import EventView, JobView, LogLine
from ray_app.jobs.types import MAX_SEQ
from ray_app.store.reads import Position

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[User], responses=USER_ROUTE)
jobs_router = APIRouter(prefix="/v1/stream", tags=["jobs"], dependencies=[User], responses=USER_ROUTE)

POLL_S = 0.2  # how often a stream looks for changes: a heartbeat reaches the viewer within it
PING_S = 15  # a comment line this often keeps proxies from closing an idle stream
OUTPUT_GRACE_S = 5.0  # a final job whose output is not complete ends the stream after this
PAGE = 500
RECHECK_S = 5.0  # an open stream checks its token (and the caller's projects) again this often
_POSITION = re.compile(r"^(\d{1,15})-(\d{1,15})$")


def position(last_event_id: str | None, events_after: int, logs_after: int) -> tuple[int, int]:
    """Where a stream starts: after Last-Event-ID when it is one of ours, else the query's."""
    match = _POSITION.match((last_event_id or "").strip())
    if match:
        return min(int(match[1]), MAX_SEQ), min(int(match[2]), MAX_SEQ)
    return events_after, logs_after


@router.get("/{job_id}/stream", response_class=EventSourceResponse, responses={
    **NOT_FOUND, 200: {"description": "text/event-stream: job, event, log and end messages",
                       "content": {"text/event-stream": {}}}},
    summary="The job's live changes (Server-Sent Events; resumable with Last-Event-ID)")
async def stream_job(
    job_id: str,
    request: Request,
    ctx: Ctx,
    who: Who,
    events_after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="start after this event seq")] = 0,
    logs_after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="start after this log seq")] = 0,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
    events: Annotated[bool, Query(description="false: no event messages")] = True,
    logs: Annotated[bool, Query(description="false: no log messages (a progress view)")] = True,
) -> EventSourceResponse:
    await who.job(job_id)  # 404 before the stream starts
    start = position(last_event_id, events_after, logs_after)
    return EventSourceResponse(_changes(ctx, who, request, job_id, *start, events, logs), ping=PING_S)


async def _changes(ctx, who: Caller, request: Request, job_id: str, event_seq: int, log_seq: int,
                   with_events: bool = True, with_logs: bool = True) -> AsyncIterator[ServerSentEvent]:
    shown: str | None = None
    final_since: float | None = None
    while not await request.is_disconnected():
        job = await ctx.reads.get_job(job_id)
        if not await who.still_valid(RECHECK_S) or not who.principal.sees(job.project_id):
            return  # the caller lost access: the stream ends, and a reconnect gets 401 or 404
        events = await ctx.reads.events(job_id, event_seq, PAGE) if with_events else []
        lines = await ctx.reads.logs(job_id, log_seq, PAGE) if with_logs else []
        view = JobView.model_validate(job.model_dump()).model_dump_json()
        if view != shown:
            shown = view
            yield ServerSentEvent(view, event="job", id=f"{event_seq}-{log_seq}")
        for e in events:
            event_seq = e["seq"]
            yield ServerSentEvent(EventView.model_validate(e).model_dump_json(), event="event",
                                  id=f"{event_seq}-{log_seq}")
        for line in lines:
            log_seq = line["seq"]
            yield ServerSentEvent(LogLine.model_validate(line).model_dump_json(), event="log",
                                  id=f"{event_seq}-{log_seq}")
        if len(events) == PAGE or len(lines) == PAGE:
            continue  # more is there already: read on before waiting
        if job.state.is_terminal and not events and not lines:
            # the job turns final on the trainer's `done`, a moment before the runner has stored
            # its last lines: the stream ends once the output is complete (or after a grace)
            final_since = final_since or time.monotonic()
            if job.output_complete or time.monotonic() - final_since > OUTPUT_GRACE_S:
                yield ServerSentEvent(view, event="end", id=f"{event_seq}-{log_seq}")
                return
        await asyncio.sleep(POLL_S)


# ---------------------------------------------------------------- the job list's changes

LIST_POLL_S = 0.5  # how often the list stream looks for changes when it found none
LIST_PAGE = 200
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MAX_MICROS = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND
_MAX_NUM = 2**31 - 1  # jobs.num is an INTEGER
_LIST_POSITION = re.compile(r"^(\d{1,18})-(\d{1,15})$")
POSITION_PATTERN = _LIST_POSITION.pattern
EMPTY: Position = (_EPOCH, 0)  # before every job


def encode_position(at: Position) -> str:
    updated_at, num = at
    return f"{(updated_at.astimezone(UTC) - _EPOCH) // _MICROSECOND}-{num}"


def decode_position(text: str | None) -> Position | None:
    """A position as encode_position writes it; None for anything else."""
    match = _LIST_POSITION.match((text or "").strip())
    if match is None:
        return None
    micros, num = min(int(match[1]), _MAX_MICROS), min(int(match[2]), _MAX_NUM)
    return _EPOCH + micros * _MICROSECOND, num


@jobs_router.get("/jobs", response_class=EventSourceResponse, responses={
    200: {"description": "text/event-stream: a ready message, then a job message per change",
          "content": {"text/event-stream": {}}}},
    summary="The job list's live changes (Server-Sent Events; resumable with Last-Event-ID)")
async def stream_jobs(
    request: Request,
    ctx: Ctx,
    who: Who,
    since: Annotated[str | None, Query(pattern=POSITION_PATTERN, description=(
        "start after this position (a message's id); default: the newest change now"))] = None,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> EventSourceResponse:
    start = decode_position(last_event_id) or decode_position(since)
    if start is None:
        start = await ctx.reads.last_change() or EMPTY
    return EventSourceResponse(_list_changes(ctx, who, request, start), ping=PING_S)


async def _list_changes(ctx, who: Caller, request: Request, at: Position) -> AsyncIterator[ServerSentEvent]:
    position = encode_position(at)
    yield ServerSentEvent(json.dumps({"position": position}), event="ready", id=position)
    while not await request.is_disconnected():
        if not await who.still_valid(RECHECK_S):
            return
        jobs = await ctx.reads.changed_jobs(at, LIST_PAGE)
        for job in jobs:
            at = (job.updated_at, job.num)
            if not who.principal.sees(job.project_id):
                continue  # the position still moves past it
            yield ServerSentEvent(JobView.model_validate(job.model_dump()).model_dump_json(), event="job",
                                  id=encode_position(at))
        if len(jobs) < LIST_PAGE:  # a full page: more is there already, read on before waiting
            await asyncio.sleep(LIST_POLL_S)
