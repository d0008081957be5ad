"""Retry or fail: the one place that decides what an attempt's end means for its job.

In the spirit of SkyPilot's `recovery_strategy.py`: the store persists and compares-and-sets, the
controller watches processes and applies, and every "retry, fail, or wait?" is answered here, as
one table per moment an answer is needed:

- `on_done`: the trainer reported `done` (its process may still be running);
- `on_exit`: the attempt's process is gone (it exited, or its runner actor died);
- `on_lost`: the attempt can no longer run (its runner vanished, or could not start).

The rules (DESIGN §5): infrastructure failures are retried (RETRYABLE_ERRORS), resuming from the
last checkpoint, while attempts are left; anything the trainer reports about itself (a bad
dataset, a bad config, a crash in the framework) is final; a cancel asked for wins over both.
A retry waits before it starts, longer after each failed attempt (`retry_delay_s`). An attempt
the scheduler preempted (ray_app/scheduling) is neither: it goes back to the queue, and does not
count against `max_attempts`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol

from sdk.contract import ErrorType
from ray_app.jobs.states import JobState

# An attempt that failed for one of these reasons is retried while attempts are left.
RETRYABLE_ERRORS = frozenset(
    {ErrorType.RESOURCE_ERROR, ErrorType.NETWORK_ERROR, ErrorType.INFRASTRUCTURE_ERROR}
)

EXIT_CALLBACK_FAILURE = 2  # the contract's exit code for "the backend was unreachable"


class Action(str, enum.Enum):
    NOTHING = "nothing"  # the job is already final
    WAIT = "wait"  # record what came; decide once the attempt's process is gone
    SUCCEED = "succeed"
    CANCEL = "cancel"  # cancel was requested and the processes are gone
    RETRY = "retry"  # the next attempt, resuming from the last checkpoint
    PREEMPT = "preempt"  # stopped for a job of higher priority: back to the queue, not a failure
    FAIL = "fail"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""
    error_type: str | None = None


class JobFacts(Protocol):
    """What the policy looks at: a `Job` has all of it."""

    state: JobState
    attempt: int
    max_attempts: int
    cancel_requested: bool
    done: dict[str, Any] | None
    preemptions: int
    preempt_requested_at: Any


def keeps_going(job: dict[str, Any]) -> bool:
    """What a heartbeat answers (`should_continue`): false once the job's cancel or its
    attempt's preemption was asked for; the trainer then saves what it can and exits."""
    return not job["cancel_requested"] and job.get("preempt_requested_at") is None


def attempts_used(attempt: int, preemptions: int) -> int:
    """The attempts that count against max_attempts: preempted ones do not."""
    return attempt - preemptions


def retry_or_fail(job: JobFacts, reason: str, error_type: str | None) -> Decision:
    """A failure of the current attempt: retried when its cause is the platform's and an
    attempt is left; final otherwise."""
    kind = ErrorType(error_type or ErrorType.UNKNOWN_ERROR.value)
    if kind not in RETRYABLE_ERRORS:
        return Decision(Action.FAIL, reason, kind.value)
    if attempts_used(job.attempt, job.preemptions) >= job.max_attempts:
        return Decision(Action.FAIL, f"{reason} (attempt {job.attempt} of {job.max_attempts}; no attempts left)",
                        kind.value)
    return Decision(Action.RETRY, reason, kind.value)


def retry_delay_s(failed_attempt: int, base_s: float, max_s: float) -> float:
    """How long the attempt after `failed_attempt` waits before it starts: `base_s` after the
    first attempt, doubling with each attempt that failed again, at most `max_s`. An outage that
    outlasts one attempt's retries then costs the next attempt only if it outlasts the wait too."""
    if base_s <= 0:
        return 0.0
    return float(min(max_s, base_s * 2 ** max(0, failed_attempt - 1)))


def on_done(job: JobFacts, status: str, error: str | None, error_type: str | None) -> Decision:
    """The trainer's `done` arrived. A retry waits for the process to exit (the next attempt
    must not run beside it), and so does a cancel; success and final failures apply at once."""
    if job.cancel_requested:
        return Decision(Action.WAIT, "cancel requested")
    if status == "succeeded":
        return Decision(Action.SUCCEED, "trainer reported success")
    decision = retry_or_fail(job, error or "trainer reported failure", error_type)
    return Decision(Action.WAIT, decision.reason, decision.error_type) if decision.action is Action.RETRY else decision


def on_exit(job: JobFacts, outcome: dict[str, Any] | None, runner_error: str | None = None) -> Decision:
    """The attempt's process is gone. `outcome` is the runner's report of the exit (None when
    the runner died: `runner_error` then says why, as one sentence, runtime/deaths.py)."""
    if job.state.is_terminal:
        return Decision(Action.NOTHING)
    if job.cancel_requested:
        return Decision(Action.CANCEL, "cancelled by request")
    done = job.done
    if done is not None and done.get("status") == "failed":
        return retry_or_fail(job, done.get("error") or "trainer reported failure", done.get("error_type"))
    if job.preempt_requested_at is not None:  # however it ended once asked to stop (it may have been killed)
        return Decision(Action.PREEMPT, "stopped for a job of higher priority")
    if outcome is None:
        return retry_or_fail(job, runner_error or "the runner actor died (cause unknown)",
                             ErrorType.INFRASTRUCTURE_ERROR.value)
    code = outcome["returncode"]
    # a gang's attempt ends with the first rank whose trainer ended badly (runtime/gang.py)
    who = f"rank {outcome['rank']}'s trainer" if outcome.get("rank") else "trainer"
    if code < 0:
        return retry_or_fail(job, f"{who} process killed by {outcome.get('signal', -code)}",
                             ErrorType.INFRASTRUCTURE_ERROR.value)
    if code == EXIT_CALLBACK_FAILURE:
        return retry_or_fail(job, f"{who} could not reach the backend (exit code 2)", ErrorType.NETWORK_ERROR.value)
    if outcome.get("rank"):  # it does not report for the job: its exit is all there is to say
        return Decision(Action.FAIL, f"{who} exited with code {code}", ErrorType.UNKNOWN_ERROR.value)
    return Decision(Action.FAIL, f"trainer exited with code {code} without sending done",
                    ErrorType.UNKNOWN_ERROR.value)


def on_lost(job: JobFacts, reason: str, retryable: bool = True) -> Decision:
    """The attempt cannot run: its runner is gone (a node lost, the platform restarted) or could
    not start. `retryable` is False when starting it failed for a reason a retry repeats."""
    if job.state.is_terminal:
        return Decision(Action.NOTHING)
    if job.cancel_requested:
        return Decision(Action.CANCEL, "cancelled by request")
    if job.preempt_requested_at is not None:
        return Decision(Action.PREEMPT, f"stopped for a job of higher priority ({reason})")
    if not retryable:
        return Decision(Action.FAIL, reason, ErrorType.INFRASTRUCTURE_ERROR.value)
    return retry_or_fail(job, reason, ErrorType.INFRASTRUCTURE_ERROR.value)
