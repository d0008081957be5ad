"""The job state machine, as one table.

PENDING    the record is written
QUEUED     a runner actor for the current attempt is requested (waiting for resources)
RUNNING    the trainer reported `started` or a first heartbeat
SUCCEEDED | FAILED | CANCELLED   terminal, final

A retry (an infrastructure failure with attempts left) moves a QUEUED or RUNNING job back to
QUEUED with the attempt number raised; that is the only edge that goes "backwards".
"""

from __future__ import annotations

import enum

from ray_app.jobs.errors import Conflict


class JobState(str, enum.Enum):
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

# from-state -> the states it may move to. Anything not listed is refused.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.QUEUED, JobState.FAILED, JobState.CANCELLED}),
    JobState.QUEUED: frozenset(
        {JobState.QUEUED, JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.RUNNING: frozenset(
        {JobState.QUEUED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class InvalidTransition(Conflict):
    """A transition the table does not allow; the API answers it with 409.

    One message argument only, like every store error, so it crosses Ray's process boundary."""


def can_transition(current: JobState, target: JobState) -> bool:
    return target in TRANSITIONS[current]


def check_transition(job_id: str, current: JobState, target: JobState) -> None:
    if not can_transition(current, target):
        raise InvalidTransition(f"job {job_id} is {current.value}; cannot move to {target.value}")
