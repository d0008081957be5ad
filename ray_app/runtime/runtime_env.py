"""The Ray runtime_env of a trainer attempt (DESIGN §6).

working_dir  the trainer's folder          py_modules  the trainer SDK (importable as `sdk`)
env_vars     the public contract variables  + the trainer's dependencies, one of:
  venv  a prebuilt per-trainer virtualenv through `py_executable` (built on first use)
  pip / uv  Ray installs the requirements itself (for clusters whose base Python is not a venv)
  none  the platform environment as it is
"""

from __future__ import annotations

import re
from typing import Any

from ray_app.config import REPO_ROOT, Settings
from ray_app.runtime import venvs
from ray_app.runtime.registry import TrainerManifest

SDK_DIR = REPO_ROOT / "trainers" / "sdk"
EXCLUDES = ["__pycache__", "*.pyc", "*.pt", "*.pth", "runs/", "mlruns/", ".venv/"]


def dependency_fields(settings: Settings, manifest: TrainerManifest, log=print) -> dict[str, Any]:
    mode = manifest.env
    requirements = manifest.requirement_lines()
    if mode == "none" or (mode in ("pip", "uv") and not requirements):
        return {}
    if mode == "venv":
        venv = venvs.find_built(settings.venvs_dir, manifest) or venvs.build(
            settings.venvs_dir, manifest, log=log
        )
        return {"py_executable": str(venvs.python_of(venv))}
    return {mode: {"packages": requirements}}


def build(
    settings: Settings, manifest: TrainerManifest, public_env: dict[str, str], log=print
) -> dict[str, Any]:
    runtime_env: dict[str, Any] = {
        "working_dir": str(manifest.folder),
        "excludes": EXCLUDES,
        "env_vars": dict(public_env),
        **dependency_fields(settings, manifest, log=log),
    }
    if SDK_DIR.is_dir():
        runtime_env["py_modules"] = [str(SDK_DIR)]
    return runtime_env


def upload_local_dirs(renv: dict[str, Any], scratch_dir: str, log=None) -> dict[str, Any]:
    """Replace local folders by content-addressed GCS URIs.

    Only a driver may hand Ray local folders; the controller is an actor, so it uploads them
    itself, the way Ray's job submission does. Unchanged folders hash to the same URI and are
    not uploaded again, which keeps a warm launch fast.
    """
    import logging

    from ray_app.runtime import ray_private

    return ray_private.upload_local_dirs(renv, scratch_dir, log or logging.getLogger("ray_app.runtime_env"))


def prepare(settings: Settings, manifest: TrainerManifest, public_env: dict[str, str], log=print) -> dict[str, Any]:
    """The runtime_env ready to hand to Ray from inside an actor (folders uploaded)."""
    scratch = settings.data_dir / "runtime_env_scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    return upload_local_dirs(build(settings, manifest, public_env, log=log), str(scratch))


def runner_name(job_id: str, attempt: int, rank: int = 0) -> str:
    """The actor's name: how the Ray dashboard and `ray list actors` show the job's trainer (rank
    0, the one that reports for the job, keeps the plain name; a gang's other ranks add theirs)."""
    base = f"trainer:job-{job_id}:attempt-{attempt}"
    return f"{base}:rank-{rank}" if rank else base


RUNNER_NAME = re.compile(r"trainer:job-(?P<job_id>.+?):attempt-(?P<attempt>[0-9]+)(?::rank-(?P<rank>[0-9]+))?")


def parse_runner_name(name: str) -> tuple[str, int] | None:
    """(job id, attempt) of a runner's actor name, any rank's; None for any other name."""
    parsed = parse_rank_runner_name(name)
    return parsed[:2] if parsed else None


def parse_rank_runner_name(name: str) -> tuple[str, int, int] | None:
    """(job id, attempt, rank) of a runner's actor name; None for any other name."""
    match = RUNNER_NAME.fullmatch(name)
    return (match["job_id"], int(match["attempt"]), int(match["rank"] or 0)) if match else None
