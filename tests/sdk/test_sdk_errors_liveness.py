"""Helpers the trainers share from the SDK: the error classifier, the keep-alive heartbeats and
the lenient number-from-environment knob."""

from __future__ import annotations

import time

import pytest
from sdk.env import env_number
from sdk.errors import ConfigError, ErrorType, error_type_of
from sdk.liveness import Heartbeats


class OutOfMemoryError(RuntimeError):  # torch.cuda.OutOfMemoryError, by name
    pass


@pytest.mark.parametrize(("exc", "expected"), [
    (MemoryError(), ErrorType.RESOURCE_ERROR),
    (OutOfMemoryError("Tried to allocate 2 GiB"), ErrorType.RESOURCE_ERROR),
    (RuntimeError("CUDA out of memory. Tried to allocate"), ErrorType.RESOURCE_ERROR),
    (OSError("[Errno 28] No space left on device"), ErrorType.RESOURCE_ERROR),
    (RuntimeError("DataLoader worker (pid 12) is killed by signal: Killed."), ErrorType.RESOURCE_ERROR),
    (ConnectionError("refused"), ErrorType.NETWORK_ERROR),
    (ValueError("bad config key"), ErrorType.CONFIG_ERROR),
    (ConfigError("nope"), ErrorType.CONFIG_ERROR),
    (RuntimeError("something else"), ErrorType.UNKNOWN_ERROR),
])
def test_error_type_of(exc, expected):
    assert error_type_of(exc) is expected


def test_error_type_of_default():
    assert error_type_of(RuntimeError("x"), default=ErrorType.FRAMEWORK_ERROR) is ErrorType.FRAMEWORK_ERROR
    assert error_type_of(MemoryError(), default=ErrorType.FRAMEWORK_ERROR) is ErrorType.RESOURCE_ERROR


class _Recorder:
    def __init__(self):
        self.beats = []

    def heartbeat(self, **kw):
        self.beats.append(kw)


def test_heartbeats_fill_silences_until_stopped():
    sdk = _Recorder()
    with Heartbeats(sdk, total_epochs=3, interval=0.2):
        time.sleep(2.5)
    n = len(sdk.beats)
    assert n >= 2, sdk.beats  # the first at once, then one per silent interval (checked every 1 s)
    assert sdk.beats[0]["total_epochs"] == 3 and sdk.beats[0]["epoch"] is None
    assert [b["step"] for b in sdk.beats] == sorted(b["step"] for b in sdk.beats)  # setup steps count up
    time.sleep(1.5)
    assert len(sdk.beats) == n  # stopped


@pytest.mark.parametrize(("raw", "expected"), [(None, 7.0), ("", 7.0), ("  ", 7.0), ("x", 7.0), ("2.5", 2.5), ("3", 3.0)])
def test_env_number(raw, expected, monkeypatch):
    env = {} if raw is None else {"VTP_KNOB": raw}
    assert env_number("VTP_KNOB", 7.0, env) == expected
    monkeypatch.delenv("VTP_KNOB", raising=False)
    if raw is not None:
        monkeypatch.setenv("VTP_KNOB", raw)
    assert env_number("VTP_KNOB", 7.0) == expected
    assert env_number("VTP_KNOB", None) == (None if expected == 7.0 else expected)
