"""Benchmark 4 — transfers: the trainer SDK versus plain boto3 against the same S3 server.

One embedded SeaweedFS (`ray_app.storage.SeaweedS3Server`, loopback). Same objects, same machine,
interleaved repetitions, medians:

  dataset download   SDK `download_dataset()` (cold node cache: download + unpack into the cache)
                     vs boto3 `download_file` + `zipfile.extractall` (the same end result)
  raw download       SDK `S3Storage.download_file` vs boto3 `download_file`
  checkpoint upload  SDK `upload_checkpoint(wait=True)` (snapshot + background multipart upload)
                     vs boto3 `upload_file`
  repeated download  SDK `download_dataset()` again on a warm cache: bytes fetched (target 0)

boto3 runs with its defaults (no TransferConfig). Ratio = SDK throughput / boto3 throughput.
No Ray cluster is started.

    .venv/bin/python bench/transfers.py [--mb 64] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

BUCKET = "vtp-bench"


def make_dataset(path: Path, total_mb: int) -> None:
    """A DICE-shaped archive of incompressible 'images' (stored, not deflated)."""
    n = max(8, total_mb * 4)  # 256 KiB each
    images = [{"id": i, "file_name": f"img{i:05d}.jpg", "width": 64, "height": 64, "split": "train",
               "annotation": {"class_id": i % 2}} for i in range(n)]
    ann = {"format_version": "1.0", "task_type": "image_classification",
           "classes": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}], "images": images}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("annotations.json", json.dumps(ann))
        for im in images:
            zf.writestr(f"images/{im['file_name']}", os.urandom(256 * 1024))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=64, help="dataset archive and checkpoint size (MiB)")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    import boto3

    from ray_app.storage import SeaweedS3Server
    from sdk import TrainerSDK
    from sdk.storage import S3Storage

    tmp = Path(tempfile.mkdtemp(prefix="vtp-bench-xfer-"))
    server = SeaweedS3Server(tmp / "weed", buckets=[BUCKET])
    server.start(timeout=60)
    try:
        env = {**server.env(BUCKET), "JOB_ID": "benchjob", "TRACE_ID": "bench", "ATTEMPT": "1",
               "DATASET_ID": "ds-bench", "PROJECT_ID": "p", "MLFLOW_DISABLE_TELEMETRY": "true"}
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
        b3 = boto3.client("s3", endpoint_url=server.endpoint_url, aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key, region_name="us-east-1")
        zpath = tmp / "ds.zip"
        make_dataset(zpath, args.mb)
        ckpt = tmp / "last.pt"
        ckpt.write_bytes(os.urandom(args.mb * 1024 * 1024))
        b3.upload_file(str(zpath), BUCKET, "datasets/ds-bench.zip")
        zbytes, cbytes = zpath.stat().st_size, ckpt.stat().st_size
        t: dict[str, list[float]] = {k: [] for k in (
            "sdk_dataset", "boto3_dataset", "sdk_raw_dl", "boto3_raw_dl", "sdk_upload", "boto3_upload",
            "sdk_submit")}
        repeated_bytes = []

        def sdk_for(rep: int, cache: Path) -> TrainerSDK:
            e = {**env, "WORK_DIR": str(tmp / f"work{rep}"), "TMP_DIR": str(tmp / f"tmp{rep}"),
                 "DATASET_CACHE_DIR": str(cache)}
            sdk = TrainerSDK(e, install_signal_handlers=False)
            for kind in ("datasets", "checkpoints"):  # clients made outside the timings, like b3's
                _ = sdk._storage(kind).client
            return sdk

        for rep in range(args.reps):
            sdk = sdk_for(rep, tmp / f"cache{rep}")
            st = S3Storage(sdk.env.datasets_location)
            _ = st.client

            def sdk_dataset(sdk=sdk) -> None:  # cold cache, then again on the warm cache
                root = sdk.download_dataset()
                assert (root / "annotations.json").exists(), root

            def boto3_dataset(rep: int = rep) -> None:
                b3.download_file(BUCKET, "datasets/ds-bench.zip", str(tmp / "b3.zip"))
                with zipfile.ZipFile(tmp / "b3.zip") as zf:
                    zf.extractall(tmp / f"b3ds{rep}")

            def sdk_upload(sdk=sdk, rep: int = rep) -> None:
                t0 = time.perf_counter()
                sdk.upload_checkpoint(ckpt, f"epoch-{rep}")
                t["sdk_submit"].append(time.perf_counter() - t0)
                errors = sdk.wait_for_uploads()
                assert not errors, errors

            pairs = [
                ("sdk_dataset", sdk_dataset, "boto3_dataset", boto3_dataset),
                ("sdk_raw_dl", lambda st=st: st.download_file("datasets/ds-bench.zip", tmp / "sdk_raw.zip"),
                 "boto3_raw_dl", lambda: b3.download_file(BUCKET, "datasets/ds-bench.zip", str(tmp / "b3_raw.zip"))),
                ("sdk_upload", sdk_upload,
                 "boto3_upload", lambda rep=rep: b3.upload_file(str(ckpt), BUCKET, f"checkpoints/job-boto3/epoch-{rep}.pt")),
            ]
            for a_name, a, b_name, b in pairs:
                order = [(a_name, a), (b_name, b)] if rep % 2 == 0 else [(b_name, b), (a_name, a)]
                for name, fn in order:  # alternate who goes first; flush dirty pages before each
                    os.sync()
                    t0 = time.perf_counter()
                    fn()
                    t[name].append(time.perf_counter() - t0)
            before = sdk.bytes_downloaded
            sdk.download_dataset()  # warm cache: nothing fetched
            repeated_bytes.append(sdk.bytes_downloaded - before)
            sdk.close()
            shutil.rmtree(tmp / f"b3ds{rep}", ignore_errors=True)
            shutil.rmtree(tmp / f"cache{rep}", ignore_errors=True)
            print(f"  rep {rep}: " + "  ".join(f"{k} {v[-1]:.3f}s" for k, v in t.items()))
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    mbps = lambda size, s: size / s / 1e6 if s else None  # noqa: E731
    med = {k: harness.median(v) for k, v in t.items()}
    rows = []
    for label, sdk_k, b3_k, size in (("dataset download (+unpack)", "sdk_dataset", "boto3_dataset", zbytes),
                                     ("raw object download", "sdk_raw_dl", "boto3_raw_dl", zbytes),
                                     ("checkpoint upload", "sdk_upload", "boto3_upload", cbytes)):
        s, b = mbps(size, med[sdk_k]), mbps(size, med[b3_k])
        rows.append([label, size / 2**20, round(med[sdk_k], 3), s, round(med[b3_k], 3), b,
                     round(s / b, 2), "≥ 0.9"])
    rows.append(["repeated dataset download (bytes)", None, None, None, None, None,
                 max(repeated_bytes), "0"])
    print("\nTransfers (medians of %d reps; MB/s = 1e6 bytes/s)" % args.reps)
    print(harness.table(["transfer", "MiB", "SDK s", "SDK MB/s", "boto3 s", "boto3 MB/s",
                         "ratio SDK/boto3", "target"], rows))
    print(f"checkpoint upload: the training loop waits only for the snapshot: median "
          f"{med['sdk_submit']:.3f}s of {med['sdk_upload']:.3f}s")
    harness.write_result("transfers", {
        "args": vars(args), "medians_s": med, "runs_s": t, "repeated_download_bytes": repeated_bytes,
        "ratios": {r[0]: r[6] for r in rows[:3]},
        "targets_met": {"ratios_ge_0.9": all(r[6] >= 0.9 for r in rows[:3]),
                        "repeated_zero_bytes": max(repeated_bytes) == 0}})


if __name__ == "__main__":
    main()
