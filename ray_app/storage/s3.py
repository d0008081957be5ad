"""Platform-side S3 helpers: build a client from settings, ensure buckets, put datasets where
trainers look for them (``datasets/{id}.zip`` or ``datasets/{id}/``), check objects, and handle
``s3://`` URIs. The URI form and the key layout are the trainer contract's (``sdk.contract``, standard
library only): the platform imports nothing else of the trainer SDK.
"""
from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

import boto3  # noqa: E402
from boto3.s3.transfer import TransferConfig  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402
from sdk.contract import dataset_archive_key, dataset_prefix  # noqa: E402
from sdk.contract import format_s3_uri as format_s3_uri, parse_s3_uri as parse_s3_uri  # noqa: E402  (re-exported)

MB = 1024 * 1024


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    region: str = "us-east-1"
    storage_type: str = "minio"  # minio | r2 | s3
    bucket: str | None = None

    def __repr__(self) -> str:
        return (f"S3Settings(endpoint_url={self.endpoint_url!r}, storage_type={self.storage_type!r}, "
                f"bucket={self.bucket!r})")

    @property
    def addressing_style(self) -> str:
        # Loopback SeaweedFS / MinIO have no wildcard DNS: path-style whenever an endpoint is set.
        return "path" if (self.endpoint_url and self.storage_type != "s3") or self.storage_type == "minio" else "auto"

    @property
    def region_name(self) -> str:
        return "auto" if self.storage_type == "r2" else (self.region or "us-east-1")


def _secret(value: Any) -> str | None:
    if value is None:
        return None
    get = getattr(value, "get_secret_value", None)  # pydantic SecretStr
    return get() if callable(get) else str(value)


def _first(obj: Any, *names: str) -> Any:
    for name in names:
        value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if value not in (None, ""):
            return value
    return None


def settings_from(obj: Any) -> S3Settings:
    """S3Settings from a settings-like object or dict (ray_app.config.Settings' ``s3_*`` fields,
    or ``endpoint_url``/``access_key``/``secret_key``/``region``/``bucket``)."""
    if isinstance(obj, S3Settings):
        return obj
    return S3Settings(
        endpoint_url=_first(obj, "s3_endpoint", "endpoint_url", "endpoint"),
        access_key=_secret(_first(obj, "s3_access_key", "access_key")),
        secret_key=_secret(_first(obj, "s3_secret_key", "secret_key")),
        region=_first(obj, "s3_region", "region") or "us-east-1",
        storage_type=(_first(obj, "storage_type") or "minio").lower(),
        bucket=_first(obj, "s3_bucket", "bucket"),
    )


def make_client(settings: Any) -> Any:
    s = settings_from(settings)
    return boto3.session.Session().client(
        "s3", endpoint_url=s.endpoint_url, aws_access_key_id=s.access_key,
        aws_secret_access_key=s.secret_key, region_name=s.region_name,
        config=Config(signature_version="s3v4", s3={"addressing_style": s.addressing_style},
                      retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60,
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"))


def ensure_bucket(client: Any, bucket: str) -> None:
    try:
        client.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def object_exists(client: Any, uri: str) -> bool:
    """True for an object, or for a prefix ending in '/' with at least one object under it."""
    bucket, key = parse_s3_uri(uri)
    if key.endswith("/") or not key:
        resp = client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        return resp.get("KeyCount", len(resp.get("Contents", []))) > 0
    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def _check_dataset_id(dataset_id: str) -> None:
    if not dataset_id or "/" in dataset_id or dataset_id in (".", "..") or dataset_id.endswith(".zip"):
        raise ValueError(f"invalid dataset id {dataset_id!r}")


def upload_dataset(client: Any, bucket: str, dataset_id: str, path: str | os.PathLike,
                   transfer: TransferConfig | None = None) -> str:
    """Upload a dataset folder to ``datasets/{id}/`` or a zip to ``datasets/{id}.zip``; returns its URI."""
    _check_dataset_id(dataset_id)
    path = Path(path)
    transfer = transfer or TransferConfig(multipart_threshold=16 * MB, multipart_chunksize=16 * MB,
                                          max_concurrency=4)
    if path.is_file():
        key = dataset_archive_key(dataset_id)
        client.upload_file(str(path), bucket, key, Config=transfer,
                           ExtraArgs={"ContentType": "application/zip"})
        return format_s3_uri(bucket, key)
    if not path.is_dir():
        raise FileNotFoundError(path)
    prefix = dataset_prefix(dataset_id)
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        client.upload_file(str(file), bucket, prefix + rel, Config=transfer, ExtraArgs={"ContentType": ctype})
    return format_s3_uri(bucket, prefix)


def delete_prefix(client: Any, bucket: str, prefix: str) -> int:
    """Delete every object under ``prefix``; returns how many."""
    n = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        for i in range(0, len(keys), 1000):
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys[i:i + 1000], "Quiet": True})
        n += len(keys)
    return n
