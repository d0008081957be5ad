"""Dataset download through the per-node cache, against a real S3 server."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from ray_app.datasets import make_classification, make_detection, zip_dataset
from ray_app.storage import upload_dataset
from tests.fixtures.s3 import TRAINERS_DIR

from sdk import DatasetError, TrainerSDK
from sdk.datasets import DatasetCache


def new_id() -> str:
    return f"ds-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def det_zip(tmp_path_factory) -> Path:
    root = make_detection(tmp_path_factory.mktemp("det") / "det", n_images=12, size=64)
    return zip_dataset(root)


def sdk_for(env: dict[str, str], **extra: str) -> TrainerSDK:
    return TrainerSDK({**env, **extra}, install_signal_handlers=False)


def test_zip_dataset_is_cached_and_second_download_reads_zero_bytes(s3_env, s3_server, det_zip, tmp_path):
    ds = new_id()
    upload_dataset(s3_server.client(), s3_server.bucket, ds, det_zip)
    with sdk_for(s3_env, DATASET_ID=ds) as sdk:
        root = sdk.download_dataset()
        assert (root / "annotations.json").is_file() and len(list((root / "images").iterdir())) == 12
        assert sdk.bytes_downloaded == det_zip.stat().st_size
    with sdk_for(s3_env, DATASET_ID=ds, JOB_ID="other-job") as sdk2:
        root2 = sdk2.download_dataset()
        assert root2 == root
        assert sdk2.bytes_downloaded == 0  # only a HEAD
        out = sdk2.prepare_dataset("yolo")  # converts from the cache without touching it
        assert (out / "data.yaml").is_file() and out.is_relative_to(Path(s3_env["WORK_DIR"]))
    assert not list((root).glob("*.yaml"))


def test_platform_dataset_uri_and_own_copy(s3_env, s3_server, det_zip, tmp_path):
    ds = new_id()
    upload_dataset(s3_server.client(), s3_server.bucket, ds, det_zip)
    uri = f"s3://{s3_server.bucket}/datasets/{ds}"  # what the platform sets (no suffix)
    with sdk_for(s3_env, DATASET_ID=ds, DATASET_S3_URI=uri) as sdk:
        root = sdk.download_dataset(dest=tmp_path / "mine")
        assert root == tmp_path / "mine" and (root / "annotations.json").is_file()
        (root / "scratch.txt").write_text("the job may add files")  # its own folder
    cache = DatasetCache(s3_env["DATASET_CACHE_DIR"])
    [(key, _, _)] = cache.entries()
    assert not (cache.entry_path(key) / "scratch.txt").exists()


def test_prefix_dataset_cache_key_follows_content(s3_env, s3_server, tmp_path):
    ds = new_id()
    root = make_classification(tmp_path / "cls", n_images=9, size=48)
    client = s3_server.client()
    upload_dataset(client, s3_server.bucket, ds, root)
    with sdk_for(s3_env, DATASET_ID=ds) as sdk:
        first = sdk.download_dataset()
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        assert sdk.bytes_downloaded == size
    with sdk_for(s3_env, DATASET_ID=ds) as sdk:
        assert sdk.download_dataset() == first and sdk.bytes_downloaded == 0
    # The dataset changes in S3: a new cache entry, downloaded again.
    client.put_object(Bucket=s3_server.bucket, Key=f"datasets/{ds}/images/img_0000.png", Body=b"changed")
    with sdk_for(s3_env, DATASET_ID=ds) as sdk:
        second = sdk.download_dataset()
        assert second != first and (second / "images" / "img_0000.png").read_bytes() == b"changed"
        assert sdk.bytes_downloaded > 0


def test_missing_and_hostile_datasets(s3_env, s3_server, tmp_path):
    with sdk_for(s3_env, DATASET_ID="nope-123") as sdk:
        with pytest.raises(DatasetError, match=r"datasets/nope-123\.zip.*datasets/nope-123/"):
            sdk.download_dataset()
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("annotations.json", "{}")
        zf.writestr("../../escaped.txt", "x")
    ds = new_id()
    upload_dataset(s3_server.client(), s3_server.bucket, ds, evil)
    with sdk_for(s3_env, DATASET_ID=ds) as sdk:
        with pytest.raises(DatasetError, match="path traversal"):
            sdk.download_dataset()
    cache = Path(s3_env["DATASET_CACHE_DIR"])
    assert list((cache / "entries").iterdir()) == [] and list((cache / "tmp").iterdir()) == []


CONCURRENT = """
import json, sys
from sdk import TrainerSDK
sdk = TrainerSDK(install_signal_handlers=False)
root = sdk.download_dataset()
n = len(list((root / "images").iterdir()))
print(json.dumps({"root": str(root), "bytes": sdk.bytes_downloaded, "images": n}), flush=True)
sdk.close()
"""


def test_concurrent_downloads_make_one_complete_copy(s3_env, s3_server, det_zip, tmp_path):
    ds = new_id()
    upload_dataset(s3_server.client(), s3_server.bucket, ds, det_zip)
    env = {**os.environ, **s3_env, "DATASET_ID": ds, "PYTHONPATH": str(TRAINERS_DIR)}
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT], env={**env, "JOB_ID": f"j{i}"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0]["root"] == results[1]["root"]
    assert all(r["images"] == 12 for r in results)
    assert sorted(r["bytes"] for r in results) == [0, det_zip.stat().st_size]
    cache = Path(s3_env["DATASET_CACHE_DIR"])
    assert len(list((cache / "entries").iterdir())) == 1
    assert list((cache / "tmp").iterdir()) == []


def _fill(n: int):
    def fill(tmp: Path) -> None:
        (tmp / "data.bin").write_bytes(b"x" * n)
    return fill


def test_lru_eviction_respects_the_bound_and_entries_in_use(tmp_path):
    root = tmp_path / "cache"
    a = DatasetCache(root, max_bytes=2500)
    for key in ("k1", "k2"):
        a.get_or_fill(key, _fill(1000))
        time.sleep(0.01)
    a.release_all()
    a.get_or_fill("k1", _fill(1000))  # k1 used again: k2 is now least recently used
    a.release_all()
    time.sleep(0.01)
    a.get_or_fill("k3", _fill(1000))
    assert sorted(k for k, _, _ in a.entries()) == ["k1", "k3"]
    assert a.total_bytes() <= 2500
    a.release_all()

    # Another job (another cache handle = another open file description) reads k1 in place:
    # it is the LRU entry but must not be evicted; k3 goes instead.
    job = DatasetCache(root, max_bytes=2500)
    path, hit = job.get_or_fill("k1", _fill(1000))
    assert hit
    time.sleep(0.01)
    b = DatasetCache(root, max_bytes=2500)
    path4, _ = b.get_or_fill("k4", _fill(1000))
    assert sorted(k for k, _, _ in b.entries()) == ["k1", "k4"]
    assert (path / "data.bin").exists() and (path4 / "data.bin").exists()
    # The entry being returned is never evicted, even when it alone exceeds the bound.
    big, _ = b.get_or_fill("k5", _fill(5000))
    assert (big / "data.bin").exists() and "k1" in {k for k, _, _ in b.entries()}
    job.release_all()
    b.release_all()
