"""The attempt history of a job: one row per attempt that ended (DESIGN §11).

The job row describes the job's outcome (its `error` is why it failed, and nothing once it
succeeded); what happened to each earlier try is here: when it was queued, started and ended,
on which node, how the trainer exited, the error type and reason, and the checkpoint it resumed
from. Written by the store in the same transaction as the state change that ends the attempt.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from ray_app.store import db

# what the controller may tell about how an attempt ended (all optional)
ENDED_FIELDS = ("node_id", "exit_code", "signal")


def close(conn: Connection, job: dict[str, Any], outcome: str, reason: str | None,
          error_type: str | None, ended: dict[str, Any] | None = None) -> dict[str, Any]:
    """The row for the job's current attempt, which ends now with `outcome`."""
    row = {
        "job_id": job["id"], "attempt": job["attempt"], "outcome": outcome,
        "queued_at": job.get("queued_at"), "started_at": job.get("started_at"), "ended_at": db.utcnow(),
        **_ended(ended), "error_type": error_type, "reason": reason, "resume_from": job.get("resume_from"),
    }
    conn.execute(db.attempts.insert().values(**row))
    return row


def fill(conn: Connection, row: dict[str, Any], ended: dict[str, Any] | None) -> dict[str, Any]:
    """What was not known when the row was written (an attempt that ended with its `done` is
    written then; its node and exit code come once the controller has seen its process go)."""
    changes = {k: v for k, v in _ended(ended).items() if v is not None and row.get(k) is None}
    if changes:
        conn.execute(update(db.attempts).where(db.attempts.c.job_id == row["job_id"],
                                               db.attempts.c.attempt == row["attempt"]).values(**changes))
    return changes


def _ended(ended: dict[str, Any] | None) -> dict[str, Any]:
    ended = ended or {}
    out = {name: ended.get(name) for name in ENDED_FIELDS}
    if out["signal"] is not None:
        out["signal"] = str(out["signal"])[:16]
    if out["node_id"] is not None:
        out["node_id"] = str(out["node_id"])[:64]
    if not isinstance(out["exit_code"], int) or isinstance(out["exit_code"], bool):
        out["exit_code"] = None
    return out


def load(conn: Connection) -> dict[str, list[dict[str, Any]]]:
    history: dict[str, list[dict[str, Any]]] = {}
    for row in db.rows(conn.execute(select(db.attempts).order_by(db.attempts.c.job_id, db.attempts.c.attempt))):
        history.setdefault(row["job_id"], []).append(row)
    return history


def view(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "job_id"}
