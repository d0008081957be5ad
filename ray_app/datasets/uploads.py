"""The platform's side of a dataset upload: S3 multipart uploads driven by presigned URLs.

The client never holds the platform's S3 keys. The API opens a multipart upload for the version's
object, and hands out one presigned PUT URL per missing part: each is scoped to that object, that
upload and that part number, and expires after `presign_ttl_s`. The URLs name the public endpoint
(`s3_public_endpoint`, default the endpoint the platform itself uses), since the client may be on
another machine. Which parts arrived is S3's to say (ListParts), so an interrupted upload resumes
with the parts that are missing, and completion checks that every part is there at its size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from botocore.exceptions import ClientError

from ray_app.config import Settings
from ray_app.datasets.models import ARCHIVE_SUFFIXES, PartURL
from ray_app.jobs.errors import Conflict
from ray_app.storage import s3 as s3lib

MAX_PARTS = 1000  # S3 allows 10,000; fewer keeps an upload's answer (one URL per part) small
MiB = 1 << 20
SAMPLES_INDEX = "samples.json"  # beside a version's sample thumbnails (samples_prefix)


def samples_prefix(archive_key: str) -> str:
    """Where a version's sample thumbnails and their samples.json lie: beside its archive, in a
    folder of its own (``datasets/{id}@{sha256}.zip`` -> ``datasets/{id}@{sha256}/samples/``)."""
    stem = next((archive_key[:-len(s)] for s in ARCHIVE_SUFFIXES if archive_key.lower().endswith(s)), archive_key)
    return f"{stem}/samples/"


def part_size_for(size: int, minimum: int) -> int:
    """The part size of an upload: `minimum`, or larger (whole MiB) to stay within MAX_PARTS."""
    return max(minimum, math.ceil(size / MAX_PARTS / MiB) * MiB)


def parts_total(size: int, part_size: int) -> int:
    return max(1, math.ceil(size / part_size))


def expected_part_size(number: int, size: int, part_size: int) -> int:
    total = parts_total(size, part_size)
    return part_size if number < total else size - part_size * (total - 1)


def sized_parts(done: dict[int, dict[str, Any]], size: int, part_size: int) -> list[int]:
    """The part numbers of `done` (parts_done's answer) that S3 holds at the size they must have:
    a part of another size (cut short) counts as missing, so the client sends it again."""
    return sorted(n for n, part in done.items()
                  if 1 <= n <= parts_total(size, part_size) and part["Size"] == expected_part_size(n, size, part_size))


@dataclass
class Storage:
    """S3 as the dataset and artifact API use it: the platform's client for what it does itself,
    and a client on the public endpoint for the URLs it signs for users."""

    settings: Settings

    @cached_property
    def client(self) -> Any:
        return s3lib.make_client(self.settings)

    @cached_property
    def public(self) -> Any:
        public = self.settings.s3_public_endpoint
        if not public or public == self.settings.s3_endpoint:
            return self.client
        return s3lib.make_client(self.settings.model_copy(update={"s3_endpoint": public}))

    @property
    def bucket(self) -> str:
        return self.settings.s3_bucket

    def uri(self, key: str) -> str:
        return s3lib.format_s3_uri(self.bucket, key)

    def expires_at(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.settings.presign_ttl_s)

    # ------------------------------------------------------------ multipart uploads

    def open_upload(self, key: str, content_type: str = "application/octet-stream") -> str:
        s3lib.ensure_bucket(self.client, self.bucket)
        return self.client.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=content_type)["UploadId"]

    def parts_done(self, key: str, upload_id: str) -> dict[int, dict[str, Any]] | None:
        """Part number -> {ETag, Size} of the parts S3 holds; None for an upload S3 does not
        know (completed, aborted, or expired by a lifecycle rule)."""
        parts: dict[int, dict[str, Any]] = {}
        marker = 0
        while True:
            try:
                page = self.client.list_parts(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                              PartNumberMarker=marker)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchUpload", "404", "NotFound"):
                    return None
                raise
            for p in page.get("Parts", []):
                parts[int(p["PartNumber"])] = {"ETag": p["ETag"], "Size": int(p["Size"])}
            if not page.get("IsTruncated"):
                return parts
            marker = int(page["NextPartNumberMarker"])

    def part_urls(self, key: str, upload_id: str, numbers: list[int]) -> list[PartURL]:
        ttl = self.settings.presign_ttl_s
        return [PartURL(part_number=n, url=self.public.generate_presigned_url(
            "upload_part", ExpiresIn=ttl,
            Params={"Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": n}))
            for n in numbers]

    def complete_upload(self, key: str, upload_id: str, size: int, part_size: int) -> None:
        """Join the parts; Conflict (nothing changed) while a part is missing or has the wrong size."""
        done = self.parts_done(key, upload_id)
        if done is None:
            raise Conflict("the storage no longer knows this upload: open it again (POST /v1/datasets)")
        total = parts_total(size, part_size)
        good = sized_parts(done, size, part_size)
        missing = [n for n in range(1, total + 1) if n not in done]
        wrong = [n for n in range(1, total + 1) if n in done and n not in good]
        if missing or wrong:
            shown = ", ".join(map(str, missing[:20]))
            raise Conflict("the upload is not complete: " + "; ".join(filter(None, [
                f"{len(missing)} of {total} part(s) missing ({shown})" if missing else "",
                f"part(s) {', '.join(map(str, wrong[:20]))} have the wrong size" if wrong else ""])))
        self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": done[n]["ETag"]} for n in good]})

    def abort_upload(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError:
            pass  # already completed or aborted

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    # ------------------------------------------------------------ downloads

    def list(self, prefix: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            out += [o for o in page.get("Contents", []) if not o["Key"].endswith("/")]
        return out

    def download_url(self, key: str, filename: str) -> str:
        return self.public.generate_presigned_url(
            "get_object", ExpiresIn=self.settings.presign_ttl_s,
            Params={"Bucket": self.bucket, "Key": key,
                    "ResponseContentDisposition": f'attachment; filename="{_header_safe(filename)}"'})

    def view_url(self, key: str) -> str:
        """A presigned GET for showing the object in a page (an <img>): no attachment disposition."""
        return self.public.generate_presigned_url(
            "get_object", ExpiresIn=self.settings.presign_ttl_s, Params={"Bucket": self.bucket, "Key": key})

    def read_json(self, key: str) -> Any:
        """The JSON document at ``key``, or None when there is no such object."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        with body:
            return json.loads(body.read())


def _header_safe(name: str) -> str:
    return "".join(c if c.isprintable() and c not in '"\\' and ord(c) < 128 else "_" for c in name) or "download"
