"""The model server: a Ray Serve deployment that runs one trainer's `predict.py` on many jobs'
checkpoints, with Serve's model multiplexing (DESIGN §10).

A trainer that supports inference has a `predict.py` (manifest `entrypoints.predict`) with

    def load_model(checkpoint_path: str, device: str) -> Any
    def predict(model, image_paths: list[str], **options) -> list[dict]   # one dict per image

The paths are files this server wrote, under names of its own, from uploads the API decoded and
found to be images (ray_app/serving/images.py): an uploader's file name is never a path here.

Each replica runs in the trainer's runtime_env (its working_dir, its venv), so `predict.py` runs
where `train.py` ran. A request names its model by the multiplexed model id `<job id>|<checkpoint
URI>` (ray_app/serving/apps.py): a replica loads a model on first use (the checkpoint fetched from
S3), keeps at most `predict_models_per_replica` of them, unloads the least recently used one past
that (LoadedModel.__del__ frees it), and Serve routes a request to a replica that already holds
its model. A job's new checkpoint is a new model id, so a stale model is never served.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray
from ray import serve
from sdk.contract import S3_SCHEME

from ray_app.serving.images import image_suffix
from ray_app.serving.trainer_files import fetch_checkpoint, load_entrypoint


def split_model_id(model_id: str) -> tuple[str, str]:
    job_id, _, checkpoint = model_id.partition("|")
    return job_id, checkpoint


class LoadedModel:
    """One job's model in a replica. Serve calls __del__ when it evicts the model: the reference
    to the trainer's model goes, and with it its memory (and the GPU cache torch holds for it)."""

    def __init__(self, model_id: str, model: Any, on_unload):
        self.model_id = model_id
        self.model = model
        self._on_unload = on_unload
        self._unloaded = False

    def __del__(self) -> None:
        # Serve calls it on eviction, and the garbage collector again later: once is the unload
        if self._unloaded:
            return
        self._unloaded = True
        self.model = None
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
        self._on_unload(self.model_id)


@serve.deployment(logging_config={"enable_access_log": False})
class ModelServer:
    """Deployed per trainer by ray_app/serving/apps.py (name, runtime_env, resources, replicas)."""

    def __init__(self, entrypoint: str, models_per_replica: int, env: dict[str, str], version: str = ""):
        self._version = version
        # the storage keys: handed as an argument like the runners' (never in the runtime_env,
        # which the dashboard shows), for fetching checkpoints from S3
        os.environ.update(env)
        self.module = load_entrypoint(entrypoint, "trainer_predict")
        self.device = "0" if ray.get_gpu_ids() else "cpu"
        self.resident: set[str] = set()
        self.loads: dict[str, int] = {}
        self._run_lock = threading.Lock()  # a trainer's model is not assumed thread-safe

        async def load(model_id: str) -> LoadedModel:
            return await asyncio.to_thread(self._load, model_id)

        # a method-level decorator cannot take a setting; Serve detects this instance attribute
        self.get_model = serve.multiplexed(max_num_models_per_replica=models_per_replica)(load)

    def _load(self, model_id: str) -> LoadedModel:
        _, checkpoint = split_model_id(model_id)
        local = self._fetch(checkpoint)
        model = LoadedModel(model_id, self.module.load_model(str(local), self.device), self.resident.discard)
        self.resident.add(model_id)
        self.loads[model_id] = self.loads.get(model_id, 0) + 1
        return model

    def _fetch(self, uri: str) -> Path:
        import boto3

        client = boto3.client(
            "s3", endpoint_url=os.environ.get("S3_ENDPOINT") or None,
            aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
            region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        ) if uri.startswith(S3_SCHEME) else None
        return fetch_checkpoint(client, uri, Path(tempfile.mkdtemp(prefix="vtp-predict-")))

    async def predict(self, images: list[tuple[str, bytes]], options: dict[str, Any]) -> dict[str, Any]:
        model_id = serve.get_multiplexed_model_id()
        cached = model_id in self.resident
        loaded = await self.get_model(model_id)
        return await asyncio.to_thread(self._predict, loaded, images, options, cached)

    def _predict(self, loaded: LoadedModel, images: list[tuple[str, bytes]], options: dict[str, Any],
                 cached: bool) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="vtp-predict-in-") as tmp, self._run_lock:
            paths = []
            for i, (_, data) in enumerate(images):
                # a name of our own, its suffix the format found in the bytes: the uploader's name
                # never reaches the framework (images.py; the API checked the images already)
                path = Path(tmp) / f"{i:04d}{image_suffix(data, decode=False)}"
                path.write_bytes(data)
                paths.append(str(path))
            t0 = time.perf_counter()
            results = self.module.predict(loaded.model, paths, **options)
            elapsed = time.perf_counter() - t0
        for result, (name, _) in zip(results, images):
            result.setdefault("image", name)
        return {"checkpoint": split_model_id(loaded.model_id)[1], "predictions": results,
                "inference_seconds": round(elapsed, 4), "model_cached": cached}

    def version(self) -> str:
        """The fingerprint of the configuration this replica was deployed with (apps.py)."""
        return self._version

    def status(self) -> dict[str, Any]:
        """What this replica holds (tests, benchmarks): the resident model ids, how often each
        was loaded, its memory."""
        import psutil

        return {"resident": sorted(self.resident), "loads": dict(self.loads),
                "rss_bytes": psutil.Process().memory_info().rss, "device": self.device, "pid": os.getpid()}
