"""When a request is sent again (tenacity): connection failures, and 429/502/503/504 answers
(a restarting replica, an overloaded proxy), with exponential backoff and jitter. Only requests
that are safe to repeat retry on everything; the others (creating a job) only when the request
never left (the connection could not be made)."""

from __future__ import annotations

from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
ATTEMPTS = 5
MAX_DELAY_S = 60.0


class RetryableStatus(Exception):
    def __init__(self, response: httpx.Response):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _should_retry(idempotent: bool):
    def check(exc: BaseException) -> bool:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return True  # nothing was sent
        return idempotent and isinstance(exc, httpx.TransportError | RetryableStatus)
    return check


def _options(idempotent: bool, attempts: int) -> dict[str, Any]:
    return {"retry": retry_if_exception(_should_retry(idempotent)),
            "stop": stop_after_attempt(attempts) | stop_after_delay(MAX_DELAY_S),
            "wait": wait_exponential_jitter(initial=0.2, max=5.0), "reraise": True}


def retrying(idempotent: bool, attempts: int = ATTEMPTS) -> Retrying:
    return Retrying(**_options(idempotent, attempts))


def async_retrying(idempotent: bool, attempts: int = ATTEMPTS) -> AsyncRetrying:
    return AsyncRetrying(**_options(idempotent, attempts))
