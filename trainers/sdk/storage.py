"""S3 access for trainers: one client per location, transfers with multipart and concurrency,
and background checkpoint uploads that never lose the newest version.
"""
from __future__ import annotations

import os
import shutil
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # no 1 s+ IMDS probe off EC2

import boto3  # noqa: E402
from boto3.s3.transfer import TransferConfig  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import BotoCoreError, ClientError  # noqa: E402

from .env import S3Location  # noqa: E402
from .errors import CheckpointError, StorageError  # noqa: E402
from .log import TraceLogger  # noqa: E402

MB = 1024 * 1024


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); the key may be empty."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    rest = uri[5:]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"s3 URI without a bucket: {uri!r}")
    return bucket, key


def format_s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key.lstrip('/')}"


def transfer_config_from_env(env: dict[str, str] | None = None) -> TransferConfig:
    """Multipart threshold/chunk (MiB) and concurrency, tunable through VTP_S3_* variables."""
    e = os.environ if env is None else env

    def num(name: str, default: float) -> float:
        try:
            return float(e.get(name) or default)
        except ValueError:
            return default

    return TransferConfig(
        multipart_threshold=int(num("VTP_S3_MULTIPART_THRESHOLD_MB", 16) * MB),
        multipart_chunksize=int(num("VTP_S3_MULTIPART_CHUNK_MB", 16) * MB),
        max_concurrency=int(num("VTP_S3_MAX_CONCURRENCY", 4)),
        use_threads=True,
    )


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', '?')}: {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


class S3Storage:
    """Objects of one location. Counts object bytes moved so callers (and tests) can check
    that a cached dataset is not fetched again."""

    def __init__(self, location: S3Location, transfer: TransferConfig | None = None) -> None:
        self.location = location
        self.bucket = location.bucket
        self.transfer = transfer or transfer_config_from_env()
        self._client: Any = None
        self._lock = threading.Lock()
        self.bytes_downloaded = 0
        self.bytes_uploaded = 0

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                loc = self.location
                self._client = boto3.session.Session().client(
                    "s3",
                    endpoint_url=loc.endpoint_url,
                    aws_access_key_id=loc.access_key,
                    aws_secret_access_key=loc.secret_key,
                    region_name=loc.region,
                    config=Config(
                        signature_version="s3v4",
                        s3={"addressing_style": loc.addressing_style},
                        retries={"max_attempts": 5, "mode": "standard"},
                        connect_timeout=5, read_timeout=60,
                        max_pool_connections=max(10, self.transfer.max_request_concurrency),
                        # S3-compatible servers (R2, MinIO, SeaweedFS) differ on the newer
                        # default checksums; only send them where the API requires them.
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required",
                    ),
                )
            return self._client

    def _count(self, attr: str) -> Callable[[int], None]:
        def cb(n: int) -> None:
            with self._lock:
                setattr(self, attr, getattr(self, attr) + n)
        return cb

    def uri(self, key: str, bucket: str | None = None) -> str:
        return format_s3_uri(bucket or self.bucket, key)

    def head(self, key: str, bucket: str | None = None) -> dict[str, Any] | None:
        """Object metadata, or None when it does not exist."""
        try:
            return self.client.head_object(Bucket=bucket or self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageError(f"HEAD s3://{bucket or self.bucket}/{key} failed: {_error_text(exc)}") from None
        except BotoCoreError as exc:
            raise StorageError(f"HEAD s3://{bucket or self.bucket}/{key} failed: {_error_text(exc)}") from None

    def list(self, prefix: str, bucket: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket or self.bucket, Prefix=prefix)
            for page in pages:
                out.extend(page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"LIST s3://{bucket or self.bucket}/{prefix} failed: {_error_text(exc)}") from None
        return out

    def upload_file(self, local: str | os.PathLike, key: str, bucket: str | None = None,
                    content_type: str | None = None) -> str:
        extra = {"ContentType": content_type} if content_type else None
        try:
            self.client.upload_file(str(local), bucket or self.bucket, key, ExtraArgs=extra,
                                    Config=self.transfer, Callback=self._count("bytes_uploaded"))
        except (ClientError, BotoCoreError, OSError) as exc:
            raise StorageError(f"upload of {local} to {self.uri(key, bucket)} failed: {_error_text(exc)}") from None
        return self.uri(key, bucket)

    def download_file(self, key: str, dest: str | os.PathLike, bucket: str | None = None) -> Path:
        """Download to ``dest`` atomically (a partial file never appears under the final name)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            self.client.download_file(bucket or self.bucket, key, str(part), Config=self.transfer,
                                      Callback=self._count("bytes_downloaded"))
            os.replace(part, dest)
        except (ClientError, BotoCoreError, OSError) as exc:
            part.unlink(missing_ok=True)
            raise StorageError(f"download of {self.uri(key, bucket)} failed: {_error_text(exc)}") from None
        return dest

    def download_prefix(self, prefix: str, dest_dir: str | os.PathLike,
                        bucket: str | None = None, objects: list[dict[str, Any]] | None = None) -> int:
        """Download every object under ``prefix`` keeping relative paths; returns the count."""
        dest_dir = Path(dest_dir)
        objects = self.list(prefix, bucket) if objects is None else objects
        base = dest_dir.resolve()
        for obj in objects:
            rel = obj["Key"][len(prefix):].lstrip("/")
            if not rel or rel.endswith("/"):
                continue
            target = (dest_dir / rel).resolve()
            if base not in target.parents:  # a key like "../x" must not escape dest_dir
                raise StorageError(f"refusing object key outside the prefix: {obj['Key']!r}")
            self.download_file(obj["Key"], target, bucket)
        return len(objects)


class CheckpointUploader:
    """Uploads in a small thread pool; the training loop only pays for a local snapshot copy.

    The file is copied first because trainers overwrite ``last.pt`` every epoch: uploading the
    live file could send a torn mix of two epochs. Per key, only the newest snapshot is uploaded
    and uploads of one key are serialised, so the object always ends with the newest content.
    """

    def __init__(self, storage: S3Storage, logger: TraceLogger, staging_dir: Path,
                 on_uploaded: Callable[[str, str, int], None] | None = None,
                 max_workers: int = 2, retries: int = 3) -> None:
        self._storage = storage
        self._log = logger
        self._staging = staging_dir
        self._on_uploaded = on_uploaded
        self._retries = retries
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="vtp-upload")
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._latest: dict[str, int] = {}
        self._futures: list[Future] = []
        self.errors: dict[str, str] = {}  # key -> reason, for the newest version of the key

    def submit(self, local_path: str | os.PathLike, key: str, name: str) -> str:
        src = Path(local_path)
        if not src.is_file():
            raise CheckpointError(f"checkpoint file not found: {src}")
        self._staging.mkdir(parents=True, exist_ok=True)
        snap = self._staging / f"{uuid.uuid4().hex}-{src.name}"
        shutil.copyfile(src, snap)
        with self._lock:
            gen = self._latest.get(key, 0) + 1
            self._latest[key] = gen
            self._key_locks.setdefault(key, threading.Lock())
            fut = self._pool.submit(self._upload, snap, key, name, gen)
            self._futures.append(fut)
        return self._storage.uri(key)

    def _upload(self, snap: Path, key: str, name: str, gen: int) -> None:
        try:
            with self._key_locks[key]:
                if self._latest[key] != gen:  # a newer snapshot of this key is queued
                    return
                size = snap.stat().st_size
                last: Exception | None = None
                for _ in range(self._retries):
                    try:
                        uri = self._storage.upload_file(snap, key)
                        break
                    except Exception as exc:  # StorageError; retried a few times
                        last = exc
                else:
                    if self._latest[key] == gen:
                        self.errors[key] = str(last)
                    self._log.error(f"checkpoint upload failed: {last}")
                    return
                self.errors.pop(key, None)
            if self._on_uploaded:
                self._on_uploaded(name, uri, size)
        finally:
            snap.unlink(missing_ok=True)

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(1 for f in self._futures if not f.done())

    def wait(self, timeout: float | None = None) -> dict[str, str]:
        """Wait for every submitted upload; returns {key: reason} of keys whose newest upload failed."""
        with self._lock:
            futures = list(self._futures)
        done, not_done = wait(futures, timeout=timeout)
        with self._lock:
            self._futures = [f for f in self._futures if not f.done()]
        errors = dict(self.errors)
        if not_done:
            errors["*"] = f"{len(not_done)} upload(s) still running after {timeout}s"
        return errors

    def close(self, timeout: float | None = None) -> dict[str, str]:
        errors = self.wait(timeout)
        self._pool.shutdown(wait=False, cancel_futures=False)
        return errors
