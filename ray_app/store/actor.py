"""The JobStore actor: detached, named, in the platform's namespace; the single writer.

Ray restarts it if its process dies (max_restarts=-1), and whoever finds it gone creates it again
(`get_if_exists`), so a killed store, or a whole Ray cluster restarted, comes back with
everything reloaded from the database. Callers use the typed client (store/client.py); this
module is imported only by the process that creates the store, since it brings SQLAlchemy.
"""

from __future__ import annotations

import logging
from typing import Any

import ray

from ray_app.config import NAMESPACE, STORE_ACTOR, Settings
from ray_app.store.core import JobStoreCore


class JobStore(JobStoreCore):
    """JobStoreCore's methods are the actor's; they run one at a time (max_concurrency=1):
    that is the single-writer guarantee."""

    def __init__(self, database_url: str, default_max_attempts: int):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        super().__init__(database_url, default_max_attempts)

    def ping(self) -> int:
        return len(self._jobs)


JobStoreActor = ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=1)(JobStore)  # type: ignore[call-overload]  # Ray's typed overloads lack actor options (max_concurrency)


def create_store(settings: Settings) -> Any:
    return JobStoreActor.options(
        name=STORE_ACTOR,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
    ).remote(settings.resolved_database_url, settings.default_max_attempts)
