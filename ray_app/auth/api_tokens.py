"""User API tokens: static bearer tokens, compared in constant time."""

from __future__ import annotations

import hmac


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def is_valid(token: str | None, accepted: list[str]) -> bool:
    if not token:
        return False
    # compare against every token so the time taken does not reveal which one nearly matched
    result = False
    for candidate in accepted:
        result |= hmac.compare_digest(token.encode(), candidate.encode())
    return result
