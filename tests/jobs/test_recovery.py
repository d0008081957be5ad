"""The recovery policy as tables: every answer to "retry, fail, cancel or wait?" (jobs/recovery.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from ray_app.jobs.states import JobState
from ray_app.jobs import recovery
from ray_app.jobs.recovery import Action


@dataclass
class Facts:
    state: JobState = JobState.RUNNING
    attempt: int = 1
    max_attempts: int = 3
    cancel_requested: bool = False
    done: dict[str, Any] | None = None
    preemptions: int = 0
    preempt_requested_at: Any = None


LAST = {"attempt": 3, "max_attempts": 3}
ASKED = "2026-12-05T00:00:00Z"  # when a preemption was asked for
FAILED_DONE = {"status": "failed", "error": "boom"}

# (facts, runner outcome, runner error) -> (action, error type, words in the reason)
ON_EXIT = [
    (Facts(state=JobState.SUCCEEDED), {"returncode": 0}, None, Action.NOTHING, None, ""),
    (Facts(state=JobState.FAILED), None, "gone", Action.NOTHING, None, ""),
    (Facts(cancel_requested=True), {"returncode": -15, "signal": "SIGTERM"}, None, Action.CANCEL, None, "cancel"),
    (Facts(cancel_requested=True, done=FAILED_DONE | {"error_type": "RESOURCE_ERROR"}), {"returncode": 1}, None,
     Action.CANCEL, None, "cancel"),
    (Facts(done=FAILED_DONE | {"error_type": "RESOURCE_ERROR"}), {"returncode": 1}, None, Action.RETRY,
     "RESOURCE_ERROR", "boom"),
    (Facts(done=FAILED_DONE | {"error_type": "NETWORK_ERROR"}, **LAST), {"returncode": 1}, None, Action.FAIL,
     "NETWORK_ERROR", "no attempts left"),
    (Facts(done=FAILED_DONE | {"error_type": "DATASET_ERROR"}), {"returncode": 1}, None, Action.FAIL,
     "DATASET_ERROR", "boom"),
    (Facts(done={"status": "failed"}), {"returncode": 1}, None, Action.FAIL, "UNKNOWN_ERROR", "reported failure"),
    (Facts(), None, "its node died", Action.RETRY, "INFRASTRUCTURE_ERROR", "its node died"),
    (Facts(), None, None, Action.RETRY, "INFRASTRUCTURE_ERROR", "cause unknown"),
    (Facts(**LAST), None, "its node died", Action.FAIL, "INFRASTRUCTURE_ERROR", "no attempts left"),
    (Facts(), {"returncode": -9, "signal": "SIGKILL"}, None, Action.RETRY, "INFRASTRUCTURE_ERROR", "SIGKILL"),
    (Facts(), {"returncode": 2}, None, Action.RETRY, "NETWORK_ERROR", "could not reach the backend"),
    (Facts(**LAST), {"returncode": 2}, None, Action.FAIL, "NETWORK_ERROR", "no attempts left"),
    (Facts(), {"returncode": 0}, None, Action.FAIL, "UNKNOWN_ERROR", "code 0 without sending done"),
    (Facts(), {"returncode": 1}, None, Action.FAIL, "UNKNOWN_ERROR", "code 1 without sending done"),
    (Facts(state=JobState.QUEUED), {"returncode": 137}, None, Action.FAIL, "UNKNOWN_ERROR", "code 137"),
    # preempted: back to the queue however it ended (saved and exited, or killed after the grace)
    (Facts(preempt_requested_at=ASKED), {"returncode": 0}, None, Action.PREEMPT, None, "higher priority"),
    (Facts(preempt_requested_at=ASKED, **LAST), {"returncode": -9, "signal": "SIGKILL"}, None, Action.PREEMPT,
     None, "higher priority"),
    (Facts(preempt_requested_at=ASKED), None, "its node died", Action.PREEMPT, None, "higher priority"),
    # a cancel wins over a preemption; a failure the trainer reported is still its failure
    (Facts(preempt_requested_at=ASKED, cancel_requested=True), {"returncode": 0}, None, Action.CANCEL, None, "cancel"),
    (Facts(preempt_requested_at=ASKED, done=FAILED_DONE | {"error_type": "DATASET_ERROR"}), {"returncode": 1}, None,
     Action.FAIL, "DATASET_ERROR", "boom"),
    # preempted attempts do not count against max_attempts: attempt 3 after one preemption has one left
    (Facts(preemptions=1, **LAST), None, "its node died", Action.RETRY, "INFRASTRUCTURE_ERROR", "its node died"),
    (Facts(preemptions=1, attempt=4, max_attempts=3), None, "its node died", Action.FAIL, "INFRASTRUCTURE_ERROR",
     "no attempts left"),
]


@pytest.mark.parametrize("facts,outcome,runner_error,action,error_type,words", ON_EXIT)
def test_on_exit(facts, outcome, runner_error, action, error_type, words):
    decision = recovery.on_exit(facts, outcome, runner_error)
    assert (decision.action, decision.error_type) == (action, error_type)
    assert words in decision.reason


# (facts, status, error, error type) -> (action, error type, words)
ON_DONE = [
    (Facts(), "succeeded", None, None, Action.SUCCEED, None, "success"),
    (Facts(cancel_requested=True), "succeeded", None, None, Action.WAIT, None, "cancel"),
    (Facts(cancel_requested=True), "failed", "x", "CONFIG_ERROR", Action.WAIT, None, "cancel"),
    (Facts(), "failed", "lost GPU", "RESOURCE_ERROR", Action.WAIT, "RESOURCE_ERROR", "lost GPU"),
    (Facts(**LAST), "failed", "lost GPU", "RESOURCE_ERROR", Action.FAIL, "RESOURCE_ERROR", "no attempts left"),
    (Facts(), "failed", "bad labels", "DATASET_ERROR", Action.FAIL, "DATASET_ERROR", "bad labels"),
    (Facts(), "failed", None, None, Action.FAIL, "UNKNOWN_ERROR", "trainer reported failure"),
]


@pytest.mark.parametrize("facts,status,error,error_type,action,want_type,words", ON_DONE)
def test_on_done(facts, status, error, error_type, action, want_type, words):
    decision = recovery.on_done(facts, status, error, error_type)
    assert (decision.action, decision.error_type) == (action, want_type)
    assert words in decision.reason


@pytest.mark.parametrize("facts,retryable,action,words", [
    (Facts(), True, Action.RETRY, "gone"),
    (Facts(**LAST), True, Action.FAIL, "no attempts left"),
    (Facts(), False, Action.FAIL, "gone"),
    (Facts(cancel_requested=True), True, Action.CANCEL, "cancel"),
    (Facts(state=JobState.CANCELLED), True, Action.NOTHING, ""),
    (Facts(preempt_requested_at=ASKED, **LAST), False, Action.PREEMPT, "higher priority"),
])
def test_on_lost(facts, retryable, action, words):
    decision = recovery.on_lost(facts, "runner gone", retryable)
    assert decision.action == action and words in decision.reason
    if action in (Action.RETRY, Action.FAIL):
        assert decision.error_type == "INFRASTRUCTURE_ERROR"


def test_a_heartbeat_says_stop_once_a_cancel_or_a_preemption_is_asked_for():
    assert recovery.keeps_going({"cancel_requested": False, "preempt_requested_at": None})
    assert not recovery.keeps_going({"cancel_requested": True, "preempt_requested_at": None})
    assert not recovery.keeps_going({"cancel_requested": False, "preempt_requested_at": ASKED})


def test_only_the_platforms_failures_are_retried():
    assert {e.value for e in recovery.RETRYABLE_ERRORS} == {"RESOURCE_ERROR", "NETWORK_ERROR", "INFRASTRUCTURE_ERROR"}


@pytest.mark.parametrize("failed_attempt,base,cap,delay", [
    (1, 10, 300, 10), (2, 10, 300, 20), (3, 10, 300, 40), (6, 10, 300, 300), (9, 10, 300, 300),
    (1, 0, 300, 0), (3, 0, 300, 0), (1, 2.5, 300, 2.5), (2, 50, 60, 60),
])
def test_a_retry_waits_longer_after_each_failed_attempt(failed_attempt, base, cap, delay):
    assert recovery.retry_delay_s(failed_attempt, base, cap) == delay
