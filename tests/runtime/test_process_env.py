"""Which runtime_envs a runner can apply to the trainer process itself, and how (process_env.py).

The path through a real Ray cluster (packages unpacked on the node, the trainer's cwd and
variables) is in test_runtime_lifecycle.py; the Ultralytics and timm tests run venv trainers
(py_executable) through it."""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from ray_app.runtime import node_envs, process_env

RENV = {"working_dir": "gcs://_ray_pkg_a.zip", "py_modules": ["gcs://_ray_pkg_b.zip"],
        "excludes": ["*.pt"], "env_vars": {"JOB_ID": "j1", "PYTHONPATH": "/extra"},
        "py_executable": "/venvs/ul/bin/python"}


def built_venv(root: Path, name: str) -> Path:
    """A venv folder as venvs.build leaves it (the marker is what says built)."""
    venv = root / name
    (venv / "bin").mkdir(parents=True)
    (venv / ".complete").write_text("")
    return venv


def test_the_trainers_interpreter_is_the_one_on_the_runners_node(monkeypatch, tmp_path):
    async def say(event_type: str, message: str, data: dict) -> None:
        raise AssertionError(f"nothing to build, yet: {event_type}")

    controller = built_venv(tmp_path / "controller", "ul-0123") / "bin" / "python"
    monkeypatch.delenv("VTP_TRAINER_VENVS_DIR", raising=False)  # the node shares the controller's folder
    assert asyncio.run(node_envs.trainer_python(str(controller), None, say)) == str(controller)
    node = built_venv(tmp_path / "node", "ul-0123")
    monkeypatch.setenv("VTP_TRAINER_VENVS_DIR", str(tmp_path / "node"))  # the node keeps its own
    assert asyncio.run(node_envs.trainer_python(str(controller), None, say)) == str(node / "bin" / "python")


def test_a_runtime_env_of_process_fields_leaves_the_runner_without_one():
    runner_renv, spec = process_env.split(RENV)
    assert runner_renv == {}
    assert spec == {k: RENV[k] for k in ("working_dir", "py_modules", "env_vars", "py_executable")}


def test_pip_or_uv_dependencies_or_the_setting_off_keep_the_runtime_env_on_the_runner():
    pip = {**RENV, "pip": {"packages": ["timm"]}}
    assert process_env.split(pip) == (pip, None)  # Ray builds that environment
    assert process_env.split(RENV, pooled=False) == (RENV, None)


def test_materialized_spec_gives_cwd_pythonpath_in_ray_order_and_the_interpreter(monkeypatch, tmp_path):
    async def unpack(uri: str, base) -> str:  # stands in for Ray's download (no cluster here)
        return str(base / uri.split("//")[1].removesuffix(".zip"))

    monkeypatch.setattr(process_env, "_unpack", unpack)
    monkeypatch.setenv("PYTHONPATH", "/node")
    monkeypatch.delenv("VTP_TRAINER_VENVS_DIR", raising=False)
    python = built_venv(tmp_path / "venvs", "ul-0123") / "bin" / "python"
    _, spec = process_env.split({**RENV, "py_executable": str(python)})
    got = asyncio.run(process_env.materialize(spec, tmp_path))
    assert got.cwd == str(tmp_path / "_ray_pkg_a") and got.python == str(python)
    # Ray's precedence: working_dir, py_modules, then env_vars' PYTHONPATH, then the node's
    assert got.env["PYTHONPATH"].split(os.pathsep) == [
        str(tmp_path / "_ray_pkg_a"), str(tmp_path / "_ray_pkg_b"), "/extra", "/node"]
    assert got.env["JOB_ID"] == "j1"
    bare = asyncio.run(process_env.materialize({"env_vars": {"A": 1}}, tmp_path))
    assert bare.cwd is None and bare.python == sys.executable and bare.env == {"A": "1"}
