"""The attempt history of a job: one row per attempt (DESIGN §11).

The job row describes the job's outcome (its `error` is why it failed, and nothing once it
succeeded); what happened to each try is here: when it was queued, started and ended, on which
node and in which process (pid, process group), how the trainer exited, the error type and
reason, the checkpoint it resumed from, and whether its output is all stored.

A row is written when the attempt's trainer process starts (the runner reports where it runs, so
the controller can end what a dead runner left behind), completed in the same transaction as the
state change that ends the attempt, and filled in with the node and exit once the controller has
seen the process go. Every function returns the job's history as a new list (rows are never
changed in place), so a transaction that fails can put the previous list back.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from ray_app.store import db

History = list[dict[str, Any]]

# what the controller may tell about how an attempt ended (all optional)
ENDED_FIELDS = ("node_id", "exit_code", "signal")
_EMPTY: dict[str, Any] = {column.name: None for column in db.attempts.columns} | {"output_complete": False}


def started(conn: Connection, history: History, job_id: str, attempt: int, node_id: str | None,
            pid: int | None, pgid: int | None, rank: int = 0) -> History:
    """A trainer process of the attempt runs: where, and as which process and group. Every
    rank's goes into `ranks`; rank 0's (the one that reports for the job) is also the row's own."""
    row = next((r for r in history if r["attempt"] == attempt), None)
    entry = {"rank": rank, **_ended({"node_id": node_id}), "pid": pid, "pgid": pgid}
    ranks = sorted([r for r in (row or {}).get("ranks") or [] if r.get("rank") != rank] + [entry],
                   key=lambda r: r["rank"])
    own = _ended({"node_id": node_id}) | {"pid": pid, "pgid": pgid} if rank == 0 else {}
    return _record(conn, history, job_id, attempt, **own, ranks=ranks)


def ranks_of(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Where each rank of an attempt runs: [{rank, node_id, pid}] (rank 0 alone for a row from
    before gangs)."""
    ranks = row.get("ranks")
    if isinstance(ranks, list):
        return [{"rank": r.get("rank"), "node_id": r.get("node_id"), "pid": r.get("pid")}
                for r in ranks if isinstance(r, dict) and isinstance(r.get("rank"), int)]
    if row.get("pid") is not None:
        return [{"rank": 0, "node_id": row.get("node_id"), "pid": row.get("pid")}]
    return []


def close(conn: Connection, history: History, job: dict[str, Any], outcome: str, reason: str | None,
          error_type: str | None, ended: dict[str, Any] | None = None) -> History:
    """The job's current attempt ends now with `outcome`."""
    row = next((r for r in history if r["attempt"] == job["attempt"]), _EMPTY)
    known = {k: v for k, v in _ended(ended).items() if v is not None or row.get(k) is None}
    return _record(conn, history, job["id"], job["attempt"], outcome=outcome, queued_at=job.get("queued_at"),
                   started_at=job.get("started_at"), ended_at=db.utcnow(), **known, error_type=error_type,
                   reason=reason, resume_from=job.get("resume_from"))


def fill(conn: Connection, history: History, job_id: str, attempt: int, ended: dict[str, Any] | None) -> History:
    """What was not known when the attempt ended (an attempt that ended with its `done` is
    closed then; its node and exit code come once the controller has seen its process go)."""
    row = next((r for r in history if r["attempt"] == attempt), None)
    if row is None:
        return history
    changes = {k: v for k, v in _ended(ended).items() if v is not None and row.get(k) is None}
    return _record(conn, history, job_id, attempt, **changes) if changes else history


def output_complete(conn: Connection, history: History, job_id: str, attempt: int) -> History:
    """The runner has stored the attempt's last output line: a reader following the logs has all."""
    return _record(conn, history, job_id, attempt, output_complete=True)


def process(history: History, attempt: int) -> dict[str, Any] | None:
    """Where the attempt's trainer processes run: rank 0's node_id, pid, pgid, and `ranks`,
    every rank's [{rank, node_id, pid, pgid}], as far as their runners said."""
    row = next((r for r in history if r["attempt"] == attempt), None)
    if row is None:
        return None
    ranks = [r for r in row.get("ranks") or [] if r.get("pgid") is not None]
    if row["pgid"] is None and not ranks:
        return None
    if not ranks:
        ranks = [{"rank": 0, "node_id": row["node_id"], "pid": row["pid"], "pgid": row["pgid"]}]
    return {"node_id": row["node_id"], "pid": row["pid"], "pgid": row["pgid"], "ranks": ranks}


def _record(conn: Connection, history: History, job_id: str, attempt: int, **values: Any) -> History:
    existing = next((r for r in history if r["attempt"] == attempt), None)
    if existing is None:
        row = {**_EMPTY, "job_id": job_id, "attempt": attempt, **values}
        conn.execute(db.attempts.insert().values(**row))
        return sorted([*history, row], key=lambda r: r["attempt"])
    conn.execute(update(db.attempts).where(db.attempts.c.job_id == job_id, db.attempts.c.attempt == attempt)
                 .values(**values))
    return [{**r, **values} if r is existing else r for r in history]


def _ended(ended: dict[str, Any] | None) -> dict[str, Any]:
    ended = ended or {}
    out = {name: ended.get(name) for name in ENDED_FIELDS if name in ended}
    if out.get("signal") is not None:
        out["signal"] = str(out["signal"])[:16]
    if out.get("node_id") is not None:
        out["node_id"] = str(out["node_id"])[:64]
    if "exit_code" in out and (not isinstance(out["exit_code"], int) or isinstance(out["exit_code"], bool)):
        out["exit_code"] = None
    return out


def load(conn: Connection, job_ids: list[str] | None = None) -> dict[str, History]:
    query = select(db.attempts).order_by(db.attempts.c.job_id, db.attempts.c.attempt)
    if job_ids is not None:
        query = query.where(db.attempts.c.job_id.in_(job_ids))
    history: dict[str, History] = {}
    for row in db.rows(conn.execute(query)):
        history.setdefault(row["job_id"], []).append(row)
    return history
