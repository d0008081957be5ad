"""The export API's bodies and views: POST /v1/jobs/{id}/exports and its reads
(ray_app/api/routes/exports.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ray_app.jobs.model_bases import Strict, View
from ray_app.jobs.types import Timestamp

ExportState = Literal["pending", "running", "succeeded", "failed"]
FINAL_EXPORT_STATES = ("succeeded", "failed")  # never changed again (store/exports.py)


class ExportCreate(Strict):
    """POST /v1/jobs/{id}/exports."""

    format: str = Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_]+$", examples=["onnx"],
                        description="a format the job's trainer lists in its manifest (export_formats)")
    image_size: int | None = Field(default=None, strict=True, ge=8, le=8192,
                                   description="input size of the exported model; default: the job's")
    half: bool = Field(default=False, strict=True, description="FP16 weights (formats that support it)")
    dynamic: bool = Field(default=False, strict=True, description="dynamic batch (and image) axes")


class ExportFile(BaseModel):
    name: str = Field(description="its name among the job's artifacts: GET /v1/jobs/{id}/artifacts/{name}")
    size_bytes: int
    uri: str


class ExportView(View):
    id: str
    job_id: str
    format: str
    options: dict[str, Any] = Field(description="image_size, half, dynamic")
    state: ExportState
    files: list[ExportFile] = Field(default_factory=list)
    error: str | None = None
    created_at: Timestamp
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None


class ExportPage(BaseModel):
    items: list[ExportView]
