"""Reading a job's Server-Sent Events stream (GET /v1/jobs/{id}/stream): the wire format parsed
into typed messages, and where to resume after a dropped connection (the last `id`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ray_app.jobs.api_models import EventView, JobView, LogLine


@dataclass(frozen=True)
class StreamMessage:
    kind: str  # job | event | log | end
    id: str | None
    data: Any  # JobView for job and end, EventView for event, LogLine for log

    @property
    def job(self) -> JobView:
        assert isinstance(self.data, JobView)
        return self.data


_MODELS: dict[str, type[BaseModel]] = {"job": JobView, "end": JobView, "event": EventView, "log": LogLine}


def parse(lines: Iterable[str]) -> Iterator[StreamMessage]:
    """SSE text lines → messages (comments and unknown kinds skipped)."""
    kind: str = "message"
    ident: str | None = None
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data and kind in _MODELS:
                yield StreamMessage(kind, ident, _MODELS[kind].model_validate_json("\n".join(data)))
            kind, data = "message", []
            continue
        if line.startswith(":"):
            continue  # a ping
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            kind = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            ident = value
