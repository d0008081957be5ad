"""Every Ray private API the platform calls, in one place (issue 14, point 6).

Ray's `ray._private` is not covered by its compatibility promise: a minor release may move,
rename or re-sign any of it. pyproject.toml therefore pins Ray to the minor series we test
(`ray==2.60.*`), and tests/runtime/test_ray_private.py imports each symbol below and checks the
parameters we pass, so an upgrade that breaks one fails there, naming it, instead of in a launch.

The symbols, what we use them for, and the public alternative:

`ray._private.runtime_env.working_dir.upload_working_dir_if_needed`
`ray._private.runtime_env.py_modules.upload_py_modules_if_needed`
    Upload a trainer's folder and the SDK to the GCS as content-addressed packages, from the
    controller. Public alternative: none from inside an actor: Ray accepts local folders in a
    runtime_env only from a driver (`ray.init(runtime_env=...)`, `ray job submit`), which uploads
    them with these same helpers. Avoiding them means a driver per launch, or trainers shipped
    as remote URIs (S3/HTTPS zip) that someone uploads beforehand.

`ray._private.runtime_env.packaging.download_and_unpack_package`
`ray._private.worker.global_worker.gcs_client`
    The pooled-runner path (runtime/process_env.py): the runner unpacks those packages on its
    node itself (file-locked, cached per URI, as Ray's runtime_env agent does) instead of getting
    a runtime_env, which costs a `setup_worker.py` interpreter per actor. Public alternative:
    hand the runner the runtime_env (`VTP_POOLED_RUNNERS=false`); bench/README.md has the
    launch latency of both.

`ray._private.state.actors` and `ActorHandle._actor_id`
    An actor's death cause (a protobuf ActorDeathCause), its pid and node, for the one-sentence
    reason of a lost runner (runtime/deaths.py). Public alternative: `ray.util.state.get_actor`
    (needs the dashboard's state API, and gives the cause as text, not the structured fields
    `deaths.explain` reads); without either, the exception's text alone.
"""

from __future__ import annotations

import logging
from typing import Any


def upload_local_dirs(renv: dict[str, Any], scratch_dir: str, logger: logging.Logger) -> dict[str, Any]:
    """`working_dir` and `py_modules` local folders replaced by GCS package URIs (uploaded if
    the GCS does not have them yet)."""
    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    renv = upload_working_dir_if_needed(renv, include_gitignore=True, scratch_dir=scratch_dir, logger=logger)
    return upload_py_modules_if_needed(renv, include_gitignore=True, scratch_dir=scratch_dir, logger=logger)


def gcs_client() -> Any:
    """This worker's GCS client (the worker must be connected)."""
    import ray._private.worker

    return ray._private.worker.global_worker.gcs_client  # type: ignore[attr-defined]  # set on connect, not declared


async def download_and_unpack(uri: str, base_dir: str) -> str:
    """The package `uri` unpacked under `base_dir` (once per node: file-locked and cached by URI
    inside Ray's helper); returns its folder."""
    from ray._private.runtime_env.packaging import download_and_unpack_package

    return await download_and_unpack_package(uri, base_dir, gcs_client=gcs_client())


def actor_id_hex(actor: Any) -> str:
    return actor._actor_id.hex()


def actor_info(actor_id: str) -> dict[str, Any]:
    """The GCS actor table's entry: `DeathCause` (protobuf), `Pid`, `Address.NodeID`, ..."""
    from ray._private import state

    return state.actors(actor_id)
