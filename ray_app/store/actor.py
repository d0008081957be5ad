"""The JobStore actor: detached, named, in the platform's namespace; the single writer.

Ray restarts it if its process dies (max_restarts=-1), and whoever finds it gone creates it again
(`get_if_exists`), so a killed store, or a whole Ray cluster restarted, comes back with
everything reloaded from the database.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from ray_app.config import NAMESPACE, STORE_ACTOR, Settings
from ray_app.jobs.errors import StoreError

log = logging.getLogger("ray_app.store")


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=1)
class JobStore:
    """Methods run one at a time (max_concurrency=1): that is the single-writer guarantee."""

    def __init__(self, database_url: str, default_max_attempts: int):
        # imported here: SQLAlchemy is for the store's process only, not for every process that
        # talks to the store (a runner importing it would start each attempt ~0.3-0.7 s later)
        from ray_app.store.core import JobStoreCore

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.core = JobStoreCore(database_url, default_max_attempts)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        return getattr(self.core, method)(*args, **kwargs)

    def ping(self) -> int:
        return len(self.core._jobs)


def get_or_create_store(settings: Settings) -> ray.actor.ActorHandle:
    return JobStore.options(
        name=STORE_ACTOR,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
    ).remote(settings.resolved_database_url, settings.default_max_attempts)


# Methods safe to repeat after the store died mid-call: reads, and writes that are idempotent.
IDEMPOTENT = frozenset(
    {"get_job", "list_jobs", "active_jobs", "events", "metrics", "logs", "request_cancel",
     "heartbeat", "event", "done", "check_attempt", "create_job", "apply_callbacks", "attempt_exited"}
)


class StoreClient:
    """How the API and the controller talk to the store: re-resolves a store that died."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._handle: ray.actor.ActorHandle | None = None

    @property
    def handle(self) -> ray.actor.ActorHandle:
        if self._handle is None:
            self._handle = get_or_create_store(self.settings)
        return self._handle

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        attempts = 5 if method in IDEMPOTENT else 1
        for attempt in range(attempts):
            try:
                return await self.handle.call.remote(method, *args, **kwargs)
            except RayTaskError as exc:
                raise _unwrap(exc) from None
            except RayActorError:
                self._handle = None
                if attempt + 1 >= attempts:
                    raise
                log.warning("job store unavailable during %s; retrying", method)
                await asyncio.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")


def _unwrap(exc: RayTaskError) -> BaseException:
    """The store's own error (404/409/401) as itself; anything else stays a RayTaskError."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, StoreError) else exc
