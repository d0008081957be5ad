"""Validation on arrival: a Ray task per completed upload, not work in the API replica.

The task reads the version's archive from S3, checks that its bytes hash to the version the
client declared (the client computed it; the platform never trusted it before now), applies the
archive safety rules and inspects the dataset (ray_app/datasets/inspect.py), stores up to 12
sample thumbnails with their labels beside the archive (ray_app/datasets/samples.py, for the
console), and records the report through the store: VALID, or INVALID with every problem and the
file it is in.
Ray retries the task if its worker or node dies (max_retries), so a version does not stay
VALIDATING because a machine went away.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from ray_app.config import Settings
from ray_app.datasets.models import Problem, ValidationReport, sha256_of

log = logging.getLogger("ray_app.datasets")


def validate_archive(archive: Path, version: str, work_dir: Path) -> ValidationReport:
    """The report of one downloaded archive that should hash to `version`."""
    from ray_app.datasets.inspect import inspect_archive  # Pillow and the SDK: in the task only

    started = time.monotonic()
    actual = sha256_of(archive)
    if actual != version:
        return ValidationReport(problems=[Problem(problem=(
            f"content hash mismatch: the upload declared sha256 {version}, its bytes hash to {actual}"))],
            problems_total=1, seconds=round(time.monotonic() - started, 3))
    return inspect_archive(archive, work_dir)


def store_samples(storage: Any, key: str, work_dir: Path, fmt: str | None) -> int:
    """Thumbnails of the dataset extracted under ``work_dir`` into S3 beside the archive ``key``;
    how many. Samples are a view, never a finding: any failure is logged, and validation goes on."""
    if fmt is None:  # refused, unrecognised, or never extracted: nothing to show
        return 0
    try:
        from sdk.datasets.formats import find_root

        from ray_app.datasets.inspect import EXTRACT_DIR
        from ray_app.datasets.samples import build_samples, upload_samples

        samples = build_samples(find_root(work_dir / EXTRACT_DIR), fmt)
        return len(upload_samples(storage.client, storage.bucket, key, samples))
    except Exception:
        log.exception("samples of %s not stored", key)
        return 0


def _validate(settings: Settings, dataset_id: str, version: str, key: str) -> dict[str, Any]:
    from ray_app.datasets.uploads import Storage
    from ray_app.store.client import StoreClient

    storage = Storage(settings)
    with tempfile.TemporaryDirectory(prefix="vtp-validate-") as tmp:
        archive = Path(tmp) / Path(key).name
        storage.client.download_file(storage.bucket, key, str(archive))
        report = validate_archive(archive, version, Path(tmp) / "dataset")
        samples = store_samples(storage, key, Path(tmp) / "dataset", report.format)
    log.info("dataset %s version %s: %s, %d problem(s) in %.1fs, %d sample(s)", dataset_id, version[:12],
             report.format, report.problems_total, report.seconds, samples)
    return asyncio.run(StoreClient(settings).dataset_validated(dataset_id, version, report.model_dump(mode="json")))


validate_version = ray.remote(num_cpus=1, max_retries=3)(_validate)


def start_validation(settings: Settings, dataset_id: str, version: str, key: str) -> None:
    """Fire and forget: the task records its result in the store, which the API then shows."""
    validate_version.options(name=f"validate-dataset-{dataset_id}").remote(settings, dataset_id, version, key)
