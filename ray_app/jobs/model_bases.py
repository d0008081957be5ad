"""The two kinds of model the API is made of: request bodies (strict) and views of stored rows."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from ray_app.jobs.types import readable


class Strict(BaseModel):
    """A request body: unknown fields refused; value rules in ray_app/jobs/types.py."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class View(BaseModel):
    """A response built from stored values: made readable first (types.readable), so no row,
    however it was written, can fail a read."""

    @model_validator(mode="before")
    @classmethod
    def _readable(cls, data: Any) -> Any:
        return readable(data) if isinstance(data, dict) else data
