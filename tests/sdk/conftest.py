"""Fixtures of the SDK tests (no Ray: a fake backend over real HTTP, the S3 server of tests/fixtures)."""
from __future__ import annotations

from typing import Iterator

import pytest
from sdk_fake_backend import FakeBackend


@pytest.fixture
def backend() -> Iterator[FakeBackend]:
    b = FakeBackend()
    b.start()
    yield b
    b.stop()


@pytest.fixture(autouse=True)
def _sdk_sends_only_valid_bodies() -> Iterator[None]:
    """Every body any fake backend of the test received passed the platform's own validation: the
    SDK never sends what the real platform would refuse with 422."""
    before = len(FakeBackend.instances)
    yield
    invalid = [entry for b in FakeBackend.instances[before:] for entry in b.invalid]
    del FakeBackend.instances[before:]
    assert not invalid, f"the SDK sent bodies the platform refuses (route, body, 422): {invalid}"
