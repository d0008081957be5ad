"""The audit log in the job database: appended by the single writer, read by SQL (issue 29).

Append-only: the platform has no operation that changes or deletes an entry. An entry says who
(user and token name), what (the action and the route's method and path), on what (resource and
project), how it ended (the HTTP status) and which request it was; never a secret or a value from
a request's body (api/audit.py builds it from the route and the caller alone).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from ray_app.store import db
from ray_app.store.writer import Writer

Row = dict[str, Any]
FILTERS = ("user_id", "project_id", "action", "resource")


def audit_page(conn: Connection, filters: dict[str, Any], before: int | None, limit: int,
               projects: list[str] | None = None) -> tuple[list[Row], int | None]:
    """Newest first; `before`: the seq of the previous page's last entry; `projects`: only
    entries of these projects (None: all)."""
    stmt = select(db.audit_log)
    for name in FILTERS:
        if filters.get(name) is not None:
            stmt = stmt.where(db.audit_log.c[name] == filters[name])
    if filters.get("since") is not None:
        stmt = stmt.where(db.audit_log.c.at >= filters["since"])
    if projects is not None:
        stmt = stmt.where(db.audit_log.c.project_id.in_(projects))
    if before is not None:
        stmt = stmt.where(db.audit_log.c.seq < before)
    found = db.rows(conn.execute(stmt.order_by(db.audit_log.c.seq.desc()).limit(limit + 1)))
    page = found[:limit]
    return page, page[-1]["seq"] if len(found) > limit else None


class AuditWriter(Writer):
    def append_audit(self, entries: list[Row]) -> None:
        with self.engine.begin() as conn:
            conn.execute(db.audit_log.insert(), [{**e, "at": e.get("at") or db.utcnow()} for e in entries])
