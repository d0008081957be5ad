"""What an ended attempt means for its job: one pure function, tested as a table.

The controller calls it when an attempt's process has exited or its runner actor died, with the
job as the store has it (state, whether `done` came, whether cancel was asked).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ray_app.jobs.schemas import RETRYABLE_ERRORS, ErrorType


class Action(str, enum.Enum):
    NOTHING = "nothing"  # the job is already final
    CANCEL = "cancel"  # cancel was requested and the processes are gone
    RETRY = "retry"  # infrastructure failure: next attempt, resuming from the last checkpoint
    FAIL = "fail"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""
    error_type: str | None = None


EXIT_CALLBACK_FAILURE = 2  # the contract's "backend unreachable"


def decide(job: dict[str, Any], outcome: dict[str, Any] | None, runner_error: str | None = None) -> Decision:
    """`outcome` is the runner's report of the exit (None when the runner died); `runner_error`
    says why the runner is gone in that case, as one sentence (deaths.py)."""
    if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
        return Decision(Action.NOTHING)
    if job["cancel_requested"]:
        return Decision(Action.CANCEL, "cancelled by request")
    done = job.get("done")
    if done is not None and done.get("status") == "failed":
        error_type = done.get("error_type") or ErrorType.UNKNOWN_ERROR.value
        reason = done.get("error") or "trainer reported failure"
        if ErrorType(error_type) in RETRYABLE_ERRORS:
            return Decision(Action.RETRY, reason, error_type)
        return Decision(Action.FAIL, reason, error_type)
    if outcome is None:
        return Decision(Action.RETRY, runner_error or "the runner actor died (cause unknown)",
                        ErrorType.INFRASTRUCTURE_ERROR.value)
    code = outcome["returncode"]
    if code < 0:
        return Decision(Action.RETRY, f"trainer process killed by {outcome.get('signal', -code)}",
                        ErrorType.INFRASTRUCTURE_ERROR.value)
    if code == EXIT_CALLBACK_FAILURE:
        return Decision(Action.RETRY, "trainer could not reach the backend (exit code 2)",
                        ErrorType.NETWORK_ERROR.value)
    if code == 0:
        return Decision(Action.FAIL, "trainer exited with code 0 without sending done",
                        ErrorType.UNKNOWN_ERROR.value)
    return Decision(Action.FAIL, f"trainer exited with code {code} without sending done",
                    ErrorType.UNKNOWN_ERROR.value)
