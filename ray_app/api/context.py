"""What every route needs, built once per Serve replica (or per test app)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from ray_app.auth.callback_tokens import CallbackClaims
from ray_app.config import CONTROLLER_ACTOR, NAMESPACE, Settings
from ray_app.runtime.registry import TrainerManifest, TrainerRegistry
from ray_app.store.client import StoreClient

if TYPE_CHECKING:
    from ray_app.datasets.uploads import Storage
    from ray_app.store.reads import AsyncJobReader

T = TypeVar("T")

log = logging.getLogger("ray_app.api")


@dataclass
class AppContext:
    settings: Settings
    store: StoreClient
    # callback tokens this app has verified, with their claims; see deps.require_callback
    verified_tokens: dict[str, CallbackClaims] = field(default_factory=dict, repr=False)

    @cached_property
    def reads(self) -> AsyncJobReader:
        """Jobs, lists and histories read by SQL on this replica's own engine, outside the
        JobStore actor (the single writer), so a long read never delays a heartbeat."""
        from ray_app.store.log_archive import LogArchive  # SQLAlchemy: on first read only
        from ray_app.store.reads import AsyncJobReader, JobReader

        return AsyncJobReader(JobReader(self.settings.resolved_database_url,
                                        archive=LogArchive.from_settings(self.settings)))

    async def read(self, statement: Callable[..., T], *args: Any) -> T:
        """Run a read function of the store's (`fn(conn, *args)`, e.g. store/datasets.py) on this
        replica's engine, in a worker thread."""
        return await asyncio.to_thread(self.reads.reader.run, statement, *args)

    @cached_property
    def storage(self) -> Storage:
        """S3 for the dataset and artifact routes (boto3: call it from a worker thread)."""
        from ray_app.datasets.uploads import Storage

        return Storage(self.settings)

    @cached_property
    def api_tokens(self) -> list[str]:
        return self.settings.resolved_api_tokens()

    @cached_property
    def jwt_secret(self) -> str:
        return self.settings.resolved_jwt_secret()

    @cached_property
    def registry(self) -> TrainerRegistry:
        return TrainerRegistry(self.settings.trainer_paths)

    def resolve_trainer(self, framework: str, task_type: str, model_name: str) -> TrainerManifest:
        """The trainer for a job; a framework not seen yet rescans the trainer paths once, so a
        plugin added as a new folder is usable without a restart (TrainerRegistry.find)."""
        return self.registry.resolve(framework, task_type, model_name)

    def _controller_handle(self) -> Any:
        """The controller actor's handle (None: no controller here); looked up once, and again
        after `_forget_controller` (a handle from before a controller restart fails)."""
        if not self.settings.controller_enabled:
            return None
        import ray

        if not ray.is_initialized():
            return None
        handle: Any = self.__dict__.get("_controller")
        if handle is None:
            handle = self.__dict__["_controller"] = ray.get_actor(CONTROLLER_ACTOR, namespace=NAMESPACE)
        return handle

    def _forget_controller(self) -> None:
        self.__dict__.pop("_controller", None)

    async def controller_queue(self) -> dict[str, Any] | None:
        """The controller's last scheduling decision (scheduling/queue.py); None when no
        controller runs."""
        for _ in range(2):  # a handle from before a controller restart fails once: look it up again
            try:
                handle = self._controller_handle()
                if handle is None:
                    return None
                return await asyncio.wait_for(handle.queue.remote(), timeout=10)
            except Exception as exc:
                self._forget_controller()
                log.info("could not ask the controller for its queue: %s", exc)
        return None

    def nudge_controller(self, sweeps: bool = False) -> None:
        """Ask the controller to reconcile now rather than at its next tick: a new job launches
        (a cancel lands) up to one tick sooner; `sweeps`: a sweep changed, check the sweeps too.
        Best effort and fire-and-forget: the tick still covers a lost nudge, and a platform
        without a controller has nothing to nudge."""
        try:
            handle = self._controller_handle()
            if handle is not None:
                handle.wake.remote(sweeps=sweeps)
        except Exception as exc:  # no controller (yet), or a restarted one: look it up next time
            self._forget_controller()
            log.debug("could not nudge the controller: %s", exc)
