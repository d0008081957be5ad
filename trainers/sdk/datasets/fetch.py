"""Find a dataset in S3 and bring it into the node cache.

Sources, in order: DATASET_S3_URI (``s3://bucket/key.zip`` or ``s3://bucket/prefix/``), then
``datasets/{id}.zip``, then the prefix ``datasets/{id}/`` in the datasets bucket. The cache key
is derived from metadata only (a zip's ETag and size, or the prefix listing's keys, ETags and
sizes), so a cached dataset costs one HEAD or LIST and zero bytes of object data.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..contract import dataset_archive_key, dataset_prefix, format_s3_uri, parse_s3_uri
from ..storage import S3Storage
from .archive import ArchiveLimits, safe_extract
from .cache import DatasetCache

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


@dataclass
class DatasetSource:
    bucket: str
    key: str  # an archive key, or a prefix ending in "/"
    is_archive: bool
    cache_key: str
    size: int
    objects: list[dict[str, Any]] | None = None  # the listing, for a prefix

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _archive_source(storage: S3Storage, bucket: str, key: str) -> DatasetSource | None:
    head = storage.head(key, bucket)
    if head is None:
        return None
    etag = str(head.get("ETag", "")).strip('"')
    size = int(head.get("ContentLength", 0))
    version = head.get("VersionId") or ""
    return DatasetSource(bucket, key, True, "z" + _digest(etag, size, version), size)


def _prefix_source(storage: S3Storage, bucket: str, prefix: str) -> DatasetSource | None:
    prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
    objects = [o for o in storage.list(prefix, bucket) if not o["Key"].endswith("/")]
    if not objects:
        return None
    listing = sorted((o["Key"][len(prefix):], str(o.get("ETag", "")).strip('"'), int(o.get("Size", 0)))
                     for o in objects)
    return DatasetSource(bucket, prefix, False, "p" + _digest(listing),
                         sum(s for _, _, s in listing), objects)


def resolve_source(storage: S3Storage, dataset_id: str | None, dataset_uri: str | None) -> DatasetSource:
    tried: list[str] = []
    if dataset_uri:
        bucket, key = parse_s3_uri(dataset_uri)
        if key.endswith(ARCHIVE_SUFFIXES):
            src = _archive_source(storage, bucket, key)
        elif key.endswith("/") or not key:
            src = _prefix_source(storage, bucket, key)
        else:  # "s3://b/datasets/{id}": the zip next to it, or the prefix
            src = _archive_source(storage, bucket, key + ".zip") or _prefix_source(storage, bucket, key)
        if src:
            return src
        tried.append(dataset_uri)
    if dataset_id:
        if "/" in dataset_id or dataset_id in (".", ".."):
            raise DatasetError(f"invalid dataset id {dataset_id!r}")
        bucket = storage.bucket
        archive, prefix = dataset_archive_key(dataset_id), dataset_prefix(dataset_id)
        src = _archive_source(storage, bucket, archive)
        if src:
            return src
        src = _prefix_source(storage, bucket, prefix)
        if src:
            return src
        tried += [format_s3_uri(bucket, archive), format_s3_uri(bucket, prefix)]
    if not tried:
        raise DatasetError("no dataset given: set DATASET_ID or DATASET_S3_URI")
    raise DatasetError(f"dataset not found; tried {', '.join(tried)}")


def fetch_into_cache(storage: S3Storage, cache: DatasetCache, source: DatasetSource,
                     limits: ArchiveLimits | None = None) -> tuple[Path, bool]:
    """(entry path, cache hit). Archives are checked before anything is extracted."""

    def fill(tmp: Path) -> None:
        if source.is_archive:
            name = Path(source.key).name
            archive = tmp.parent / f"{tmp.name}.{name}"
            try:
                storage.download_file(source.key, archive, source.bucket)
                safe_extract(archive, tmp, limits)
            finally:
                archive.unlink(missing_ok=True)
        else:
            storage.download_prefix(source.key, tmp, source.bucket, objects=source.objects)

    return cache.get_or_fill(source.cache_key, fill)
