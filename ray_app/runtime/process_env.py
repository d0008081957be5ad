"""The trainer's environment, applied by its runner to the trainer process (DESIGN §6).

Ray starts an actor that has a runtime_env in a worker of its own, through `setup_worker.py`: one
interpreter imports Ray to apply the env, then execs the worker, which imports Ray again. In the
launch benchmark's in-run reference that costs ~1 s per actor on the development machine (2.4 s
against 1.4 s for the same actor without one, which can also take an idle worker Ray has already
started). The runner itself needs nothing of the trainer's environment: only the trainer process
does. So when the runtime_env is made only of what a process can be given directly, the
controller creates the runner without it and hands it this spec instead; the runner sets it up
on its node as Ray's runtime_env agent would (the same content-addressed packages from the GCS,
unpacked once per node and reused by later attempts) and starts the trainer with it:

    working_dir    the trainer's cwd, first on PYTHONPATH
    py_modules     their folders next on PYTHONPATH (the SDK, importable as `sdk`)
    env_vars       added to the trainer's environment
    py_executable  the trainer's interpreter (its prebuilt virtualenv)

`pip`/`uv` dependencies need Ray's runtime_env (Ray builds those environments), so a trainer with
them keeps it on its runner.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray_app.runtime import node_envs

SPEC_FIELDS = ("working_dir", "py_modules", "env_vars", "py_executable")  # what the trainer gets
PROCESS_FIELDS = frozenset({*SPEC_FIELDS, "excludes"})  # excludes only shaped the uploaded package


def split(renv: dict[str, Any], pooled: bool = True) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the runner actor's runtime_env, the trainer process's spec or None).

    With ``pooled`` and a runtime_env a process can be given directly, the runner gets none;
    otherwise the runner keeps the whole runtime_env and the trainer inherits it."""
    if not pooled or not set(renv) <= PROCESS_FIELDS:
        return renv, None
    spec = {k: renv[k] for k in SPEC_FIELDS if renv.get(k)}
    return {}, spec


@dataclass
class TrainerProcessEnv:
    """What the runner starts the trainer with."""

    python: str = field(default_factory=lambda: sys.executable)
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to the runner's environment


def packages_dir() -> Path:
    """Node-local cache of unpacked packages, shared by the attempts on this node: the URIs are
    content hashes, so an unchanged trainer folder is unpacked once."""
    return Path(os.environ.get("VTP_TRAINER_PACKAGES_DIR") or Path.home() / ".cache" / "vtp-trainer-packages")


async def _unpack(uri: str, base_dir: Path) -> str:
    from ray_app.runtime import ray_private

    # file-locked and cached by URI inside Ray's helper: concurrent runners unpack once
    return await ray_private.download_and_unpack(uri, str(base_dir))


async def _say_nothing(event_type: str, message: str, data: dict[str, Any]) -> None:
    return None


async def materialize(spec: dict[str, Any], base_dir: Path | None = None,
                      say: node_envs.Say = _say_nothing) -> TrainerProcessEnv:
    """Download and unpack the spec's packages on this node; returns the process's settings.
    The trainer's virtualenv is the one on this node, built here first if the node lacks it
    (node_envs.py; `say` tells the job)."""
    base = base_dir or packages_dir()
    base.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    cwd = None
    if spec.get("working_dir"):
        cwd = await _unpack(spec["working_dir"], base)
        paths.append(cwd)
    for uri in spec.get("py_modules") or []:
        paths.append(await _unpack(uri, base))
    env = {k: str(v) for k, v in (spec.get("env_vars") or {}).items()}
    # Ray's precedence: the packages, then env_vars' PYTHONPATH, then the node's
    tail = [p for p in (env.get("PYTHONPATH"), os.environ.get("PYTHONPATH")) if p]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths + tail)
    python = spec.get("py_executable") or sys.executable
    if spec.get("py_executable"):
        python = await node_envs.trainer_python(python, cwd, say)
    return TrainerProcessEnv(python=python, cwd=cwd, env=env)
