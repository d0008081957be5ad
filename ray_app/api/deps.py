"""FastAPI dependencies: the app context and the trainers' authentication (callback JWTs).
Users' authentication and authorization: api/access.py."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ray_app.api.context import AppContext
from ray_app.auth import callback_tokens

# auto_error=False: we answer a missing token ourselves, with 401 and a reason (not 403)
_trainer_bearer = HTTPBearer(auto_error=False, scheme_name="CallbackToken",
                             description="The attempt's CALLBACK_TOKEN (JWT).")


# `async def` on purpose, here and below: they do no blocking work, and a sync dependency is run in
# FastAPI's thread pool, which cost ~0.35 ms CPU per callback request (bench/README.md, ingestion)
async def context(request: Request) -> AppContext:
    return request.app.state.ctx


Ctx = Annotated[AppContext, Depends(context)]


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(status_code=401, detail=reason, headers={"WWW-Authenticate": "Bearer"})


async def require_callback(
    job_id: str,
    ctx: Ctx,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_trainer_bearer)],
) -> callback_tokens.CallbackClaims:
    token = creds.credentials if creds else None
    cached = cached_claims(ctx, token, job_id)
    if cached is not None:
        return cached
    try:
        claims = callback_tokens.verify(ctx.jwt_secret, token, job_id)
    except callback_tokens.CallbackAuthError as exc:
        raise _unauthorized(str(exc)) from None
    # Verifying an HS256 JWT with PyJWT costs ~0.1 ms CPU (key preparation, claim checks), a fifth
    # of a heartbeat's cost in the gateway; a trainer sends the same token for its whole attempt.
    # Only tokens that passed `verify` are kept, keyed by the exact token string (which includes
    # its signature), per app (per JWT secret: a token verified by one app is never taken on trust
    # by another). Bounded: cleared when full.
    if len(ctx.verified_tokens) >= _VERIFIED_MAX:
        ctx.verified_tokens.clear()
    ctx.verified_tokens[token] = claims  # type: ignore[index]  # verify refuses an empty token
    return claims


_VERIFIED_MAX = 20_000


def cached_claims(ctx: AppContext, token: str | None, job_id: str) -> callback_tokens.CallbackClaims | None:
    """The claims of a token this app has verified before, if still unexpired and bound to this
    job; None means "verify it" (require_callback), or "hand it to the route" (the gateway's fast
    path). A token verified before is the same signed claims: only its expiry and job binding can
    differ from one request to the next, so only those are checked again."""
    cached = ctx.verified_tokens.get(token) if token else None
    if cached is not None and cached.job_id == job_id and time.time() < cached.expires_at:
        return cached
    return None


Callback = Annotated[callback_tokens.CallbackClaims, Depends(require_callback)]
