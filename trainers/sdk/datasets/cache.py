"""Per-node dataset cache shared by concurrent jobs (DESIGN §4).

Layout under the cache root::

    entries/<key>/      published datasets (never modified after publishing)
    meta/<key>.json     size and last use, for LRU eviction
    locks/<key>.lock    held exclusively while an entry is checked or filled
    inuse/<key>.lock    held *shared* by every process using the entry; eviction needs it exclusive
    cache.lock          serialises eviction
    tmp/                fills in progress (same filesystem, so publishing is one atomic rename)

Locks are ``fcntl.flock`` (standard library only; released by the kernel if a job dies), so a
crashed job never leaves the cache locked.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import AbstractSet, Callable, Iterator

from ..env import env_number

GiB = 1024 ** 3


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[bool]:
    """Yields True when the lock was taken (False only for a non-blocking attempt that failed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


class DatasetCache:
    def __init__(self, root: str | os.PathLike, max_bytes: int | None = None) -> None:
        self.root = Path(root)
        if max_bytes is None:
            max_bytes = int(env_number("VTP_DATASET_CACHE_MAX_BYTES", 20 * GiB))
        self.max_bytes = max_bytes
        self._inuse_fds: dict[str, int] = {}  # key -> fd holding a shared in-use lock
        for sub in ("entries", "meta", "locks", "inuse", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def entry_path(self, key: str) -> Path:
        return self.root / "entries" / key

    def contains(self, key: str) -> bool:
        return self.entry_path(key).is_dir()

    def _touch(self, key: str, size: int | None = None) -> None:
        meta = self.root / "meta" / f"{key}.json"
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            info = {}
        if size is not None or "size" not in info:
            info["size"] = size if size is not None else tree_size(self.entry_path(key))
        info["last_used"] = time.time()
        tmp = meta.with_suffix(f".{uuid.uuid4().hex[:6]}.tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, meta)

    def _mark_in_use(self, key: str) -> None:
        if key in self._inuse_fds:
            return
        path = self.root / "inuse" / f"{key}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
        self._inuse_fds[key] = fd

    def release(self, key: str) -> None:
        """This process no longer reads the entry in place; it may be evicted."""
        fd = self._inuse_fds.pop(key, None)
        if fd is not None:
            os.close(fd)

    def release_all(self) -> None:
        for key in list(self._inuse_fds):
            self.release(key)

    def get_or_fill(self, key: str, fill: Callable[[Path], None]) -> tuple[Path, bool]:
        """The entry for ``key``, filling it with ``fill(tmp_dir)`` if absent.

        Returns (path, hit). Concurrent callers for the same key wait for one fill; the entry is
        published by renaming a complete folder, so nobody ever sees a partial dataset.
        """
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"bad cache key {key!r}")
        entry = self.entry_path(key)
        with _flock(self.root / "locks" / f"{key}.lock", fcntl.LOCK_EX):
            hit = entry.is_dir()
            if not hit:
                tmp = self.root / "tmp" / f"{key}.{uuid.uuid4().hex[:8]}"
                tmp.mkdir(parents=True)
                try:
                    fill(tmp)
                    size = tree_size(tmp)
                    os.rename(tmp, entry)
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
                self._touch(key, size)
            else:
                self._touch(key)
            self._mark_in_use(key)
        self.evict(keep={key})
        return entry, hit

    def entries(self) -> list[tuple[str, int, float]]:
        """(key, size, last_used) of every published entry."""
        out = []
        for entry in (self.root / "entries").iterdir():
            try:
                info = json.loads((self.root / "meta" / f"{entry.name}.json").read_text())
            except (OSError, ValueError):
                info = {"size": tree_size(entry), "last_used": 0.0}
            out.append((entry.name, int(info.get("size", 0)), float(info.get("last_used", 0.0))))
        return out

    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def evict(self, keep: AbstractSet[str] = frozenset()) -> list[str]:
        """Remove least-recently-used entries until the cache fits its bound.

        Never blocks on another job: an entry whose lock or in-use lock is held is skipped.
        """
        removed: list[str] = []
        with _flock(self.root / "cache.lock", fcntl.LOCK_EX):
            entries = sorted(self.entries(), key=lambda e: e[2])
            total = sum(size for _, size, _ in entries)
            for key, size, _ in entries:
                if total <= self.max_bytes:
                    break
                if key in keep or key in self._inuse_fds:
                    continue
                with _flock(self.root / "locks" / f"{key}.lock", fcntl.LOCK_EX | fcntl.LOCK_NB) as got:
                    if not got:
                        continue
                    with _flock(self.root / "inuse" / f"{key}.lock", fcntl.LOCK_EX | fcntl.LOCK_NB) as free:
                        if not free:
                            continue
                        trash = self.root / "tmp" / f"evicted-{key}.{uuid.uuid4().hex[:8]}"
                        os.rename(self.entry_path(key), trash)
                        (self.root / "meta" / f"{key}.json").unlink(missing_ok=True)
                shutil.rmtree(trash, ignore_errors=True)
                total -= size
                removed.append(key)
        # If everything left is in use the bound stays exceeded until those jobs finish.
        return removed


def materialize(entry: Path, dest: Path) -> Path:
    """Give a job its own folder: a tree of hard links to the cache entry (copies across
    filesystems). The job may add files (e.g. label caches) without touching the shared entry,
    and an evicted entry's files stay alive through the links."""
    from .convert import link_or_copy

    dest.mkdir(parents=True, exist_ok=True)
    for src in entry.rglob("*"):
        rel = src.relative_to(entry)
        if src.is_dir():
            (dest / rel).mkdir(parents=True, exist_ok=True)
        elif src.is_file():
            link_or_copy(src, dest / rel)
    return dest

