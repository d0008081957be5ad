"""FastAPI dependencies: the app context and the two kinds of authentication."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ray_app.api.context import AppContext
from ray_app.auth import api_tokens, callback_tokens

# auto_error=False: we answer a missing token ourselves, with 401 and a reason (not 403)
_user_bearer = HTTPBearer(auto_error=False, scheme_name="APIToken",
                          description="User API token (`vtp` stores the embedded default).")
_trainer_bearer = HTTPBearer(auto_error=False, scheme_name="CallbackToken",
                             description="The attempt's CALLBACK_TOKEN (JWT).")


def context(request: Request) -> AppContext:
    return request.app.state.ctx


Ctx = Annotated[AppContext, Depends(context)]


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(status_code=401, detail=reason, headers={"WWW-Authenticate": "Bearer"})


def require_user(
    ctx: Ctx, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_user_bearer)]
) -> None:
    if creds is None:
        raise _unauthorized("missing bearer API token")
    if not api_tokens.is_valid(creds.credentials, ctx.api_tokens):
        raise _unauthorized("invalid API token")


def require_callback(
    job_id: str,
    ctx: Ctx,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_trainer_bearer)],
) -> callback_tokens.CallbackClaims:
    try:
        return callback_tokens.verify(ctx.jwt_secret, creds.credentials if creds else None, job_id)
    except callback_tokens.CallbackAuthError as exc:
        raise _unauthorized(str(exc)) from None


User = Depends(require_user)
Callback = Annotated[callback_tokens.CallbackClaims, Depends(require_callback)]
