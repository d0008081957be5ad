"""The trainer callback API (DESIGN §3): heartbeat, event, done — JWT per attempt."""

from __future__ import annotations

import json

from fastapi import APIRouter
from fastapi.responses import Response

from ray_app.api.context import AppContext
from ray_app.api.deps import Callback, Ctx
from ray_app.api.documented import CALLBACK_UNAUTHORIZED, CONFLICT, NOT_FOUND, TOO_LARGE
from ray_app.auth.callback_tokens import CallbackClaims
from ray_app.jobs.errors import Conflict, JobNotFound, StaleAttempt, StoreError
from ray_app.jobs.callback_models import (
    CallbackBatchIn,
    CallbackBatchReply,
    CallbackItemResult,
    DoneIn,
    DoneReply,
    EventIn,
    EventReply,
    HeartbeatIn,
    HeartbeatReply,
)

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["trainer callbacks"])

_REFUSED = {**CALLBACK_UNAUTHORIZED, **NOT_FOUND, **CONFLICT, **TOO_LARGE}


def _check_body_attempt(claims, body_attempt: int | None) -> None:
    if body_attempt is not None and body_attempt != claims.attempt:
        raise StaleAttempt(f"body says attempt {body_attempt}; the token is for attempt {claims.attempt}")


@router.post("/heartbeat", response_model=HeartbeatReply, responses=_REFUSED,
             summary="Progress and metrics; the reply says whether to continue")
async def heartbeat(job_id: str, body: HeartbeatIn, claims: Callback, ctx: Ctx):
    status, content = await heartbeat_reply(ctx, job_id, claims, body)
    return Response(content, status_code=status, media_type="application/json")


async def heartbeat_reply(ctx: AppContext, job_id: str, claims: CallbackClaims, body: HeartbeatIn) -> tuple[int, bytes]:
    """The heartbeat's work once authenticated and validated, shared with the gateway's fast path
    (api/fast_heartbeat.py): (status, JSON body). A StoreError (401, 404) propagates."""
    _check_body_attempt(claims, body.attempt)
    try:
        reply = await ctx.store.heartbeat(job_id, claims.attempt, body.model_dump(mode="json"))
    except Conflict as exc:
        # a finished job: tell the trainer to stop, and say why
        return 409, json_bytes({"detail": exc.detail, "should_continue": False})
    # the reply is one of four bodies: sent as prebuilt bytes, not validated and serialized
    # again through the response model (the documented schema stays HeartbeatReply)
    return 200, _HEARTBEAT_REPLIES[bool(reply["should_continue"]), bool(reply.get("duplicate"))]


def json_bytes(content: dict) -> bytes:
    """A reply body as Starlette's JSONResponse renders it."""
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


_HEARTBEAT_REPLIES = {
    (cont, dup): HeartbeatReply(should_continue=cont, duplicate=dup).model_dump_json().encode()
    for cont in (True, False) for dup in (True, False)
}


@router.post("/event", response_model=EventReply, responses=_REFUSED, summary="A trainer event")
async def event(job_id: str, body: EventIn, claims: Callback, ctx: Ctx) -> EventReply:
    _check_body_attempt(claims, body.attempt)
    return EventReply(**await ctx.store.event(job_id, claims.attempt, body.model_dump(mode="json")))


@router.post("/done", response_model=DoneReply, responses=_REFUSED,
             summary="The attempt's final result, accepted once")
async def done(job_id: str, body: DoneIn, claims: Callback, ctx: Ctx) -> DoneReply:
    _check_body_attempt(claims, body.attempt)
    return DoneReply(**await ctx.store.done(job_id, claims.attempt, body.model_dump(mode="json")))


@router.post("/callbacks", response_model=CallbackBatchReply, responses=_REFUSED,
             summary="Queued heartbeats and events at once, applied in order, each once")
async def callbacks(job_id: str, body: CallbackBatchIn, claims: Callback, ctx: Ctx) -> CallbackBatchReply:
    for item in body.items:
        _check_body_attempt(claims, item.body.attempt)
    # one store call, one transaction: a trainer's backlog costs one round trip, not one each
    outcomes = await ctx.store.apply_callbacks([
        (item.kind, job_id, claims.attempt, item.body.model_dump(mode="json")) for item in body.items])
    # about the job or the token, not the item: the whole request is refused, as each alone would be
    refused = next((o for o in outcomes if isinstance(o, StaleAttempt | JobNotFound)), None)
    if refused is not None:
        raise refused
    results, should_continue = [], True
    for item, outcome in zip(body.items, outcomes, strict=True):
        if isinstance(outcome, StoreError):
            results.append(CallbackItemResult(status=outcome.status_code, detail=outcome.detail))
            should_continue &= not (item.kind == "heartbeat" and isinstance(outcome, Conflict))
        elif isinstance(outcome, BaseException):
            results.append(CallbackItemResult(status=500, detail=str(outcome)))
        else:
            results.append(CallbackItemResult(status=200, reply=outcome))
            should_continue &= outcome.get("should_continue", True)
    return CallbackBatchReply(results=results, should_continue=should_continue)
