"""Callback tokens: HS256 JWTs bound to (job id, attempt), with expiry (DESIGN §8)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import jwt

ALGORITHM = "HS256"
AUDIENCE = "vtp-callback"


class CallbackAuthError(Exception):
    """The reason a callback was refused; the API answers 401 with it."""


@dataclass(frozen=True)
class CallbackClaims:
    job_id: str
    attempt: int
    expires_at: float = field(default=0.0, compare=False)  # the token's `exp`, epoch seconds


def issue(secret: str, job_id: str, attempt: int, ttl_s: int) -> str:
    now = int(time.time())
    claims = {"sub": job_id, "attempt": attempt, "aud": AUDIENCE, "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: str, token: str | None, job_id: str) -> CallbackClaims:
    """Check signature, expiry and the job binding; the attempt is checked against the store."""
    if not token:
        raise CallbackAuthError("missing bearer token")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            options={"require": ["exp", "sub", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise CallbackAuthError("callback token expired") from None
    except jwt.InvalidSignatureError:
        raise CallbackAuthError("callback token signature is invalid") from None
    except jwt.DecodeError:
        raise CallbackAuthError("callback token is malformed") from None
    except jwt.InvalidTokenError as exc:
        raise CallbackAuthError(f"callback token rejected: {exc}") from None
    if claims["sub"] != job_id:
        raise CallbackAuthError("callback token was issued for another job")
    attempt = claims.get("attempt")
    if not isinstance(attempt, int) or attempt < 1:
        raise CallbackAuthError("callback token has no valid attempt")
    return CallbackClaims(job_id=job_id, attempt=attempt, expires_at=float(claims["exp"]))
