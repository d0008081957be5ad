"""Background checkpoint uploads: latest wins per key, the final version is never lost.

Trainers overwrite ``last.pt`` every epoch, so ``submit`` copies the file first (uploading the
live file could send a torn mix of two epochs) and returns; the upload happens on a small pool.

Per key there is at most one upload running and one snapshot waiting. A newer snapshot of a key
whose waiting snapshot has not started replaces it (the older one is deleted, never uploaded):
when uploads are slower than epochs, the backlog stays one file deep instead of one upload per
epoch, and the object always ends with the newest content. Nothing newer can replace the last
snapshot submitted, so ``wait()`` (``upload_checkpoint(wait=True)``, ``report_completed``,
``close``) always uploads the final version.

``min_interval_s`` spaces the uploads of one key (``last`` every epoch): a snapshot submitted
sooner after the key's previous upload started waits out the rest of the interval, and newer
snapshots keep replacing it meanwhile. An epoch of seconds would otherwise upload every epoch:
on the machine training, the client's checksums and (with a local S3 server) the server's
writes take CPU from the training threads (bench/README.md, training overhead). A crash loses
at most the interval's progress; ``wait()`` uploads the waiting snapshot at once.

An unreachable storage (connection refused, timeouts, 5xx) is retried for ``retry_window_s``
(``VTP_STORAGE_RETRY_S``), or until a newer snapshot of the key is waiting; a refusal (4xx) is not
retried. A key whose newest upload failed for want of storage is in ``unreachable``: the SDK then
fails the attempt as NETWORK_ERROR, which the platform retries from the last checkpoint that
made it (``checkpoint_saved`` is sent only for uploads that did).
"""
from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .errors import CheckpointError, StorageError
from .log import TraceLogger

if TYPE_CHECKING:
    from .storage import S3Storage


@dataclass
class _Snapshot:
    path: Path
    name: str
    epoch: int | None = None  # the trainer's epoch when it was taken


class CheckpointUploader:
    """Uploads snapshots in a small thread pool; the training loop pays only for the local copy."""

    def __init__(self, storage: S3Storage, logger: TraceLogger, staging_dir: Path,
                 on_uploaded: Callable[[str, str, int, int | None], None] | None = None,
                 max_workers: int = 2, retry_window_s: float = 120.0, min_interval_s: float = 0.0) -> None:
        self._storage = storage
        self._log = logger
        self._staging = staging_dir
        self._on_uploaded = on_uploaded
        self._retry_window = max(0.0, retry_window_s)
        self._min_interval = max(0.0, min_interval_s)
        self._next_start: dict[str, float] = {}  # key -> monotonic time its next upload may start
        self._flushing = 0                        # wait() calls in progress: no spacing meanwhile
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="vtp-upload")
        self._cond = threading.Condition()
        self._waiting: dict[str, _Snapshot] = {}  # key -> newest snapshot not started yet
        self._active: set[str] = set()            # keys with a drain task scheduled or running
        self.errors: dict[str, str] = {}          # key -> reason, for the newest version of the key
        self.unreachable: set[str] = set()        # keys in `errors` that failed for want of storage
        self.uploaded = 0
        self.superseded = 0  # snapshots replaced by a newer one before their upload started

    def submit(self, local_path: str | os.PathLike, key: str, name: str, epoch: int | None = None) -> str:
        src = Path(local_path)
        if not src.is_file():
            raise CheckpointError(f"checkpoint file not found: {src}")
        self._staging.mkdir(parents=True, exist_ok=True)
        snap = self._staging / f"{uuid.uuid4().hex}-{src.name}"
        shutil.copyfile(src, snap)  # sendfile(2) on Linux: no Python-level copy loop
        with self._cond:
            old = self._waiting.get(key)
            self._waiting[key] = _Snapshot(snap, name, epoch)
            schedule = key not in self._active
            self._active.add(key)
        if old is not None:
            self.superseded += 1
            old.path.unlink(missing_ok=True)
        if schedule:
            self._pool.submit(self._drain, key)
        return self._storage.uri(key)

    def _drain(self, key: str) -> None:
        """Upload the key's waiting snapshot until none is left (one task per key at a time,
        so uploads of a key never race and finish in submission order)."""
        while True:
            with self._cond:
                while True:
                    snap = self._waiting.get(key)
                    if snap is None:
                        self._active.discard(key)
                        self._cond.notify_all()
                        return
                    delay = self._next_start.get(key, 0.0) - time.monotonic()
                    if delay <= 0 or self._flushing:
                        break
                    self._cond.wait(delay)  # newer snapshots may replace `snap` meanwhile
                del self._waiting[key]
                self._next_start[key] = time.monotonic() + self._min_interval
            try:
                self._upload(snap, key)
            except Exception as exc:  # a bug here must not leave wait() hanging
                self.errors[key] = f"{type(exc).__name__}: {exc}"
                self._log.error(f"checkpoint upload of {key} failed: {exc}")

    def _upload(self, snap: _Snapshot, key: str) -> None:
        from .storage import retry_unreachable  # here: storage.py re-exports this module

        def superseded() -> bool:  # a newer snapshot waits: retry with that one instead
            with self._cond:
                return key in self._waiting

        try:
            size = snap.path.stat().st_size
            try:
                uri = retry_unreachable(lambda: self._storage.upload_file(snap.path, key), self._retry_window,
                                        f"the upload of {key}", self._log.warning, superseded)
            except StorageError as exc:
                with self._cond:
                    if key not in self._waiting:  # a newer version will report for itself
                        self.errors[key] = str(exc)
                        if exc.unreachable:
                            self.unreachable.add(key)
                        else:
                            self.unreachable.discard(key)
                self._log.error(f"checkpoint upload failed: {exc}")
                return
            with self._cond:
                self.errors.pop(key, None)
                self.unreachable.discard(key)
            self.uploaded += 1
        finally:
            snap.path.unlink(missing_ok=True)
        if self._on_uploaded:
            self._on_uploaded(snap.name, uri, size, snap.epoch)

    @property
    def pending(self) -> int:
        """Keys with an upload waiting or running."""
        with self._cond:
            return len(self._active)

    def wait(self, timeout: float | None = None) -> dict[str, str]:
        """Wait until every submitted snapshot is uploaded (or superseded by a newer one that is);
        returns {key: reason} of keys whose newest upload failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()  # spaced snapshots go now
            try:
                while self._active:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    self._cond.wait(left)
            finally:
                self._flushing -= 1
            running = len(self._active)
            errors = dict(self.errors)
        if running:
            errors["*"] = f"{running} upload(s) still running after {timeout}s"
        return errors

    def all_unreachable(self, errors: dict[str, str]) -> bool:
        """Whether every failure in ``errors`` (from ``wait``) came from storage that could not be
        reached (or uploads still going after the wait's bound): infrastructure, not the checkpoint."""
        with self._cond:
            return bool(errors) and all(k == "*" or k in self.unreachable for k in errors)

    def close(self, timeout: float | None = None) -> dict[str, str]:
        errors = self.wait(timeout)
        self._pool.shutdown(wait=False, cancel_futures=False)
        return errors
