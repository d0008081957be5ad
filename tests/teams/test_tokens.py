"""Personal tokens: 256 random bits, recognisable, stored as SHA-256 only; expiries parsed strictly."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from ray_app.teams import tokens


def test_a_new_secret_is_random_recognisable_and_hashed_with_sha256():
    a, b = tokens.new_secret(), tokens.new_secret()
    assert a != b and a.startswith("vtp_") and len(a) == 4 + 43  # 32 bytes, URL-safe base64
    assert tokens.looks_personal(a) and not tokens.looks_personal("a-static-token")
    assert tokens.secret_hash(a) == hashlib.sha256(a.encode()).hexdigest() != tokens.secret_hash(b)


@pytest.mark.parametrize(("text", "expected"), [("90d", timedelta(days=90)), ("12h", timedelta(hours=12)),
                                                 ("2w", timedelta(weeks=2))])
def test_expiries(text, expected):
    assert tokens.parse_expiry(text) == expected


@pytest.mark.parametrize("text", ["0d", "90", "d", "-1d", "1y", "99999d", "１d"])
def test_bad_expiries_are_refused_naming_the_accepted_form(text):
    with pytest.raises(ValueError, match="90d|longer than"):
        tokens.parse_expiry(text)
