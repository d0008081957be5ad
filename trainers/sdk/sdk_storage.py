"""Storage side of TrainerSDK: datasets (through the node cache), checkpoints, artifacts.

A mixin so that ``core.py`` stays about callbacks and lifecycle; it relies on ``self.env``,
``self.logger``, ``self.event`` and ``self._last_epoch`` from TrainerSDK.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from . import contract
from .contract import artifact_key, checkpoint_key
from .datasets import DatasetCache, convert_dataset, fetch_into_cache, find_root, materialize, resolve_source
from .env import S3Location, TrainerEnv
from .errors import CheckpointError, ConfigError, NotMainRankError, SDKError, StorageError
from .liveness import KeepAlive
from .log import TraceLogger
from .storage import CheckpointUploader, S3Storage, parse_s3_uri, retry_unreachable

# How long an unreachable storage is retried before the attempt fails as NETWORK_ERROR (which the
# platform retries from the last checkpoint). Keep it below the heartbeat timeout for trainers
# that do not heartbeat while they wait for uploads (the platform's VTP_STORAGE_RETRY_S).
DEFAULT_STORAGE_RETRY_S = 120.0

T = TypeVar("T")
_CKPT_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*$")


class StorageMixin:
    env: TrainerEnv
    logger: TraceLogger
    _last_epoch: int | None
    _storages: dict[str, S3Storage]
    _uploader: CheckpointUploader | None
    _cache: DatasetCache | None
    keepalive: KeepAlive  # heartbeats while a call here waits on storage (TrainerSDK)

    def event(self, event_type: str, message: str = "", level: str = "info",
              data: Mapping[str, Any] | None = None) -> None:  # provided by TrainerSDK
        raise NotImplementedError

    def _refuse_unless_main(self, what: str) -> None:
        """Checkpoints and artifacts are the job's, written once, by rank 0: another rank writing
        the same keys would race it (downloads are every rank's: each needs the data and the
        resume checkpoint)."""
        if self.env.silent:
            raise NotMainRankError(f"rank {self.env.rank} of {self.env.world_size} cannot {what}: only rank 0 "
                                   "uploads (save with sdk.distributed.save_on_main, or when sdk.is_main)")

    def _storage(self, kind: str) -> S3Storage:
        if kind not in self._storages:
            loc: S3Location | None = (self.env.datasets_location if kind == "datasets"
                                      else self.env.checkpoints_location)
            if loc is None:
                raise ConfigError(f"no bucket for {kind}: set STORAGE_BUCKET"
                                  f" (or {'EXTERNAL_BUCKET_DATASETS' if kind == 'datasets' else 'INTERNAL_BUCKET_CHECKPOINTS'})")
            self._storages[kind] = S3Storage(loc)
        return self._storages[kind]

    @property
    def dataset_cache(self) -> DatasetCache:
        if self._cache is None:
            self._cache = DatasetCache(self.env.dataset_cache_dir)
        return self._cache

    @property
    def bytes_downloaded(self) -> int:
        """Object bytes read from S3 by this SDK (datasets and checkpoints)."""
        return sum(s.bytes_downloaded for s in self._storages.values())

    def download_dataset(self, dataset_id: str | None = None, dest: str | Path | None = None) -> Path:
        """The dataset's root folder, through the node cache. With ``dest`` the job gets its own
        hard-linked copy there; without, the shared cache entry (treat it as read-only)."""
        ds_id = dataset_id or self.env.dataset_id
        uri = self.env.dataset_s3_uri if (not dataset_id or dataset_id == self.env.dataset_id) else None
        storage = self._storage("datasets")
        before = storage.bytes_downloaded
        t0 = time.monotonic()

        def fetch() -> tuple[Any, Path, bool]:
            source = resolve_source(storage, ds_id, uri)  # its HEAD or LIST: storage calls too
            return (source, *fetch_into_cache(storage, self.dataset_cache, source))

        source, entry, hit = self._storage_call(fetch, f"the download of dataset {ds_id}")
        root = find_root(entry)
        if dest is not None:
            root = find_root(materialize(root, Path(dest)))
            self.dataset_cache.release(source.cache_key)
        fetched = storage.bytes_downloaded - before
        self.event("dataset_loaded", f"dataset {ds_id or source.uri} ready at {root}"
                   f" ({'cache hit' if hit else f'{fetched} bytes downloaded'}, {time.monotonic() - t0:.1f}s)",
                   data={"dataset_id": ds_id, "source": source.uri, "cache_hit": hit, "bytes_downloaded": fetched})
        return root

    def convert_dataset(self, src_dir: str | Path, target: str = "yolo", *args: str,
                        out_dir: str | Path | None = None, task_type: str | None = None,
                        val_fraction: float | None = None, seed: int | None = None,
                        split_config: Mapping[str, Any] | None = None, source_format: str | None = None,
                        target_format: str | None = None) -> Path:
        """Validate and convert (DICE -> 'yolo' | 'imagefolder'). Also accepts seed 001's
        ``convert_dataset(dir, 'dice', 'yolo', split_config={...})`` form."""
        if target_format:
            target = target_format
        elif args and target.lower() in ("dice", "coco", "auto"):
            target = args[0]  # positional (source_format, target_format)
        split = dict(split_config or {})
        if val_fraction is None:
            val_fraction = float(split.get("val_ratio", 0.2))
        if seed is None:
            seed = int(split.get("seed", 0))
        out = Path(out_dir) if out_dir else self.env.work_dir / f"dataset-{target.lower()}"
        return convert_dataset(src_dir, target, out, task_type=task_type or self.env.task_type or None,
                               val_fraction=val_fraction, seed=seed)

    def prepare_dataset(self, target: str = "yolo") -> Path:
        """download_dataset + convert_dataset: the folder the framework reads."""
        return self.convert_dataset(self.download_dataset(), target)

    @property
    def storage_retry_s(self) -> float:
        return self.env.setting("VTP_STORAGE_RETRY_S", DEFAULT_STORAGE_RETRY_S)

    def _storage_call(self, call: Callable[[], T], what: str) -> T:
        """``call()``, retried while the storage is unreachable (for ``storage_retry_s``), with the
        SDK heartbeating for the trainer meanwhile."""
        with self.keepalive.waiting():
            return retry_unreachable(call, self.storage_retry_s, what, self.logger.warning)

    def _on_checkpoint_uploaded(self, name: str, uri: str, size: int, epoch: int | None = None) -> None:
        epoch = epoch if epoch is not None else self._last_epoch  # the epoch the snapshot holds
        self.event(contract.CHECKPOINT_SAVED, f"checkpoint {name} uploaded to {uri}",
                   data=contract.checkpoint_saved_data(name, uri, size, epoch))

    def _checkpoint_uploader(self) -> CheckpointUploader:
        if self._uploader is None:
            self._uploader = CheckpointUploader(
                self._storage("checkpoints"), self.logger, self.env.tmp_dir / f"vtp-upload-{self.env.job_id}",
                on_uploaded=self._on_checkpoint_uploaded, retry_window_s=self.storage_retry_s,
                min_interval_s=self.env.setting("VTP_CHECKPOINT_MIN_INTERVAL_S", 30.0))
        return self._uploader

    def upload_checkpoint(self, local_path: str | Path, name: str, wait: bool = False) -> str:
        """Snapshot the file and upload it in the background to
        ``s3://{bucket}/checkpoints/job-{id}/{name}.pt``; returns that URI at once. Rank 0's alone
        in a distributed job (NotMainRankError elsewhere: see sdk.distributed.save_on_main)."""
        self._refuse_unless_main(f"upload checkpoint {name!r}")
        name = re.sub(r"^epoch_(\d+)$", r"epoch-\1", str(name))
        if not _CKPT_NAME.match(name):
            raise CheckpointError(f"invalid checkpoint name {name!r} (use best, last or epoch-N)")
        uri = self._checkpoint_uploader().submit(local_path, checkpoint_key(self.env.job_id, name), name,
                                                 epoch=self._last_epoch)
        if wait:
            errors = self.wait_for_uploads()
            if errors:
                raise self.upload_failure(errors)
        return uri

    def upload_failure(self, errors: Mapping[str, str]) -> SDKError:
        """The exception for failed checkpoint uploads (``wait_for_uploads``' result): storage that
        stayed unreachable is infrastructure (StorageError, NETWORK_ERROR: the attempt is retried
        from the last checkpoint that made it); anything else is a CheckpointError (final)."""
        reason = "; ".join(f"{k}: {v}" for k, v in errors.items())
        if self._uploader is not None and self._uploader.all_unreachable(dict(errors)):
            return StorageError(f"checkpoint upload failed, storage unreachable for {self.storage_retry_s:g}s: "
                                f"{reason}", unreachable=True)
        return CheckpointError(f"checkpoint upload failed: {reason}")

    def wait_for_uploads(self, timeout: float | None = None) -> dict[str, str]:
        if self._uploader is None:
            return {}
        with self.keepalive.waiting():
            return self._uploader.wait(self.env.setting("VTP_UPLOAD_TIMEOUT_S", 1800.0) if timeout is None else timeout)

    def upload_file(self, local_path: str | Path, key_suffix: str, content_type: str | None = None,
                    **_: Any) -> str:
        """Upload an artifact (blocking) to ``s3://{bucket}/artifacts/job-{id}/{key_suffix}``.
        Rank 0's alone in a distributed job (NotMainRankError elsewhere)."""
        self._refuse_unless_main(f"upload artifact {key_suffix!r}")
        storage, key = self._storage("checkpoints"), artifact_key(self.env.job_id, str(key_suffix))
        return self._storage_call(lambda: storage.upload_file(local_path, key, content_type=content_type),
                                  f"the upload of {key}")

    def download_checkpoint(self, uri: str, dest: str | Path) -> Path:
        """Download ``s3://bucket/key`` (or a key in the checkpoint bucket) to ``dest``."""
        storage = self._storage("checkpoints")
        bucket, key = parse_s3_uri(uri) if uri.startswith("s3://") else (storage.bucket, uri)
        dest = Path(dest)
        if dest.is_dir():
            dest = dest / Path(key).name
        try:
            return self._storage_call(lambda: storage.download_file(key, dest, bucket), f"the download of {uri}")
        except StorageError as exc:
            if exc.unreachable:  # infrastructure: the next attempt may reach it
                raise
            raise CheckpointError(f"cannot download checkpoint {uri}: {exc}") from None

