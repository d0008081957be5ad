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


def messages(lines: Iterable[str], pings: bool = False) -> Iterator[tuple[str, str | None, str] | None]:
    """SSE text lines → (event, id, data) per message, whatever its kind; with `pings`, None for
    each comment line too (a reader that keeps a deadline sees time pass on an idle stream)."""
    kind: str = "message"
    ident: str | None = None
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield kind, ident, "\n".join(data)
            kind, data = "message", []
            continue
        if line.startswith(":"):
            if pings:
                yield None
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            kind = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            ident = value


def parse(lines: Iterable[str]) -> Iterator[StreamMessage]:
    """A job's stream → typed messages (comments and unknown kinds skipped)."""
    for message in messages(lines):
        if message is not None and message[0] in _MODELS:
            kind, ident, data = message
            yield StreamMessage(kind, ident, _MODELS[kind].model_validate_json(data))
