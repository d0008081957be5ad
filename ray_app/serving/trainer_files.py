"""What the serving side takes from a trainer and from a job: the trainer's entrypoint module
(predict.py, export.py), imported from the trainer's folder, and the job's checkpoint, fetched
from S3. Used by the model server, the export task and the MLflow model task alike."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from sdk.contract import S3_SCHEME, parse_s3_uri


def load_entrypoint(entrypoint: str, module_name: str, folder: Path | None = None) -> ModuleType:
    """Import `entrypoint` (a file of the trainer's folder; default: the working directory, which
    the trainer's runtime_env makes its folder) as `module_name`."""
    spec = importlib.util.spec_from_file_location(module_name, (folder or Path.cwd()) / entrypoint)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {entrypoint}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def fetch_checkpoint(s3_client: Any, uri: str, folder: Path) -> Path:
    """A local copy of the checkpoint at `uri` in `folder` (an s3:// object), or the path itself."""
    if not uri.startswith(S3_SCHEME):
        return Path(uri)
    bucket, key = parse_s3_uri(uri)
    target = folder / Path(key).name
    s3_client.download_file(bucket, key, str(target))
    return target
