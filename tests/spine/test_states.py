"""The transition table: every pair, and the properties the platform relies on."""

import itertools

import pytest

from ray_app.jobs.states import TERMINAL_STATES, TRANSITIONS, InvalidTransition, JobState, check_transition

ALLOWED = {
    ("PENDING", "QUEUED"), ("PENDING", "FAILED"), ("PENDING", "CANCELLED"),
    ("QUEUED", "QUEUED"), ("QUEUED", "RUNNING"), ("QUEUED", "FAILED"), ("QUEUED", "CANCELLED"),
    ("RUNNING", "QUEUED"), ("RUNNING", "SUCCEEDED"), ("RUNNING", "FAILED"), ("RUNNING", "CANCELLED"),
}


@pytest.mark.parametrize("current,target", list(itertools.product(JobState, JobState)))
def test_every_pair_matches_the_table(current, target):
    if (current.value, target.value) in ALLOWED:
        check_transition("j", current, target)
    else:
        with pytest.raises(InvalidTransition, match=f"is {current.value}; cannot move to {target.value}"):
            check_transition("j", current, target)


def test_terminal_states_are_final():
    assert TERMINAL_STATES == {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    for state in TERMINAL_STATES:
        assert TRANSITIONS[state] == frozenset() and state.is_terminal


def test_success_only_from_running():
    assert [s for s in JobState if JobState.SUCCEEDED in TRANSITIONS[s]] == [JobState.RUNNING]
