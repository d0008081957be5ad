"""The error statuses the routes document in OpenAPI, so that generated clients and schema-based
testers expect exactly what the server answers. Every error body is `{"detail": ...}`: a string,
or for 422 the list of `{loc, msg, type}` that FastAPI documents itself."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="allow")  # a refused heartbeat also says should_continue
    detail: str


def _doc(description: str) -> dict[str, Any]:
    return {"description": description, "model": ErrorBody}


# FastAPI's `responses=`: status code -> OpenAPI response
Responses = dict[int | str, dict[str, Any]]

UNAUTHORIZED: Responses = {401: _doc("missing, invalid, revoked or expired API token, or a disabled user")}
FORBIDDEN: Responses = {403: _doc("your role does not allow this (a resource you cannot see answers 404)")}
USER_ROUTE: Responses = {**UNAUTHORIZED, **FORBIDDEN}
CALLBACK_UNAUTHORIZED: Responses = {401: _doc("missing, malformed, forged, expired, other-job or stale-attempt token")}
NOT_FOUND: Responses = {404: _doc("unknown job, or one in a project you are not a member of")}
PROJECT_NOT_FOUND: Responses = {404: _doc("unknown project, or one you are not a member of")}
USER_NOT_FOUND: Responses = {404: _doc("unknown user or token")}
DATASET_NOT_FOUND: Responses = {404: _doc("unknown dataset or version, or one in a project you are not a member of")}
SWEEP_NOT_FOUND: Responses = {404: _doc("unknown sweep, or one in a project you are not a member of")}
CONFLICT: Responses = {409: _doc("the job cannot take this request in its state")}
TOO_LARGE: Responses = {413: _doc("request body over the size limit (VTP_MAX_BODY_BYTES, VTP_MAX_UPLOAD_BYTES)")}
