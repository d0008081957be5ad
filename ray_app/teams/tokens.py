"""Personal API tokens: how they are made, recognised and stored.

A token is `vtp_` + 43 characters of a random 256-bit secret (URL-safe base64): the prefix lets a
secret scanner, or a person, recognise one. Only its SHA-256 is stored: for a random 256-bit
secret a fast hash is right (nothing to brute-force, unlike a password), and looking a token up by
its hash is one indexed read. The secret is shown once, when made.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

PREFIX = "vtp_"
_EXPIRY = re.compile(r"^(\d{1,5})([hdw])$", re.ASCII)
_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400}
MAX_EXPIRY = timedelta(days=3650)


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def looks_personal(secret: str) -> bool:
    """A token of this kind (the database is asked about these only)."""
    return secret.startswith(PREFIX) and 20 <= len(secret) <= 100


def parse_expiry(text: str) -> timedelta:
    """`90d`, `12h`, `2w` → a duration; ValueError naming what is accepted."""
    match = _EXPIRY.match(text.strip())
    if not match or int(match[1]) == 0:
        raise ValueError(f"expiry {text!r} is not a duration like 90d, 12h or 2w")
    duration = timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    if duration > MAX_EXPIRY:
        raise ValueError(f"expiry {text!r} is longer than {MAX_EXPIRY.days} days")
    return duration
