"""Micro-batching of trainer callbacks between the HTTP layer and the JobStore.

Each heartbeat or event is one small write; sent one actor call (and one database commit) each,
the store's per-call overhead is what limits ingestion. `BatchingStoreClient` collects the
callbacks that arrive while the previous batch is in flight (plus a short linger, at most
`max_items` per batch), sends them as ONE `apply_callbacks` call (one transaction, one commit,
a savepoint per item), and resolves every waiting request with its own result or its own error.

Delivery guarantees are unchanged: a request is answered only after its batch has committed, so a
200 still means "applied once and durable"; an item's StoreError (404/409/401) reaches only that
item's request; a batch whose call fails (store died, database error) fails all of its requests
with that error, and the trainer retries with the same idempotency key.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray_app.config import Settings
from ray_app.store.client import CallbackItem, StoreClient

log = logging.getLogger("ray_app.api.batching")


class BatchingStoreClient(StoreClient):
    """A StoreClient whose heartbeat and event calls are batched; every other call is its own."""

    def __init__(self, settings: Settings, handle: Any = None, max_items: int = 256, linger_s: float = 0.001):
        super().__init__(settings, handle)
        self.max_items = max_items
        self.linger_s = linger_s
        self._pending: list[tuple[CallbackItem, asyncio.Future]] = []
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self.batches = 0
        self.items = 0

    async def heartbeat(self, job_id: str, token_attempt: int, body: dict[str, Any]) -> dict[str, Any]:
        return await self._enqueue(("heartbeat", job_id, token_attempt, body))

    async def event(self, job_id: str, token_attempt: int, body: dict[str, Any]) -> dict[str, Any]:
        return await self._enqueue(("event", job_id, token_attempt, body))

    async def _enqueue(self, item: CallbackItem) -> Any:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._run(), name="callback-batcher")
        future: asyncio.Future = loop.create_future()
        self._pending.append((item, future))
        assert self._wakeup is not None
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            if self.linger_s and len(self._pending) < self.max_items:
                await asyncio.sleep(self.linger_s)
            batch, self._pending = self._pending[: self.max_items], self._pending[self.max_items:]
            if not self._pending:
                self._wakeup.clear()
            # a request whose client went away is still applied (it may be retried: idempotent)
            try:
                results = await self.apply_callbacks([item for item, _ in batch])
            except BaseException as exc:  # the whole batch failed: nothing of it was committed
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            self.batches += 1
            self.items += len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
