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
