"""Errors the store raises; the API maps each to its HTTP status.

They carry only a message string so that they cross Ray's process boundary unchanged.
"""

from __future__ import annotations


class StoreError(Exception):
    status_code = 400

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class JobNotFound(StoreError):
    status_code = 404


class Conflict(StoreError):
    """An invalid transition, a second different `done`, a callback to a finished job."""

    status_code = 409


class StaleAttempt(StoreError):
    """A callback whose token belongs to an attempt that is no longer the current one."""

    status_code = 401
