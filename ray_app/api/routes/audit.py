"""GET /v1/audit: the audit log, newest first, for platform admins (api/audit.py writes it)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from ray_app.api.access import Who
from ray_app.api.documented import USER_ROUTE
from ray_app.store.audit import audit_page
from ray_app.teams.models import AuditEntry, AuditPage

router = APIRouter(tags=["teams"], responses=USER_ROUTE)


@router.get("/v1/audit", response_model=AuditPage, summary="Every mutating call: who, what, on what, how it ended")
async def list_audit(
    who: Who,
    user_id: Annotated[str | None, Query(max_length=64)] = None,
    project_id: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[str | None, Query(max_length=64, description="e.g. cancel_job")] = None,
    resource: Annotated[str | None, Query(max_length=300, description="e.g. job:<id>")] = None,
    since: Annotated[datetime | None, Query(description="only entries at or after this time")] = None,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,18}$", description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditPage:
    who.require_platform_admin()
    filters = {"user_id": user_id, "project_id": project_id, "action": action, "resource": resource, "since": since}
    items, next_cursor = await who.ctx.read(audit_page, filters, int(cursor) if cursor else None, limit)
    return AuditPage(items=[AuditEntry.model_validate(e) for e in items],
                     next_cursor=str(next_cursor) if next_cursor is not None else None)
