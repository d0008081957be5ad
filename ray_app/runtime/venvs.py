"""Per-trainer virtualenvs, used through Ray's `py_executable` (DESIGN §6).

A trainer's venv sees the platform environment's packages through a `.pth` file (so it carries
no second copy of ray or torch) and installs only what its requirements add. It is built by uv,
the resolver that installed the platform from uv.lock (`make install`), never by pip: pip follows
the machine's own configuration (a global constraints file, mirrors), which may hold the
platform's torch unusable and install a second, 5 GB torch into every venv.

A build:
1. resolves the trainer's requirements constrained to the platform's installed versions, and to
   uv.lock's pins for the rest (the bundled trainers' frameworks are locked there), so a venv
   has the same content on every machine and every day;
2. when the requirements cannot be met with the platform's versions, resolves again preferring
   them, and logs each package that then shadows the platform's and the requirement behind it;
3. installs only what the platform does not already have, at the resolved versions;
4. checks the result: a package over SHADOW_LIMIT_MB that shadows the platform's copy is an
   error, unless the manifest declares it on purpose (`shadows: [name]` in trainer.yaml).

The folder name is a hash of what decides the content: the interpreter, the platform's installed
versions, uv.lock, the trainer's requirements and declared shadows. An unchanged one is reused.

    vtp trainers build-env ultralytics
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from ray_app.config import REPO_ROOT
from ray_app.runtime.registry import TrainerManifest

PTH_NAME = "_vtp_platform_site.pth"
LOCK_FILE = REPO_ROOT / "uv.lock"
# a shadowing package above this size is a second copy of something large (torch, CUDA, OpenCV):
# an error unless declared. Smaller ones (a pure-Python pin) are only logged.
SHADOW_LIMIT_MB = 25
RESOLVED = "vtp-resolved.txt"  # in the venv: what the build resolved, for whoever inspects it

Log = Callable[[str], None]
_PINNED = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._\-]*)(\[[^\]]*\])?\s*==\s*([^\s;#]+)")


class VenvBuildError(RuntimeError):
    pass


def canonical(name: str) -> str:
    """PEP 503 name: what makes `Foo_Bar` and `foo-bar` the same package."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------------------- the platform side
def platform_site_dirs() -> list[str]:
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    return list(dict.fromkeys(d for d in dirs if os.path.isdir(d)))


def installed_versions(paths: Iterable[str]) -> dict[str, str]:
    """{canonical name: version} of the distributions installed in these folders."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions(path=list(paths)):
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist.version)
    return found


@functools.lru_cache(maxsize=1)
def platform_versions() -> dict[str, str]:
    return installed_versions(platform_site_dirs())


@functools.lru_cache(maxsize=1)
def _lock_bytes() -> bytes:
    return LOCK_FILE.read_bytes() if LOCK_FILE.exists() else b""


def uv_binary() -> str:
    try:
        from uv import find_uv_bin  # the `uv` package of the platform environment

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
        raise VenvBuildError("uv is not installed in the platform environment (make install)") from None


def lock_pins(log: Log) -> list[str]:
    """uv.lock's pins for every package of the project, extras included (the bundled trainers'
    frameworks are extras), as requirement lines with their markers."""
    if not LOCK_FILE.exists():
        return []
    proc = subprocess.run(
        [uv_binary(), "export", "--frozen", "--all-extras", "--no-hashes", "--no-emit-project",
         "--no-header", "--no-annotate", "--format", "requirements.txt"],
        cwd=LOCK_FILE.parent, capture_output=True, text=True,
    )
    if proc.returncode != 0:  # an unreadable lock: the platform's own versions still constrain
        log(f"uv.lock not used: {proc.stderr.strip()[-500:]}")
        return []
    return [line.strip() for line in proc.stdout.splitlines() if line.strip() and not line.startswith("#")]


# --------------------------------------------------------------------------- identity
def venv_dir(venvs_root: Path, manifest: TrainerManifest) -> Path:
    digest = hashlib.sha256()
    digest.update(f"{sys.executable}\n{sys.version}\n".encode())
    for name, version in sorted(platform_versions().items()):
        digest.update(f"{name}=={version}\n".encode())
    digest.update(hashlib.sha256(_lock_bytes()).digest())
    for line in manifest.requirement_lines():
        digest.update(line.encode() + b"\n")
    digest.update(("shadows:" + ",".join(sorted(map(canonical, manifest.shadows)))).encode())
    return venvs_root / f"{manifest.name}-{digest.hexdigest()[:12]}"


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def venv_of(python: Path) -> Path:
    """The venv whose interpreter `python` is (python_of's inverse)."""
    return python.parent.parent


def is_built(venv: Path) -> bool:
    """A finished build leaves its marker last; a folder without it is a build that crashed."""
    return (venv / ".complete").exists()


def find_built(venvs_root: Path, manifest: TrainerManifest) -> Path | None:
    path = venv_dir(venvs_root, manifest)
    return path if is_built(path) else None


# --------------------------------------------------------------------------- build
@dataclass(frozen=True)
class Resolved:
    name: str  # canonical
    version: str | None  # None: not a plain pin (a URL or path requirement): always installed
    line: str  # the requirement as uv wrote it, without its annotation
    via: str  # uv's annotation: which requirement brought it in


def parse_resolved(text: str) -> list[Resolved]:
    out: list[Resolved] = []
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        line, _, via = raw.partition("#")
        match = _PINNED.match(line)
        if match:
            out.append(Resolved(canonical(match[1]), match[3], line.strip(), via.replace("via", "", 1).strip()))
        else:
            name = re.split(r"[\s@\[;=<>!~]", line.strip(), maxsplit=1)[0]
            out.append(Resolved(canonical(name), None, line.strip(), via.strip()))
    return out


def build(venvs_root: Path, manifest: TrainerManifest, log: Log = print,
          shadow_limit_mb: float = SHADOW_LIMIT_MB) -> Path:
    """Build (or reuse) the trainer's venv; safe to call from several processes at once."""
    target = venv_dir(venvs_root, manifest)
    venvs_root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if is_built(target):
            return target
        # a folder without the marker is a build that crashed: start it again from scratch
        shutil.rmtree(target, ignore_errors=True)
        try:
            installed = _build_into(target, manifest, log, shadow_limit_mb)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)  # never leave a half-built (or 5 GB) venv
            raise
        (target / ".complete").write_text("\n".join(installed) + "\n")
        return target


def _build_into(target: Path, manifest: TrainerManifest, log: Log, shadow_limit_mb: float) -> list[str]:
    base_python = getattr(sys, "_base_executable", sys.executable)
    _run([uv_binary(), "venv", "-q", "--python", base_python, str(target)], log)
    python = python_of(target)
    purelib = subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip()
    # after the venv's own site-packages on sys.path: its own installs shadow the platform's
    Path(purelib, PTH_NAME).write_text("\n".join(platform_site_dirs()) + "\n")
    requirements = manifest.requirement_lines()
    if not requirements:
        return []
    platform = platform_versions()
    resolved = _resolve(target, requirements, platform, log)
    shadows = [r for r in resolved if r.name in platform and r.version not in (None, platform[r.name])]
    for r in shadows:
        log(f"{manifest.name}: {r.line} shadows the platform's {r.name}=={platform[r.name]} "
            f"(required by {r.via or 'the trainer'})")
    to_install = [r.line for r in resolved if r.version is None or platform.get(r.name) != r.version]
    if to_install:
        req_file = target / "vtp-install.txt"
        req_file.write_text("\n".join(to_install) + "\n")
        # --no-deps: the resolution above already chose every package; what the platform has is
        # seen through the .pth file and must not be installed again
        _run([uv_binary(), "pip", "install", "-q", "--no-deps", "--compile-bytecode", "--python", str(python),
              "-r", str(req_file)], log)
    check(manifest, Path(purelib), platform, shadow_limit_mb)
    return to_install


def _resolve(target: Path, requirements: list[str], platform: dict[str, str], log: Log) -> list[Resolved]:
    req_in = target / "vtp-requirements.in"
    req_in.write_text("\n".join(requirements) + "\n")
    constraints = target / "vtp-constraints.txt"
    pinned = [f"{name}=={version}" for name, version in sorted(platform.items())]
    # the platform's installed versions win over the lock's (they are what the venv will see)
    locked = [r.line for r in parse_resolved("\n".join(lock_pins(log))) if r.name not in platform]
    constraints.write_text("\n".join(pinned + locked) + "\n")
    out = target / RESOLVED
    compile_cmd = [uv_binary(), "pip", "compile", "-q", "--no-header", "--annotation-style", "line",
                   "--python", str(python_of(target)), str(req_in), "-o", str(out)]
    strict = subprocess.run([*compile_cmd, "--constraint", str(constraints)], capture_output=True, text=True)
    if strict.returncode != 0:
        # the trainer asks for something the platform's versions cannot give: resolve without
        # them as constraints, but with them as preferences (uv prefers the pins of an existing
        # output file), so only what must differ does
        log(f"the trainer's requirements conflict with the platform's versions: {_tail(strict)}")
        out.write_text(constraints.read_text())
        loose = subprocess.run(compile_cmd, capture_output=True, text=True)
        if loose.returncode != 0:
            raise VenvBuildError(f"cannot resolve the trainer's requirements {requirements}: {_tail(loose)}")
    return parse_resolved(out.read_text())


def dist_size(dist: importlib.metadata.Distribution) -> int:
    total = 0
    for file in dist.files or ():
        path = Path(str(file.locate()))
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def check(manifest: TrainerManifest, purelib: Path, platform: dict[str, str],
          limit_mb: float = SHADOW_LIMIT_MB) -> None:
    """A large package in the venv that the platform already has is a mistake (a second torch is
    gigabytes per trainer and per node), unless the manifest declares it."""
    declared = {canonical(name) for name in manifest.shadows}
    problems = []
    for dist in importlib.metadata.distributions(path=[str(purelib)]):
        name = canonical(dist.metadata["Name"] or "")
        if name not in platform or name in declared:
            continue
        size_mb = dist_size(dist) / 2**20
        if size_mb > limit_mb:
            problems.append(f"{name} {dist.version} ({size_mb:,.0f} MB) shadows the platform's {name} "
                            f"{platform[name]}")
    if problems:
        raise VenvBuildError(
            f"trainer {manifest.name!r}: its venv would carry its own copy of "
            + "; ".join(problems)
            + ". Pin the platform's version in its requirements, or declare the package in trainer.yaml "
            "(shadows: [name]) to accept a copy per trainer."
        )


def _tail(proc: subprocess.CompletedProcess) -> str:
    return (proc.stderr or proc.stdout).strip()[-2000:]


def _run(cmd: list[str], log: Log) -> None:
    log(f"$ {' '.join(cmd)}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise VenvBuildError(f"{' '.join(cmd[:4])}… failed with exit code {proc.returncode}: {_tail(proc)}")
