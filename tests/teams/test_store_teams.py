"""Users, tokens, projects and members in the store (store/teams.py), on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ray_app.jobs.errors import Conflict
from ray_app.store import teams
from ray_app.store.core import JobStoreCore
from ray_app.teams import tokens


@pytest.fixture
def store(database_url):
    return JobStoreCore(database_url)


def test_a_token_is_found_by_its_hash_with_its_user_and_roles(store):
    store.create_user("alice", "Alice", False, "admin")
    store.create_project("vision", "", "admin")
    store.set_member("vision", "alice", "member", "admin")
    secret = tokens.new_secret()
    row = store.create_token("alice", "laptop", tokens.secret_hash(secret), None)
    assert "secret_hash" not in row and row["name"] == "laptop"
    with store.engine.connect() as conn:
        found = teams.token_owner(conn, tokens.secret_hash(secret))
        assert found["user_id"] == "alice" and found["roles"] == {"vision": "member"}
        assert teams.token_owner(conn, tokens.secret_hash(tokens.new_secret())) is None
    store.set_member("vision", "alice", "admin", "admin")  # the same call changes a role
    store.remove_member("vision", "alice")
    store.remove_member("vision", "alice")  # idempotent
    with store.engine.connect() as conn:
        assert teams.token_owner(conn, tokens.secret_hash(secret))["roles"] == {}


def test_token_names_are_unique_among_a_users_live_tokens(store):
    store.create_user("bob", "", False, "admin")
    first = store.create_token("bob", "ci", tokens.secret_hash(tokens.new_secret()), None)
    with pytest.raises(Conflict, match="named 'ci'"):
        store.create_token("bob", "ci", tokens.secret_hash(tokens.new_secret()), None)
    store.revoke_token(first["id"], "bob")
    again = store.revoke_token(first["id"], "bob")  # idempotent: the first revocation's time stays
    assert again["revoked_at"] is not None
    store.create_token("bob", "ci", tokens.secret_hash(tokens.new_secret()), None)  # the name is free again
    past = datetime.now(UTC) - timedelta(hours=1)
    store.create_token("bob", "old", tokens.secret_hash(tokens.new_secret()), past)
    store.create_token("bob", "old", tokens.secret_hash(tokens.new_secret()), None)  # an expired one frees it too


def test_nobody_revokes_anothers_token_by_its_id(store):
    store.create_user("carol", "", False, "admin")
    store.create_user("dave", "", False, "admin")
    token = store.create_token("carol", "x", tokens.secret_hash(tokens.new_secret()), None)
    with pytest.raises(teams.TokenNotFound):
        store.revoke_token(token["id"], "dave")
    assert store.revoke_token(token["id"], None)["revoked_at"] is not None  # the platform's own call


def test_the_bootstrap_admin_and_the_default_project_exist_from_the_migration(store):
    with store.engine.connect() as conn:
        assert teams.get_user(conn, "admin")["platform_admin"] is True
        assert "default" in [p["id"] for p in teams.list_projects(conn, None)]
    with pytest.raises(Conflict):
        store.create_user("admin", "", False, "admin")
    with pytest.raises(teams.UserNotFound):
        store.set_member("default", "nobody", "viewer", "admin")
