"""StoreClient: the typed way every process talks to the JobStore actor.

One method per store operation, each saying whether it may be repeated after the store died
mid-call (`Retry`): reads, and writes the store recognises when they come again (idempotency
keys, `create_job` with a chosen id, compare-and-set by attempt), are retried against a store
that Ray restarted or that was created again; the others are tried once and the error reaches
the caller. Jobs come back as `Job`s, not dictionaries.

No SQLAlchemy here: runners and API replicas import this module, and only the store's own process
needs the database code (store/actor.py is imported when the store must be created).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from datetime import datetime
from collections.abc import Awaitable, Callable
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from ray_app.config import NAMESPACE, STORE_ACTOR, Settings
from ray_app.jobs.errors import StoreError
from ray_app.jobs.job import Job
from ray_app.jobs.states import JobState

log = logging.getLogger("ray_app.store")

Row = dict[str, Any]
# How an attempt ended, for its history row (store/attempts.py): node_id, exit_code, signal.
Ended = dict[str, Any]
# One trainer callback for `apply_callbacks`: (kind, job id, the token's attempt, body).
CallbackItem = tuple[str, str, int, dict[str, Any]]


class Retry(enum.IntEnum):
    """How many times a call is tried when the store is gone (restarting, or lost)."""

    ONCE = 1  # repeating it could apply it twice
    SAFE = 5  # a read, or a write the store applies once however often it comes


def get_or_create_store(settings: Settings) -> Any:
    """The store actor's handle: found by name, or created (which needs the database code)."""
    try:
        return ray.get_actor(STORE_ACTOR, namespace=NAMESPACE)
    except ValueError:
        from ray_app.store.actor import create_store

        return create_store(settings)


class StoreClient:
    """Re-resolves a store that died. `handle` replaces the actor (tests: a store in process);
    `known` is the store actor's handle as another process found it (looking it up takes a fresh
    worker a while), still looked up again if that store dies."""

    def __init__(self, settings: Settings, handle: Any = None, known: Any = None):
        self.settings = settings
        self._handle = handle if handle is not None else known
        self._fixed = handle is not None

    @property
    def handle(self) -> Any:
        if self._handle is None:
            self._handle = get_or_create_store(self.settings)
        return self._handle

    async def _call(self, retry: Retry, call: Callable[[Any], Awaitable[Any]]) -> Any:
        for attempt in range(retry):
            try:
                return await call(self.handle)
            except RayTaskError as exc:
                raise _unwrap(exc) from None
            except RayActorError:
                if not self._fixed:
                    self._handle = None
                if attempt + 1 >= retry:
                    raise
                log.warning("job store unavailable; retrying (%d of %d)", attempt + 1, int(retry))
                await asyncio.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ jobs

    async def ping(self) -> int:
        return await self._call(Retry.ONCE, lambda s: s.ping.remote())

    async def create_job(self, spec: dict[str, Any], job_id: str) -> Job:
        """Safe to repeat: the id is chosen here, and a second create returns the first job."""
        return Job.model_validate(await self._call(Retry.SAFE, lambda s: s.create_job.remote(spec, job_id)))

    async def get_job(self, job_id: str) -> Job:
        return Job.model_validate(await self._call(Retry.SAFE, lambda s: s.get_job.remote(job_id)))

    async def list_jobs(self, state: JobState | None = None, project_id: str | None = None,
                        framework: str | None = None, cursor: int | None = None,
                        limit: int = 50, id_prefix: str | None = None) -> tuple[list[Job], int | None]:
        rows, next_cursor = await self._call(Retry.SAFE, lambda s: s.list_jobs.remote(
            state.value if state else None, project_id, framework, cursor, limit, id_prefix))
        return [Job.model_validate(r) for r in rows], next_cursor

    async def active_jobs(self) -> list[Job]:
        return [Job.model_validate(r) for r in await self._call(Retry.SAFE, lambda s: s.active_jobs.remote())]

    async def jobs_to_follow(self, ids: list[str]) -> list[Job]:
        return [Job.model_validate(r) for r in await self._call(Retry.SAFE, lambda s: s.jobs_to_follow.remote(ids))]

    async def request_cancel(self, job_id: str, by: str | None = None) -> Job:
        return Job.model_validate(await self._call(Retry.SAFE, lambda s: s.request_cancel.remote(job_id, by)))

    async def model_published(self, job_id: str, model: dict[str, Any]) -> Job:
        return Job.model_validate(await self._call(Retry.SAFE, lambda s: s.model_published.remote(job_id, model)))

    # ------------------------------------------------------------------ datasets (store/datasets.py)

    async def open_dataset_version(self, dataset_id: str, description: str, version: dict[str, Any],
                                   project_id: str, created_by: str | None) -> tuple[Row, bool]:
        """Safe to repeat: a second call finds the version and answers (it, False)."""
        row, created = await self._call(Retry.SAFE, lambda s: s.open_dataset_version.remote(
            dataset_id, description, version, project_id, created_by))
        return row, created

    async def dataset_upload_reopened(self, dataset_id: str, version: str, upload_id: str) -> Row:
        return await self._call(Retry.SAFE, lambda s: s.dataset_upload_reopened.remote(dataset_id, version, upload_id))

    async def dataset_upload_completed(self, dataset_id: str, version: str) -> Row:
        return await self._call(Retry.SAFE, lambda s: s.dataset_upload_completed.remote(dataset_id, version))

    async def dataset_validated(self, dataset_id: str, version: str, report: Row) -> Row:
        return await self._call(Retry.SAFE, lambda s: s.dataset_validated.remote(dataset_id, version, report))

    async def delete_dataset(self, dataset_id: str) -> list[Row]:
        return await self._call(Retry.SAFE, lambda s: s.delete_dataset.remote(dataset_id))

    # ------------------------------------------------------------------ teams (store/teams.py, store/audit.py)

    async def create_user(self, user_id: str, display_name: str, platform_admin: bool, created_by: str) -> Row:
        return await self._call(Retry.ONCE, lambda s: s.create_user.remote(user_id, display_name, platform_admin,
                                                                           created_by))

    async def set_user_disabled(self, user_id: str, disabled: bool) -> Row:
        return await self._call(Retry.SAFE, lambda s: s.set_user_disabled.remote(user_id, disabled))

    async def create_token(self, user_id: str, name: str, secret_hash: str, expires_at: datetime | None) -> Row:
        return await self._call(Retry.ONCE, lambda s: s.create_token.remote(user_id, name, secret_hash, expires_at))

    async def revoke_token(self, token_id: str, user_id: str | None) -> Row:
        return await self._call(Retry.SAFE, lambda s: s.revoke_token.remote(token_id, user_id))

    async def token_used(self, token_id: str) -> None:
        await self._call(Retry.ONCE, lambda s: s.token_used.remote(token_id))

    async def create_project(self, project_id: str, description: str, created_by: str,
                             exist_ok: bool = False) -> Row:
        return await self._call(Retry.ONCE if not exist_ok else Retry.SAFE, lambda s: s.create_project.remote(
            project_id, description, created_by, exist_ok))

    async def set_member(self, project_id: str, user_id: str, role: str, added_by: str) -> Row:
        return await self._call(Retry.SAFE, lambda s: s.set_member.remote(project_id, user_id, role, added_by))

    async def remove_member(self, project_id: str, user_id: str) -> Row:
        return await self._call(Retry.SAFE, lambda s: s.remove_member.remote(project_id, user_id))

    async def append_audit(self, entries: list[Row]) -> None:
        await self._call(Retry.ONCE, lambda s: s.append_audit.remote(entries))

    # ------------------------------------------------------------------ sweeps (store/sweeps.py)

    async def create_sweep(self, sweep: Row) -> Row:
        """Safe to repeat: the id is chosen by the caller."""
        return await self._call(Retry.SAFE, lambda s: s.create_sweep.remote(sweep))

    async def live_sweeps(self) -> list[Row]:
        return await self._call(Retry.SAFE, lambda s: s.live_sweeps.remote())

    async def create_trial(self, sweep_id: str, job_id: str, spec: Row, params: Row) -> Job:
        """Safe to repeat: a second call with the same job id returns the first trial's job."""
        return Job.model_validate(await self._call(Retry.SAFE, lambda s: s.create_trial.remote(
            sweep_id, job_id, spec, params)))

    async def stop_trial_early(self, job_id: str, reason: str) -> Job:
        return Job.model_validate(await self._call(Retry.SAFE, lambda s: s.stop_trial_early.remote(job_id, reason)))

    async def sweep_started(self, sweep_id: str, parent_run_id: str | None = None) -> Row:
        return await self._call(Retry.SAFE, lambda s: s.sweep_started.remote(sweep_id, parent_run_id))

    async def request_sweep_stop(self, sweep_id: str, outcome: str, reason: str | None,
                                 by: str | None = None) -> Row:
        """Safe to repeat: the first stop asked for is the one kept."""
        return await self._call(Retry.SAFE, lambda s: s.request_sweep_stop.remote(sweep_id, outcome, reason, by))

    async def settle_sweep(self, sweep_id: str) -> Row:
        return await self._call(Retry.SAFE, lambda s: s.settle_sweep.remote(sweep_id))

    async def finish_sweep(self, sweep_id: str, state: str, error: str | None = None,
                           best_job_id: str | None = None, registered_model: Row | None = None) -> Row:
        return await self._call(Retry.SAFE, lambda s: s.finish_sweep.remote(sweep_id, state, error, best_job_id,
                                                                            registered_model))

    # ------------------------------------------------------------------ exports (store/exports.py)

    async def export_created(self, job_id: str, export_id: str, fmt: str, options: Row) -> Row:
        """Safe to repeat: the id is chosen by the caller, a second call returns the first row."""
        return await self._call(Retry.SAFE, lambda s: s.export_created.remote(job_id, export_id, fmt, options))

    async def export_state(self, job_id: str, export_id: str, state: str, files: list[Row] | None = None,
                           error: str | None = None) -> Row:
        """Safe to repeat: a final export is never changed again."""
        return await self._call(Retry.SAFE, lambda s: s.export_state.remote(job_id, export_id, state, files, error))

    # ------------------------------------------------------------------ the queue (store/scheduling.py)

    async def set_quota(self, project_id: str, changes: Row) -> Row:
        """Safe to repeat: the same fields again change nothing."""
        return await self._call(Retry.SAFE, lambda s: s.set_quota.remote(project_id, changes))

    async def save_usage(self, rows: dict[str, tuple[float, float]], at: datetime) -> None:
        await self._call(Retry.SAFE, lambda s: s.save_usage.remote(rows, at))

    async def queue_waits(self, items: list[tuple[str, int, str]]) -> int:
        """Safe to repeat: a job already waiting for that reason is left as it is."""
        return await self._call(Retry.SAFE, lambda s: s.queue_waits.remote(items))

    async def request_preempt(self, job_id: str, attempt: int, for_job: str, reason: str) -> Job:
        return Job.model_validate(await self._call(Retry.SAFE, lambda s: s.request_preempt.remote(
            job_id, attempt, for_job, reason)))

    async def requeue_preempted(self, job_id: str, attempt: int, reason: str, ended: Ended | None = None) -> Job:
        """Compare-and-set by attempt: a repeat finds the job on the next attempt and is refused."""
        return Job.model_validate(await self._call(Retry.ONCE, lambda s: s.requeue_preempted.remote(
            job_id, attempt, reason, ended=ended)))

    # ------------------------------------------------------------------ the controller's writes

    async def transition(self, job_id: str, target: JobState, reason: str, *, attempt: int | None = None,
                         error_type: str | None = None, ended: Ended | None = None) -> Job:
        return Job.model_validate(await self._call(Retry.ONCE, lambda s: s.transition.remote(
            job_id, target.value, reason, attempt=attempt, error_type=error_type, ended=ended)))

    async def requeue(self, job_id: str, attempt: int, reason: str, error_type: str,
                      ended: Ended | None = None, delay_s: float = 0.0) -> Job:
        return Job.model_validate(await self._call(Retry.ONCE, lambda s: s.requeue.remote(
            job_id, attempt, reason, error_type, ended=ended, delay_s=delay_s)))

    async def set_wait_reason(self, job_id: str, attempt: int, reason: str | None) -> Job:
        """Safe to repeat: the same reason again changes nothing."""
        return Job.model_validate(await self._call(Retry.SAFE, lambda s: s.set_wait_reason.remote(
            job_id, attempt, reason)))

    async def attempt_started(self, job_id: str, attempt: int, node_id: str | None, pid: int, pgid: int,
                              details: dict[str, Any] | None = None, rank: int = 0) -> None:
        await self._call(Retry.ONCE, lambda s: s.attempt_started.remote(job_id, attempt, node_id, pid, pgid, details,
                                                                         rank))

    async def attempt_process(self, job_id: str, attempt: int) -> dict[str, Any] | None:
        """Where the attempt's trainer process runs: node_id, pid, pgid (None before it started)."""
        return await self._call(Retry.SAFE, lambda s: s.attempt_process.remote(job_id, attempt))

    async def attempt_exited(self, job_id: str, attempt: int, ended: Ended) -> None:
        await self._call(Retry.SAFE, lambda s: s.attempt_exited.remote(job_id, attempt, ended))

    async def add_platform_event(self, job_id: str, event_type: str, message: str, level: str = "info",
                                 data: dict[str, Any] | None = None) -> None:
        await self._call(Retry.ONCE, lambda s: s.add_platform_event.remote(job_id, event_type, message, level, data))

    async def add_news(self, job_id: str, event_type: str, message: str, data: dict[str, Any]) -> None:
        """A platform event that is news, not state (an environment's build, say): a failure to
        record it is logged, never raised, so it cannot fail what it reports on."""
        try:
            await self.add_platform_event(job_id, event_type, message, data=data)
        except Exception as exc:
            log.warning("could not record %s for job %s: %s", event_type, job_id, exc)

    async def append_logs(self, job_id: str, attempt: int, lines: list[tuple[str, str]], final: bool = False,
                          rank: int = 0) -> int:
        """`final`: the attempt's last lines; its output is then recorded as complete. `rank`:
        the rank whose process printed them."""
        return await self._call(Retry.ONCE, lambda s: s.append_logs.remote(job_id, attempt, lines, final, rank))

    # ------------------------------------------------------------------ trainer callbacks

    async def heartbeat(self, job_id: str, token_attempt: int, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(Retry.SAFE, lambda s: s.heartbeat.remote(job_id, token_attempt, body))

    async def event(self, job_id: str, token_attempt: int, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(Retry.SAFE, lambda s: s.event.remote(job_id, token_attempt, body))

    async def done(self, job_id: str, token_attempt: int, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(Retry.SAFE, lambda s: s.done.remote(job_id, token_attempt, body))

    async def apply_callbacks(self, items: list[CallbackItem]) -> list[Any]:
        """Each item's reply, or its StoreError in its place (JobStoreCore.apply_callbacks)."""
        return await self._call(Retry.SAFE, lambda s: s.apply_callbacks.remote(items))

    # ------------------------------------------------------------------ histories

    async def events(self, job_id: str, after: int = 0, limit: int = 500) -> list[Row]:
        return await self._call(Retry.SAFE, lambda s: s.events.remote(job_id, after, limit))

    async def metrics(self, job_id: str) -> list[Row]:
        return await self._call(Retry.SAFE, lambda s: s.metrics.remote(job_id))

    async def logs(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Row]:
        return await self._call(Retry.SAFE, lambda s: s.logs.remote(job_id, after, limit))


def _unwrap(exc: RayTaskError) -> BaseException:
    """The store's own error (404/409/401) as itself; anything else stays a RayTaskError."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, StoreError) else exc
