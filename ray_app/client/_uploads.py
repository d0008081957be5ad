"""The client's side of a dataset upload: one archive (a folder is zipped first, byte for byte
the same each time, so its hash, the version, is stable), sent in parts to the presigned URLs the
API hands out, several at once, each part retried.

Resuming is the API's doing: opening an upload of content it already has an unfinished upload
for answers with the parts that arrived, and URLs for the others only.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ray_app.client._errors import APIError
from ray_app.client._retry import RetryableStatus
from ray_app.datasets.models import ARCHIVE_SUFFIXES, UploadView, VersionState, VersionView, sha256_of

CHUNK = 8 << 20
# stored, not deflated: these are compressed already, and deflating them costs time for nothing
STORED_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".zip", ".gz", ".tgz", ".mp4"}
SKIPPED_NAMES = {".DS_Store", "Thumbs.db", "__MACOSX"}
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: no clock in the bytes

ProgressCallback = Callable[[int], None]  # bytes just sent (or found already sent)


@dataclass
class Archive:
    path: Path
    filename: str
    size: int
    sha256: str
    scratch: Path | None = None  # a folder zipped here, removed by cleanup()

    def cleanup(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def read_part(self, number: int, part_size: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek((number - 1) * part_size)
            return f.read(part_size)


@dataclass
class UploadProgress:
    """What an upload is about to do: shown by the CLI before the first byte."""

    dataset_id: str
    version: str
    total_bytes: int
    parts_total: int
    parts_done: int  # already in storage: an earlier, interrupted upload's


@dataclass
class UploadResult:
    dataset_id: str
    version: str
    created: bool  # false: this content was uploaded before, nothing was sent
    parts_total: int = 0
    parts_sent: int = 0
    parts_skipped: int = 0  # found in storage from an interrupted upload
    bytes_sent: int = 0
    state: VersionState = VersionState.VALIDATING
    detail: VersionView | None = field(default=None, repr=False)


class PartURLExpired(Exception):
    """A presigned URL was refused (expired): open the upload again for fresh ones."""


def deterministic_zip(folder: Path, out: Path) -> None:
    """Zip a folder so that the same files give the same bytes: sorted names, fixed dates and
    modes. The folder's own name is not in the archive (the platform finds the root either way)."""
    files = sorted((p for p in folder.rglob("*") if p.is_file()
                    and not SKIPPED_NAMES.intersection(p.relative_to(folder).parts)),
                   key=lambda p: p.relative_to(folder).as_posix())
    if not files:
        raise ValueError(f"{folder} holds no files")
    with zipfile.ZipFile(out, "w") as zf:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=FIXED_TIME)
            info.external_attr = 0o100644 << 16
            stored = path.suffix.lower() in STORED_SUFFIXES
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            with open(path, "rb") as src, zf.open(info, "w", force_zip64=path.stat().st_size > 2**31) as dst:
                shutil.copyfileobj(src, dst, CHUNK)


def prepare(path: str | Path) -> Archive:
    """The archive to upload: the file itself (.zip, .tar, .tar.gz, .tgz), or a folder zipped."""
    path = Path(path)
    if path.is_file():
        if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
            raise ValueError(f"{path.name}: a dataset file must be an archive ({', '.join(ARCHIVE_SUFFIXES)}); "
                             "or give its folder")
        return Archive(path, path.name, path.stat().st_size, sha256_of(path))
    if not path.is_dir():
        raise FileNotFoundError(path)
    scratch = Path(tempfile.mkdtemp(prefix="vtp-upload-"))
    out = scratch / f"{path.resolve().name or 'dataset'}.zip"
    try:
        deterministic_zip(path, out)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return Archive(out, out.name, out.stat().st_size, sha256_of(out), scratch)


def check_part_response(response: httpx.Response) -> None:
    """A part PUT's answer: 2xx fine; 403 an expired URL; 5xx/429 retried; anything else refused."""
    if response.is_success:
        return
    if response.status_code == 403:
        raise PartURLExpired(response.text[:200])
    if response.status_code in (429, 500, 502, 503, 504):
        raise RetryableStatus(response)
    raise APIError(response.status_code, f"storage refused the part: {response.text[:300]}")


def missing_parts(view: UploadView) -> list[tuple[int, str]]:
    return [(u.part_number, u.url) for u in view.urls]
