"""The access model's one table (ray_app/teams/policy.py), decided for every role and action."""

from __future__ import annotations

import pytest

from ray_app.teams.policy import REQUIRED, Action, Decision, Principal, Role, decide, refusal

P = "vision"


def who(role: Role | None, admin: bool = False, user: str = "alice") -> Principal:
    return Principal(user, "laptop", platform_admin=admin, roles={P: role} if role else {"other": Role.ADMIN})


@pytest.mark.parametrize("action", list(Action))
def test_every_action_has_a_required_role(action):
    assert action in REQUIRED


@pytest.mark.parametrize(("role", "allowed"), [
    (Role.VIEWER, {Action.READ}),
    (Role.MEMBER, {Action.READ, Action.SUBMIT, Action.PREDICT, Action.EXPORT, Action.CANCEL}),
    (Role.ADMIN, set(Action)),
])
def test_each_role_may_do_what_the_table_says_in_its_project(role, allowed):
    for action in Action:
        expected = Decision.ALLOW if action in allowed else Decision.FORBID
        assert decide(who(role), action, P, owner="alice") is expected, action


def test_a_member_cancels_their_own_jobs_only_and_an_admin_anyones():
    assert decide(who(Role.MEMBER), Action.CANCEL, P, owner="alice") is Decision.ALLOW
    assert decide(who(Role.MEMBER), Action.CANCEL, P, owner="bob") is Decision.FORBID
    assert decide(who(Role.MEMBER), Action.CANCEL, P, owner=None) is Decision.FORBID  # made before teams
    assert decide(who(Role.ADMIN), Action.CANCEL, P, owner="bob") is Decision.ALLOW
    assert "only what they created" in refusal(who(Role.MEMBER), Action.CANCEL, P)


@pytest.mark.parametrize("action", list(Action))
def test_outside_the_project_everything_is_hidden_and_a_platform_admin_may_all(action):
    assert decide(who(None), action, P) is Decision.HIDE  # an admin elsewhere is nobody here
    assert decide(who(None, admin=True), action, P) is Decision.ALLOW


def test_what_a_caller_may_list():
    assert who(Role.VIEWER).visible_projects() == [P]
    assert who(None, admin=True).visible_projects() is None
    assert who(Role.VIEWER).sees(P) and not who(Role.VIEWER).sees("secret")


def test_a_refusal_names_the_role_held_and_the_role_needed():
    assert refusal(who(Role.VIEWER), Action.SUBMIT, P) == "your role in project vision is viewer; submit takes member"
