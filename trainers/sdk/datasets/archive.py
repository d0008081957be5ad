"""Safe extraction of dataset archives (zip, tar, tar.gz).

Every member is checked *before* anything is written: path traversal, absolute paths, links
and special files, and expansion bombs (total uncompressed size and compression ratio) are
refused with a reason that names the member. Extraction then writes regular files only and
stops if a member yields more bytes than its header declared.
"""
from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..env import env_number
from ..errors import DatasetError

GiB = 1024 ** 3


@dataclass(frozen=True)
class ArchiveLimits:
    max_total_bytes: int = 50 * GiB  # uncompressed size of all members together
    max_ratio: float = 100.0         # uncompressed / compressed, per member and overall
    max_members: int = 2_000_000
    ratio_min_bytes: int = 1024 * 1024  # tiny members (JSON, labels) may compress very well

    @classmethod
    def from_env(cls) -> "ArchiveLimits":
        return cls(max_total_bytes=int(env_number("VTP_ARCHIVE_MAX_BYTES", cls.max_total_bytes)),
                   max_ratio=env_number("VTP_ARCHIVE_MAX_RATIO", cls.max_ratio))


def member_problem(name: str) -> str | None:
    """Why a member name is unsafe, or None."""
    if not name or "\x00" in name:
        return "empty or NUL in name"
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(norm).parts:
        return "path traversal ('..')"
    return None


class ArchiveMemberError(DatasetError):
    """An archive refused because of one member; ``member`` and ``reason`` say which and why."""

    def __init__(self, archive: Path, member: str, reason: str) -> None:
        super().__init__(f"refusing archive {archive.name}: member {member!r}: {reason}")
        self.member = member
        self.reason = reason


def _refuse(archive: Path, member: str, reason: str) -> DatasetError:
    return ArchiveMemberError(archive, member, reason)


@dataclass
class _Member:
    name: str
    size: int
    is_dir: bool


def _inspect_zip(path: Path, limits: ArchiveLimits) -> list[_Member]:
    out: list[_Member] = []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            reason = member_problem(info.filename)
            if reason:
                raise _refuse(path, info.filename, reason)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if kind == stat.S_IFLNK:
                raise _refuse(path, info.filename, "symbolic link")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _refuse(path, info.filename, "special file (not a regular file or directory)")
            if (info.file_size > limits.ratio_min_bytes
                    and info.file_size > limits.max_ratio * max(info.compress_size, 1)):
                raise _refuse(path, info.filename,
                              f"compression ratio {info.file_size / max(info.compress_size, 1):.0f}:1 "
                              f"exceeds {limits.max_ratio:.0f}:1 (zip bomb?)")
            out.append(_Member(info.filename, info.file_size, info.is_dir()))
    return out


def _inspect_tar(path: Path, limits: ArchiveLimits) -> list[_Member]:
    out: list[_Member] = []
    with tarfile.open(path) as tf:
        for m in tf:
            reason = member_problem(m.name)
            if reason:
                raise _refuse(path, m.name, reason)
            if m.issym():
                raise _refuse(path, m.name, "symbolic link")
            if m.islnk():
                raise _refuse(path, m.name, "hard link")
            if not (m.isfile() or m.isdir()):
                raise _refuse(path, m.name, "special file (device, fifo, ...)")
            out.append(_Member(m.name, m.size, m.isdir()))
    return out


def inspect_archive(path: str | os.PathLike, limits: ArchiveLimits | None = None) -> list[_Member]:
    """Check every member of the archive; raises DatasetError naming the first bad one."""
    path = Path(path)
    limits = limits or ArchiveLimits.from_env()
    try:
        if zipfile.is_zipfile(path):
            members = _inspect_zip(path, limits)
        elif tarfile.is_tarfile(path):
            members = _inspect_tar(path, limits)
        else:
            raise DatasetError(f"{path.name} is neither a zip nor a tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"archive {path.name} is corrupt: {exc}") from None
    if len(members) > limits.max_members:
        raise DatasetError(f"refusing archive {path.name}: {len(members)} members exceed {limits.max_members}")
    total = sum(m.size for m in members)
    if total > limits.max_total_bytes:
        raise DatasetError(f"refusing archive {path.name}: uncompressed size {total} bytes exceeds "
                           f"the bound of {limits.max_total_bytes} bytes (archive bomb?)")
    packed = max(path.stat().st_size, 1)
    if total > limits.ratio_min_bytes and total > limits.max_ratio * packed:
        raise DatasetError(f"refusing archive {path.name}: expands {total / packed:.0f}:1, more than "
                           f"{limits.max_ratio:.0f}:1 (archive bomb?)")
    return members


def _copy_limited(src, dst_path: Path, declared: int, name: str, archive: Path) -> int:
    written = 0
    with open(dst_path, "wb") as dst:
        while True:
            chunk = src.read(1024 * 1024)
            if not chunk:
                break
            written += len(chunk)
            if written > declared:  # a header that lies about the size
                raise _refuse(archive, name, "member is larger than its header declares")
            dst.write(chunk)
    return written


def safe_extract(path: str | os.PathLike, dest: str | os.PathLike,
                 limits: ArchiveLimits | None = None) -> Path:
    """Inspect, then extract regular files and directories only into ``dest``."""
    path, dest = Path(path), Path(dest)
    inspect_archive(path, limits)
    dest.mkdir(parents=True, exist_ok=True)
    base = dest.resolve()

    def target_of(name: str) -> Path:
        t = (base / name.replace("\\", "/")).resolve()
        if t != base and base not in t.parents:
            raise _refuse(path, name, "resolves outside the destination")
        return t

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                t = target_of(info.filename)
                if info.is_dir():
                    t.mkdir(parents=True, exist_ok=True)
                    continue
                t.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src:
                    _copy_limited(src, t, info.file_size, info.filename, path)
    else:
        with tarfile.open(path) as tf:
            for m in tf:
                t = target_of(m.name)
                if m.isdir():
                    t.mkdir(parents=True, exist_ok=True)
                    continue
                t.parent.mkdir(parents=True, exist_ok=True)
                member = tf.extractfile(m)
                if member is None:
                    raise _refuse(path, m.name, "not a regular file")
                with member:
                    _copy_limited(member, t, m.size, m.name, path)
    return dest
