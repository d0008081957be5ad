"""The Ray private APIs of runtime/ray_private.py still exist with the parameters we pass.

Ray is pinned to the minor series these pass on (pyproject.toml); when an upgrade moves or
re-signs one of them, the failure names the symbol. No cluster needed.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

from ray_app.runtime import ray_private

# (module, attribute, the parameters we pass, whether it must be a coroutine function)
FUNCTIONS = [
    ("ray._private.runtime_env.working_dir", "upload_working_dir_if_needed",
     ("runtime_env", "include_gitignore", "scratch_dir", "logger"), False),
    ("ray._private.runtime_env.py_modules", "upload_py_modules_if_needed",
     ("runtime_env", "include_gitignore", "scratch_dir", "logger"), False),
    ("ray._private.runtime_env.packaging", "download_and_unpack_package",
     ("pkg_uri", "base_directory", "gcs_client"), True),
    ("ray._private.state", "actors", ("actor_id",), False),
]


def _resolve(module: str, name: str):
    symbol = f"{module}.{name}"
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"Ray private API moved: cannot import {module} (for {symbol}; see ray_app/runtime/"
                    f"ray_private.py): {exc}")
    if not hasattr(mod, name):
        pytest.fail(f"Ray private API moved: {symbol} no longer exists (see ray_app/runtime/ray_private.py)")
    return getattr(mod, name)


@pytest.mark.parametrize(("module", "name", "params", "coroutine"), FUNCTIONS,
                         ids=[f"{m}.{n}" for m, n, _, _ in FUNCTIONS])
def test_private_function_signature(module, name, params, coroutine):
    fn = _resolve(module, name)
    symbol = f"{module}.{name}"
    sig = inspect.signature(fn)
    missing = [p for p in params if p not in sig.parameters]
    assert not missing, f"Ray private API changed: {symbol}{sig} lacks the parameters {missing} we pass"
    # the first ones are passed by position
    positional = [p.name for p in sig.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if name in ("download_and_unpack_package", "actors"):
        n = 2 if name == "download_and_unpack_package" else 1
        assert positional[:n] == list(params[:n]), (
            f"Ray private API changed: {symbol}{sig}: we pass {params[:n]} by position")
    required = [p.name for p in sig.parameters.values()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    extra = [p for p in required if p not in params]
    assert not extra, f"Ray private API changed: {symbol}{sig} now requires {extra}"
    assert inspect.iscoroutinefunction(fn) == coroutine, (
        f"Ray private API changed: {symbol} is {'no longer' if coroutine else 'now'} a coroutine function")


def test_global_worker_has_gcs_client():
    worker_mod = _resolve("ray._private", "worker")
    worker = getattr(worker_mod, "global_worker", None)
    assert worker is not None, "Ray private API moved: ray._private.worker.global_worker no longer exists"
    # set on connect (ray._private.worker.connect: `worker.gcs_client = node.get_gcs_client()`)
    source = inspect.getsource(worker_mod.connect)
    assert "worker.gcs_client =" in source, (
        "Ray private API changed: ray._private.worker.connect no longer sets global_worker.gcs_client")


def test_actor_handle_has_actor_id():
    from ray.actor import ActorHandle

    assert isinstance(inspect.getattr_static(ActorHandle, "_actor_id", None), property), (
        "Ray private API changed: ray.actor.ActorHandle._actor_id is gone")


def test_ray_private_module_names_every_symbol():
    doc = ray_private.__doc__ or ""
    for module, name, _, _ in FUNCTIONS:
        assert f"{module}.{name}" in doc, f"ray_private.py's docstring does not name {module}.{name}"
    assert "ray._private.worker.global_worker.gcs_client" in doc
    assert "ActorHandle._actor_id" in doc


def test_no_private_ray_elsewhere():
    """Every private call goes through ray_private.py."""
    from pathlib import Path

    root = Path(ray_private.__file__).resolve().parents[1]
    offenders = [str(p.relative_to(root.parent)) for p in root.rglob("*.py")
                 if p.name != "ray_private.py" and ("ray._private" in p.read_text() or "._actor_id" in p.read_text())]
    assert not offenders, f"Ray private APIs used outside ray_app/runtime/ray_private.py: {offenders}"
