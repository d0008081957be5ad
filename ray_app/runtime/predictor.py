"""Inference with a finished job's checkpoint, on Ray, in the trainer's own runtime.

A trainer that supports inference has a `predict.py` (manifest `entrypoints.predict`) with

    def load_model(checkpoint_path: str, device: str) -> Any
    def predict(model, image_paths: list[str], **options) -> list[dict]   # one dict per image

(and a command line of its own for local use). The platform keeps one Predictor actor per job,
named `predictor:job-<id>`, created with the trainer's runtime_env; it downloads the checkpoint
once and keeps the model loaded between calls.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from sdk.contract import S3_SCHEME, parse_s3_uri

from ray_app.config import NAMESPACE, Settings
from ray_app.jobs.job import Job
from ray_app.jobs.states import JobState
from ray_app.runtime import contract_env, runtime_env
from ray_app.runtime.registry import TrainerManifest

CHECKPOINT_PREFERENCE = ("best", "best_checkpoint", "last", "last_checkpoint")


class PredictUnavailable(Exception):
    """The job cannot serve predictions (not finished, no checkpoint, no predict entrypoint)."""


def checkpoint_of(job: Job) -> str:
    artifacts = job.artifacts or {}
    for name in CHECKPOINT_PREFERENCE:
        if artifacts.get(name):
            return artifacts[name]
    raise PredictUnavailable(f"job {job.id} reported no checkpoint (artifacts: {sorted(artifacts)})")


@ray.remote(max_restarts=1, max_concurrency=1)  # type: ignore[call-overload]  # Ray's typed overloads lack actor options (max_concurrency)
class Predictor:
    def __init__(self, entrypoint: str, checkpoint_uri: str, env: dict[str, str]):
        os.environ.update(env)
        self.started = time.monotonic()
        self.checkpoint_uri = checkpoint_uri
        spec = importlib.util.spec_from_file_location("trainer_predict", Path.cwd() / entrypoint)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {entrypoint}")
        self.module = importlib.util.module_from_spec(spec)
        sys.modules["trainer_predict"] = self.module
        spec.loader.exec_module(self.module)
        self.local = self._fetch(checkpoint_uri)
        gpu = ray.get_gpu_ids()
        self.device = "0" if gpu else "cpu"
        self.model = self.module.load_model(str(self.local), self.device)
        self.calls = 0

    def _fetch(self, uri: str) -> Path:
        if not uri.startswith(S3_SCHEME):
            return Path(uri)
        import boto3

        bucket, key = parse_s3_uri(uri)
        target = Path(tempfile.mkdtemp(prefix="vtp-predict-")) / Path(key).name
        boto3.client(
            "s3", endpoint_url=os.environ.get("S3_ENDPOINT") or None,
            aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
            region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        ).download_file(bucket, key, str(target))
        return target

    def predict(self, images: list[tuple[str, bytes]], options: dict[str, Any]) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="vtp-predict-in-") as tmp:
            paths = []
            for i, (name, data) in enumerate(images):
                path = Path(tmp) / f"{i:04d}-{Path(name).name or 'image'}"
                path.write_bytes(data)
                paths.append(str(path))
            t0 = time.perf_counter()
            results = self.module.predict(self.model, paths, **options)
            elapsed = time.perf_counter() - t0
        self.calls += 1
        for result, (name, _) in zip(results, images):
            result.setdefault("image", name)
        return {"checkpoint": self.checkpoint_uri, "predictions": results,
                "inference_seconds": round(elapsed, 4), "model_cached": self.calls > 1}


def get_or_create(settings: Settings, manifest: TrainerManifest, job: Job) -> Any:
    if not manifest.entrypoints.predict:
        raise PredictUnavailable(f"trainer {manifest.name!r} has no predict entrypoint")
    if job.state is not JobState.SUCCEEDED:
        raise PredictUnavailable(f"job {job.id} is {job.state.value}; predictions need a SUCCEEDED job")
    checkpoint = checkpoint_of(job)
    name = runtime_env.predictor_name(job.id)
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        pass
    env = contract_env.build(settings, job)
    renv = runtime_env.prepare(settings, manifest, env.public)
    return Predictor.options(  # type: ignore[attr-defined]  # a @ray.remote class: Ray's decorator typing does not carry .options
        name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        num_cpus=min(job.num_cpus or 1, 1), num_gpus=min(job.num_gpus or 0, 1),
        runtime_env=renv,
    ).remote(manifest.entrypoints.predict, checkpoint, env.secret)
