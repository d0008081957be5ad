"""Users, personal tokens, projects and members in the job database (issue 29).

Reads are functions on a connection (the API runs them on its replica's engine: a token is looked
up on every request, never through the single writer); writes are the store's operations
(`TeamWriter`, a layer of JobStoreCore), so a membership change and a job's creation never
interleave. Nothing here decides who may do what: that is teams/policy.py.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ray_app.jobs.errors import Conflict, StoreError
from ray_app.store import db
from ray_app.store.writer import Writer
from ray_app.teams.policy import Role

Row = dict[str, Any]


class UserNotFound(StoreError):
    status_code = 404


class ProjectNotFound(StoreError):
    status_code = 404


class TokenNotFound(StoreError):
    status_code = 404


# ---------------------------------------------------------------- reads on a connection

_TOKEN_COLUMNS = (db.api_tokens.c.id.label("token_id"), db.api_tokens.c.name.label("token_name"),
                  db.api_tokens.c.expires_at, db.api_tokens.c.revoked_at, db.api_tokens.c.last_used_at,
                  db.users.c.id.label("user_id"), db.users.c.platform_admin, db.users.c.disabled_at)


def token_owner(conn: Connection, secret_hash: str) -> Row | None:
    """The token with this hash and its user (whether revoked, expired or disabled: the caller
    says which), with the user's role in each project (`roles`: {project id: role name})."""
    found = conn.execute(select(*_TOKEN_COLUMNS).join(db.users, db.users.c.id == db.api_tokens.c.user_id)
                         .where(db.api_tokens.c.secret_hash == secret_hash)).first()
    if found is None:
        return None
    row = dict(found._mapping)
    row["roles"] = memberships(conn, row["user_id"])
    return row


def memberships(conn: Connection, user_id: str) -> dict[str, str]:
    stmt = select(db.project_members.c.project_id, db.project_members.c.role).where(
        db.project_members.c.user_id == user_id)
    return {r[0]: r[1] for r in conn.execute(stmt)}


def get_user(conn: Connection, user_id: str) -> Row:
    found = conn.execute(select(db.users).where(db.users.c.id == user_id)).first()
    if found is None:
        raise UserNotFound(f"user {user_id} not found")
    return dict(found._mapping)


def list_users(conn: Connection) -> list[Row]:
    return db.rows(conn.execute(select(db.users).order_by(db.users.c.id)))


# what is shown of a token: everything but its hash
_SHOWN_TOKEN_COLUMNS = [c for c in db.api_tokens.c if c.name != "secret_hash"]


def list_tokens(conn: Connection, user_id: str) -> list[Row]:
    """A user's tokens, newest first, without their hashes."""
    return db.rows(conn.execute(select(*_SHOWN_TOKEN_COLUMNS).where(db.api_tokens.c.user_id == user_id)
                                .order_by(db.api_tokens.c.created_at.desc(), db.api_tokens.c.id)))


def token_row(conn: Connection, token_id: str) -> Row:
    """One token, without its hash."""
    found = conn.execute(select(*_SHOWN_TOKEN_COLUMNS).where(db.api_tokens.c.id == token_id)).first()
    if found is None:
        raise TokenNotFound(f"token {token_id} not found")
    return dict(found._mapping)


def project_row(conn: Connection, project_id: str) -> Row | None:
    found = conn.execute(select(db.projects).where(db.projects.c.id == project_id)).first()
    return dict(found._mapping) if found is not None else None


def members(conn: Connection, project_id: str) -> list[Row]:
    return db.rows(conn.execute(select(db.project_members).where(db.project_members.c.project_id == project_id)
                                .order_by(db.project_members.c.user_id)))


def get_project(conn: Connection, project_id: str) -> Row:
    project = project_row(conn, project_id)
    if project is None:
        raise ProjectNotFound(f"project {project_id} not found")
    return {**project, "members": members(conn, project_id)}


def list_projects(conn: Connection, only: list[str] | None) -> list[Row]:
    """Every project (`only` None), or those named."""
    stmt = select(db.projects).order_by(db.projects.c.id)
    if only is not None:
        stmt = stmt.where(db.projects.c.id.in_(only))
    return db.rows(conn.execute(stmt))


# ---------------------------------------------------------------- the writer's operations


class TeamWriter(Writer):
    def create_user(self, user_id: str, display_name: str, platform_admin: bool, created_by: str) -> Row:
        with self.engine.begin() as conn:
            if conn.execute(select(db.users.c.id).where(db.users.c.id == user_id)).first() is not None:
                raise Conflict(f"user {user_id} exists")
            conn.execute(db.users.insert().values(id=user_id, display_name=display_name, platform_admin=platform_admin,
                                                  created_at=db.utcnow(), created_by=created_by))
            return get_user(conn, user_id)

    def set_user_disabled(self, user_id: str, disabled: bool) -> Row:
        """Idempotent. A disabled user's tokens stop working at once (the lookup reads it)."""
        with self.engine.begin() as conn:
            user = get_user(conn, user_id)
            if bool(user["disabled_at"]) != disabled:
                conn.execute(update(db.users).where(db.users.c.id == user_id)
                             .values(disabled_at=db.utcnow() if disabled else None))
            return get_user(conn, user_id)

    def create_token(self, user_id: str, name: str, secret_hash: str, expires_at: datetime | None) -> Row:
        """A new token of `user_id` (only its hash is given). Conflict when the user has a live
        token of the same name (names tell a user's tokens apart in lists and the audit log)."""
        now = db.utcnow()
        with self.engine.begin() as conn:
            get_user(conn, user_id)
            same = conn.execute(select(db.api_tokens.c.id, db.api_tokens.c.expires_at).where(
                db.api_tokens.c.user_id == user_id, db.api_tokens.c.name == name,
                db.api_tokens.c.revoked_at.is_(None))).all()
            if any(r.expires_at is None or r.expires_at > now for r in same):
                raise Conflict(f"you have a token named {name!r}; revoke it or choose another name")
            token_id = uuid.uuid4().hex[:16]
            try:
                conn.execute(db.api_tokens.insert().values(id=token_id, user_id=user_id, name=name,
                                                           secret_hash=secret_hash, created_at=now,
                                                           expires_at=expires_at))
            except IntegrityError:  # a repeated hash: the caller made the same secret twice
                raise Conflict("token could not be stored; try again") from None
            return token_row(conn, token_id)

    def revoke_token(self, token_id: str, user_id: str | None) -> Row:
        """Revoke a token (of `user_id`, or anyone's for None). Idempotent."""
        with self.engine.begin() as conn:
            stmt = select(db.api_tokens.c.user_id).where(db.api_tokens.c.id == token_id)
            owner = conn.execute(stmt).scalar()
            if owner is None or (user_id is not None and owner != user_id):
                raise TokenNotFound(f"token {token_id} not found")
            conn.execute(update(db.api_tokens).where(db.api_tokens.c.id == token_id,
                                                     db.api_tokens.c.revoked_at.is_(None))
                         .values(revoked_at=db.utcnow()))
            return token_row(conn, token_id)

    def token_used(self, token_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(db.api_tokens).where(db.api_tokens.c.id == token_id).values(last_used_at=db.utcnow()))

    def create_project(self, project_id: str, description: str, created_by: str, exist_ok: bool = False) -> Row:
        with self.engine.begin() as conn:
            if project_row(conn, project_id) is not None:
                if exist_ok:
                    return get_project(conn, project_id)
                raise Conflict(f"project {project_id} exists")
            conn.execute(db.projects.insert().values(id=project_id, description=description,
                                                     created_at=db.utcnow(), created_by=created_by))
            return get_project(conn, project_id)

    def set_member(self, project_id: str, user_id: str, role: str, added_by: str) -> Row:
        """Add a member, or change their role."""
        Role.parse(role)
        with self.engine.begin() as conn:
            get_project(conn, project_id)
            get_user(conn, user_id)
            done = conn.execute(update(db.project_members).where(
                db.project_members.c.project_id == project_id, db.project_members.c.user_id == user_id)
                .values(role=role))
            if done.rowcount == 0:
                conn.execute(db.project_members.insert().values(project_id=project_id, user_id=user_id, role=role,
                                                                added_at=db.utcnow(), added_by=added_by))
            return get_project(conn, project_id)

    def remove_member(self, project_id: str, user_id: str) -> Row:
        """Idempotent: a user who is not a member stays not one."""
        with self.engine.begin() as conn:
            get_project(conn, project_id)
            conn.execute(delete(db.project_members).where(db.project_members.c.project_id == project_id,
                                                          db.project_members.c.user_id == user_id))
            return get_project(conn, project_id)
