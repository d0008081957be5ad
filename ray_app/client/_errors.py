"""What a refused or failed request raises."""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """The API answered with an error: `status` and the server's `detail` (a message, or for 422
    the list of {loc, msg, type} naming each bad field)."""

    def __init__(self, status: int, detail: Any):
        super().__init__(f"HTTP {status}: {_readable(detail)}")
        self.status = status
        self.detail = detail


class TransportError(APIError):
    """The API (or the storage a presigned URL names) could not be reached, after the retries."""

    def __init__(self, detail: str):
        super().__init__(0, detail)
        self.args = (detail,)

    def __str__(self) -> str:
        return str(self.detail)


def _readable(detail: Any) -> str:
    if isinstance(detail, list):  # FastAPI's 422: name each field
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}"
                         if isinstance(e, dict) else str(e) for e in detail)
    return str(detail)
