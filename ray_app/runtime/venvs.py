"""Per-trainer virtualenvs, used through Ray's `py_executable` (DESIGN §6).

A trainer's venv sees the platform environment's packages through a `.pth` file (so it carries
no second copy of ray or torch) and installs only what its requirements add; packages installed
in the venv itself come first on sys.path, so the trainer's own pins shadow the shared ones.
The venv's folder name is a hash of the requirements and the platform interpreter: changing
either builds a new one, and an unchanged one is reused at once.

    vtp trainers build-env ultralytics
"""

from __future__ import annotations

import hashlib
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

from filelock import FileLock

from ray_app.runtime.registry import TrainerManifest

PTH_NAME = "_vtp_platform_site.pth"


class VenvBuildError(RuntimeError):
    pass


def venv_dir(venvs_root: Path, manifest: TrainerManifest) -> Path:
    digest = hashlib.sha256()
    digest.update(sys.executable.encode())
    for line in manifest.requirement_lines():
        digest.update(line.encode() + b"\n")
    return venvs_root / f"{manifest.name}-{digest.hexdigest()[:12]}"


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def find_built(venvs_root: Path, manifest: TrainerManifest) -> Path | None:
    path = venv_dir(venvs_root, manifest)
    return path if (path / ".complete").exists() else None


def platform_site_dirs() -> list[str]:
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    return list(dict.fromkeys(d for d in dirs if os.path.isdir(d)))


def build(venvs_root: Path, manifest: TrainerManifest, log=print) -> Path:
    """Build (or reuse) the trainer's venv; safe to call from several processes at once."""
    target = venv_dir(venvs_root, manifest)
    venvs_root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / ".complete").exists():
            return target
        # a folder without the marker is a build that crashed: start it again from scratch
        shutil.rmtree(target, ignore_errors=True)
        base_python = getattr(sys, "_base_executable", sys.executable)
        _run([base_python, "-m", "venv", str(target)], log)
        purelib = subprocess.check_output(
            [str(python_of(target)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            text=True,
        ).strip()
        # after the venv's own site-packages on sys.path: its own installs shadow the platform's
        Path(purelib, PTH_NAME).write_text("\n".join(platform_site_dirs()) + "\n")
        requirements = manifest.requirement_lines()
        if requirements:
            # pip (not uv): pip sees the .pth-linked platform packages as installed and skips them
            _run([str(python_of(target)), "-m", "pip", "install", "--disable-pip-version-check",
                  "-q", *requirements], log)
        (target / ".complete").write_text("\n".join(requirements) + "\n")
        return target


def _run(cmd: list[str], log) -> None:
    log(f"$ {' '.join(cmd)}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise VenvBuildError(
            f"{' '.join(cmd[:4])}… failed with exit code {proc.returncode}: "
            + (proc.stderr or proc.stdout).strip()[-2000:]
        )
