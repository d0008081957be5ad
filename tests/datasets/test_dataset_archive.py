"""Hostile archives are refused, with a reason, before anything is extracted."""
from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from sdk import DatasetError
from sdk.datasets import ArchiveLimits, safe_extract


def make_zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotations.json", b"{}")  # a harmless first member: nothing may be written
        for info, data in entries:
            zf.writestr(info, data)
    return path


def assert_refused(archive: Path, dest: Path, *needles: str, limits: ArchiveLimits | None = None) -> None:
    with pytest.raises(DatasetError) as info:
        safe_extract(archive, dest, limits)
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    assert not dest.exists() or not any(dest.iterdir()), "something was extracted before the refusal"
    assert not (dest.parent / "escaped.txt").exists()


def test_path_traversal(tmp_path):
    z = make_zip(tmp_path / "a.zip", [("images/../../escaped.txt", b"x")])
    assert_refused(z, tmp_path / "out" / "d", "images/../../escaped.txt", "path traversal")


def test_absolute_path(tmp_path):
    info = zipfile.ZipInfo("placeholder")
    info.filename = "/etc/escaped.txt"  # ZipInfo() would strip the leading slash
    z = make_zip(tmp_path / "a.zip", [(info, b"x")])
    assert_refused(z, tmp_path / "out", "/etc/escaped.txt", "absolute path")


def test_symlink(tmp_path):
    info = zipfile.ZipInfo("images/link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = make_zip(tmp_path / "a.zip", [(info, b"/etc/passwd")])
    assert_refused(z, tmp_path / "out", "images/link.png", "symbolic link")


def test_tar_links_and_special_files(tmp_path):
    for kind, needle in ((tarfile.SYMTYPE, "symbolic link"), (tarfile.LNKTYPE, "hard link"),
                         (tarfile.FIFOTYPE, "special file")):
        path = tmp_path / f"{kind!r}.tar.gz"
        with tarfile.open(path, "w:gz") as tf:
            ok = tarfile.TarInfo("annotations.json")
            ok.size = 2
            tf.addfile(ok, io.BytesIO(b"{}"))
            bad = tarfile.TarInfo("images/evil")
            bad.type = kind
            bad.linkname = "/etc/passwd"
            tf.addfile(bad)
        assert_refused(path, tmp_path / f"out-{ord(kind)}", "images/evil", needle)


def test_bomb_by_total_size(tmp_path):
    z = make_zip(tmp_path / "bomb.zip", [(f"images/{i}.bin", b"\0" * (3 << 20)) for i in range(4)])
    limits = ArchiveLimits(max_total_bytes=10 << 20, max_ratio=1e9)
    assert_refused(z, tmp_path / "out", "uncompressed size", "exceeds the bound", limits=limits)


def test_bomb_by_ratio(tmp_path):
    z = make_zip(tmp_path / "bomb.zip", [("images/zeros.bin", b"\0" * (8 << 20))])
    assert_refused(z, tmp_path / "out", "images/zeros.bin", "compression ratio", "zip bomb",
                   limits=ArchiveLimits(max_ratio=100))


def test_member_larger_than_declared_is_stopped(tmp_path):
    z = make_zip(tmp_path / "lie.zip", [("images/a.bin", b"A" * 5000)])
    raw = bytearray(z.read_bytes())
    # shrink the declared size (local header and central directory) below the real size
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = raw.find(sig, raw.find(b"images/a.bin") - 60 if sig == b"PK\x03\x04" else 0)
        while pos != -1:
            name_at = pos + (30 if sig == b"PK\x03\x04" else 46)
            if raw[name_at:name_at + 12] == b"images/a.bin":
                raw[pos + off:pos + off + 4] = (100).to_bytes(4, "little")
            pos = raw.find(sig, pos + 4)
    z.write_bytes(bytes(raw))
    with pytest.raises((DatasetError, zipfile.BadZipFile)):  # ours, or zipfile's CRC check first
        safe_extract(z, tmp_path / "out")
    out = tmp_path / "out" / "images" / "a.bin"
    assert not out.exists() or out.stat().st_size <= 100


def test_good_archive_extracts(tmp_path):
    z = make_zip(tmp_path / "ok.zip", [("images/a.png", b"png-bytes"), ("images/sub/b.png", b"more")])
    out = safe_extract(z, tmp_path / "out")
    assert (out / "images" / "sub" / "b.png").read_bytes() == b"more"
    assert (out / "annotations.json").read_bytes() == b"{}"
