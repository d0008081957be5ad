"""S3 access for trainers: one client per location, transfers with multipart and concurrency.

boto3 is imported on first storage use, not with the SDK: it costs about 0.5 s of a trainer's
start on a 2-core machine, and ``report_started`` should not wait for it.
Background checkpoint uploads live in ``uploads.py`` (re-exported here).
"""
from __future__ import annotations

import builtins
import os
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .contract import format_s3_uri as format_s3_uri, parse_s3_uri as parse_s3_uri  # the contract's; re-exported
from .env import S3Location
from .errors import StorageError

if TYPE_CHECKING:
    from boto3.s3.transfer import TransferConfig

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # no 1 s+ IMDS probe off EC2

MB = 1024 * 1024
T = TypeVar("T")


def _boto_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a boto3 call raises for S3/transport failures (imported on demand)."""
    from boto3.exceptions import Boto3Error  # S3UploadFailedError wraps a ClientError
    from botocore.exceptions import BotoCoreError, ClientError

    return ClientError, BotoCoreError, Boto3Error


def _transfer_errors() -> tuple[type[BaseException], ...]:
    """boto3's errors and the local file system's: what a transfer turns into StorageError."""
    return (*_boto_errors(), OSError)


def transfer_config_from_env(env: dict[str, str] | None = None) -> TransferConfig:
    """Multipart threshold/chunk (MiB) and concurrency, tunable through VTP_S3_* variables."""
    from boto3.s3.transfer import TransferConfig

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


# S3 error codes that mean "not now" rather than "no": the same request may succeed later
_TRANSIENT_CODES = frozenset({"RequestTimeout", "RequestTimeTooSkewed", "SlowDown", "Throttling",
                              "ThrottlingException", "InternalError", "ServiceUnavailable",
                              "RequestLimitExceeded", "OperationAborted"})


def is_unreachable(exc: BaseException) -> bool:
    """True when the storage did not answer or answered "not now" (connection refused or reset,
    timeouts, 5xx, throttling): infrastructure, worth retrying. False for a refusal (4xx) and for
    local file errors, which a retry would meet again."""
    from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:  # boto3 wraps a ClientError (S3UploadFailedError)
        seen.add(id(exc))
        if isinstance(exc, (BotoConnectionError, HTTPClientError, ConnectionError, TimeoutError)):
            return True
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return err.get("Code") in _TRANSIENT_CODES or status >= 500 or status in (408, 429)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def retry_unreachable(call: Callable[[], T], window_s: float, what: str,
                      log: Callable[[str], None] | None = None,
                      give_up: Callable[[], bool] | None = None) -> T:
    """``call()``, retried with backoff while the storage is unreachable, for ``window_s`` seconds
    at most (a try that boto itself retries can end a little later). A refusal is raised at once;
    ``give_up()`` true (say, a newer version is waiting) ends the retries early."""
    deadline = time.monotonic() + window_s
    delay, tries = 0.5, 0
    while True:
        try:
            return call()
        except StorageError as exc:
            tries += 1
            left = deadline - time.monotonic()
            if not exc.unreachable or left <= 0 or (give_up is not None and give_up()):
                if exc.unreachable and tries > 1:
                    raise StorageError(f"{exc} (storage unreachable; tried {tries} times in "
                                       f"{window_s:g}s)", unreachable=True) from None
                raise
            if log is not None and tries == 1:
                log(f"storage unreachable during {what}; retrying for up to {window_s:g}s: {exc}")
            time.sleep(min(delay, max(left, 0.0)))
            delay = min(delay * 2, 10.0)


def _error_text(exc: BaseException) -> str:
    response = getattr(exc, "response", None)  # botocore ClientError
    if isinstance(response, dict):
        err = response.get("Error", {})
        return f"{err.get('Code', '?')}: {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


class S3Storage:
    """Objects of one location. Counts object bytes moved so callers (and tests) can check
    that a cached dataset is not fetched again."""

    def __init__(self, location: S3Location, transfer: TransferConfig | None = None) -> None:
        self.location = location
        self.bucket = location.bucket
        self._transfer_config = transfer
        self._client: Any = None
        self._transfer: Any = None
        self._lock = threading.Lock()
        self.bytes_downloaded = 0
        self.bytes_uploaded = 0

    @property
    def transfer(self) -> TransferConfig:
        if self._transfer_config is None:  # lazily: building it imports boto3
            self._transfer_config = transfer_config_from_env()
        return self._transfer_config

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

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

    @property
    def transfers(self) -> Any:
        """One S3Transfer (transfer manager + its thread pool) for this location, reused.

        ``client.upload_file`` builds and tears down a manager and its threads on every call;
        a trainer uploading ``last`` every epoch paid that each time. The manager is thread-safe.
        """
        client = self.client
        with self._lock:
            if self._transfer is None:
                from boto3.s3.transfer import S3Transfer

                self._transfer = S3Transfer(client, self.transfer)
            return self._transfer

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
        except _boto_errors() as exc:
            code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageError(f"HEAD s3://{bucket or self.bucket}/{key} failed: {_error_text(exc)}",
                               is_unreachable(exc)) from None

    def list(self, prefix: str, bucket: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket or self.bucket, Prefix=prefix)
            for page in pages:
                out.extend(page.get("Contents", []))
        except _boto_errors() as exc:
            raise StorageError(f"LIST s3://{bucket or self.bucket}/{prefix} failed: {_error_text(exc)}",
                               is_unreachable(exc)) from None
        return out

    def upload_file(self, local: str | os.PathLike, key: str, bucket: str | None = None,
                    content_type: str | None = None) -> str:
        extra = {"ContentType": content_type} if content_type else None
        try:
            self.transfers.upload_file(str(local), bucket or self.bucket, key,
                                       callback=self._count("bytes_uploaded"), extra_args=extra)
        except _transfer_errors() as exc:
            raise StorageError(f"upload of {local} to {self.uri(key, bucket)} failed: {_error_text(exc)}",
                               is_unreachable(exc)) from None
        return self.uri(key, bucket)

    def download_file(self, key: str, dest: str | os.PathLike, bucket: str | None = None) -> Path:
        """Download to ``dest`` atomically (a partial file never appears under the final name)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            self.transfers.download_file(bucket or self.bucket, key, str(part),
                                         callback=self._count("bytes_downloaded"))
            os.replace(part, dest)
        except _transfer_errors() as exc:
            part.unlink(missing_ok=True)
            raise StorageError(f"download of {self.uri(key, bucket)} failed: {_error_text(exc)}",
                               is_unreachable(exc)) from None
        return dest

    def download_prefix(self, prefix: str, dest_dir: str | os.PathLike,
                        bucket: str | None = None, objects: builtins.list[dict[str, Any]] | None = None) -> int:
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
                raise StorageError(f"refusing object key outside the prefix: {obj['Key']!r}", unreachable=False)
            self.download_file(obj["Key"], target, bucket)
        return len(objects)


from .uploads import CheckpointUploader as CheckpointUploader  # noqa: E402  (re-exported: its old home)
