"""Dataset upload and validation (issue 15): presigned multipart versus boto3, and validation time.

1. Upload throughput. One embedded SeaweedFS (`ray_app.storage.SeaweedS3Server`, loopback) and one
   random file (`--size-mib`, 200 by default). Three contestants, interleaved (the order rotates
   every repetition), each object deleted after its run and its size checked first:

     ours             the platform's path without the HTTP API in between: `Storage(settings)`
                      opens the multipart upload and signs one URL per part as the API does
                      (`open_upload`, `part_size_for(size, upload_part_bytes)`, `part_urls`), the
                      client PUTs the parts (`Client.send_parts`, `Client.upload_dataset`'s
                      default concurrency unless `--concurrency`), then `complete_upload`
                      (ListParts, sizes checked, complete)
     boto3 default    `client.upload_file` with boto3's default TransferConfig (8 MiB, 10 threads)
     boto3 same parts `upload_file` with our part size and concurrency

   The client's hashing of the archive (`_uploads.prepare`: its sha256, the version) is timed on
   its own: it is not in "ours". Ratio = ours MiB/s / boto3 default MiB/s (target ≥ 0.9).
   Clients (boto3's, Storage's, the httpx one) are made outside the timings, and each contestant
   runs once unrecorded first (first connections, lazy imports).

2. Validation time. `make_detection(n_images=--images, size=64)` zipped with the client's
   `deterministic_zip`, then `validate_archive(archive, sha256, work_dir)`: hash check, archive
   safety, extraction, inspection of every image (`--validate-reps` runs, a fresh work dir
   each, under `--validate-dir`, default the temp dir as in the platform's task). Reported as a
   figure (no target). Extraction writes 10,000 files: on a shared VM disk it is the noisy part.

No Ray cluster is started.

    .venv/bin/python bench/dataset_upload.py [--size-mib 200] [--reps 5] [--images 10000]
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

BUCKET = "vtp-bench"
MiB = 1 << 20


def default_concurrency() -> int:
    from ray_app.client import Client

    return int(inspect.signature(Client.upload_dataset).parameters["concurrency"].default)


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n))
            left -= n


def upload_bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import boto3
    from boto3.s3.transfer import TransferConfig

    from ray_app.client import Client
    from ray_app.client._uploads import prepare
    from ray_app.config import Settings
    from ray_app.datasets.models import UploadView, VersionState
    from ray_app.datasets.uploads import Storage, part_size_for, parts_total
    from ray_app.storage import SeaweedS3Server

    server = SeaweedS3Server(tmp / "weed", buckets=[BUCKET])
    server.start(timeout=60)
    try:
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
        settings = Settings(s3_endpoint=server.endpoint_url, s3_access_key=server.access_key,
                            s3_secret_key=server.secret_key, s3_bucket=BUCKET, storage_type="minio")
        storage = Storage(settings)
        _ = storage.client, storage.public
        b3 = boto3.client("s3", endpoint_url=server.endpoint_url, aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key, region_name="us-east-1")
        client = Client(url="http://127.0.0.1:9", token=None)  # only send_parts: S3's presigned URLs

        path = tmp / "upload.zip"  # .zip: prepare() takes archives only
        write_random(path, args.size_mib * MiB)
        size = path.stat().st_size
        part_size = part_size_for(size, settings.upload_part_bytes)
        concurrency = args.concurrency or default_concurrency()
        default_cfg = TransferConfig()
        same_cfg = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size,
                                  max_concurrency=concurrency)

        t: dict[str, list[float]] = {"ours": [], "boto3_default": [], "boto3_same_parts": [], "hashing": []}
        sha = ""

        def ours(key: str) -> None:
            upload_id = storage.open_upload(key)
            numbers = list(range(1, parts_total(size, part_size) + 1))
            view = UploadView(dataset_id="ds-bench", version=sha, state=VersionState.UPLOADING, created=True,
                              part_size=part_size, parts_total=len(numbers),
                              urls=storage.part_urls(key, upload_id, numbers))
            sent = client.send_parts(archive, view, concurrency, None)
            assert sum(sent) == size, (sum(sent), size)
            storage.complete_upload(key, upload_id, size, part_size)

        contestants = [
            ("ours", ours),
            ("boto3_default", lambda key: b3.upload_file(str(path), BUCKET, key, Config=default_cfg)),
            ("boto3_same_parts", lambda key: b3.upload_file(str(path), BUCKET, key, Config=same_cfg)),
        ]
        archive = prepare(path)
        sha = archive.sha256
        for name, fn in contestants:  # one unrecorded warm-up of each: first connections, lazy imports
            fn(f"datasets/bench/warmup-{name}.zip")
            b3.delete_object(Bucket=BUCKET, Key=f"datasets/bench/warmup-{name}.zip")
        for rep in range(args.reps):
            os.sync()
            t0 = time.perf_counter()
            archive = prepare(path)
            t["hashing"].append(time.perf_counter() - t0)
            assert archive.size == size and (not sha or archive.sha256 == sha)
            sha = archive.sha256
            k = rep % len(contestants)
            for name, fn in contestants[k:] + contestants[:k]:
                key = f"datasets/bench/{name}-{rep}.zip"
                os.sync()  # flush dirty pages (the previous run's S3 writes) before each
                t0 = time.perf_counter()
                fn(key)
                t[name].append(time.perf_counter() - t0)
                got = int(b3.head_object(Bucket=BUCKET, Key=key)["ContentLength"])
                assert got == size, f"{name}: object is {got} bytes, the file {size}"
                b3.delete_object(Bucket=BUCKET, Key=key)
            print(f"  rep {rep}: " + "  ".join(f"{n} {v[-1]:.3f}s ({size / MiB / v[-1]:.0f} MiB/s)"
                                               for n, v in t.items()))
        client.close()
    finally:
        server.stop()
    return {"size_bytes": size, "part_size": part_size, "parts": parts_total(size, part_size),
            "concurrency": concurrency, "boto3_default_config": {
                "chunksize": default_cfg.multipart_chunksize, "max_concurrency": default_cfg.max_concurrency},
            "runs_s": t}


def validation_bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from ray_app.client._uploads import deterministic_zip, prepare
    from ray_app.datasets.synthetic import make_detection
    from ray_app.datasets.validation import validate_archive

    t0 = time.perf_counter()
    root = make_detection(tmp / "det", n_images=args.images, size=64)
    generate_s = time.perf_counter() - t0
    zpath = tmp / "det.zip"
    t0 = time.perf_counter()
    deterministic_zip(root, zpath)
    zip_s = time.perf_counter() - t0
    shutil.rmtree(root)
    sha = prepare(zpath).sha256  # the client's hash: the version the upload declares
    runs, reports = [], []
    base = Path(tempfile.mkdtemp(prefix="vtp-bench-validate-", dir=args.validate_dir))
    for rep in range(args.validate_reps):
        work = base / f"validate{rep}"
        os.sync()
        t0 = time.perf_counter()
        report = validate_archive(zpath, sha, work)
        runs.append(time.perf_counter() - t0)
        assert report.valid and report.images == args.images, (report.images, report.problems[:3])
        reports.append(report)
        shutil.rmtree(work, ignore_errors=True)
        print(f"  validate {rep}: {runs[-1]:.2f}s, of which extract + inspect {report.seconds:.2f}s "
              f"({report.images} images, {report.annotations} boxes, format {report.format})")
    shutil.rmtree(base, ignore_errors=True)
    return {"validate_dir": str(base.parent), "extract_inspect_s": [r.seconds for r in reports],"images": args.images, "archive_bytes": zpath.stat().st_size, "generate_s": generate_s,
            "zip_s": zip_s, "runs_s": runs, "report": reports[-1].model_dump(mode="json", exclude={"problems"})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=200, help="size of the uploaded file (MiB)")
    ap.add_argument("--reps", type=int, default=5, help="upload repetitions (each: ours and both boto3 runs)")
    ap.add_argument("--concurrency", type=int, default=0,
                    help="parts in flight for ours and boto3 'same parts' (0: Client.upload_dataset's default)")
    ap.add_argument("--images", type=int, default=10000, help="images in the validated detection dataset")
    ap.add_argument("--validate-reps", type=int, default=3)
    ap.add_argument("--validate-dir", default=None,
                    help="where validation extracts (default: the temp dir, as the platform's task does; "
                         "e.g. /dev/shm to take the disk out)")
    ap.add_argument("--skip-upload", action="store_true")
    ap.add_argument("--skip-validation", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="vtp-bench-dsup-"))
    out: dict[str, Any] = {"args": vars(args)}
    try:
        if not args.skip_upload:
            out["upload"] = upload_bench(args, tmp)
        if not args.skip_validation:
            out["validation"] = validation_bench(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    targets: dict[str, bool] = {}
    if "upload" in out:
        u = out["upload"]
        med = {k: harness.median(v) for k, v in u["runs_s"].items()}
        mibps = {k: u["size_bytes"] / MiB / med[k] for k in ("ours", "boto3_default", "boto3_same_parts")}
        ratio = mibps["ours"] / mibps["boto3_default"]
        ratio_same = mibps["ours"] / mibps["boto3_same_parts"]
        u.update(medians_s=med, median_mibps=mibps, ratio_ours_boto3_default=round(ratio, 3),
                 ratio_ours_boto3_same_parts=round(ratio_same, 3))
        targets["upload_ratio_ge_0.9"] = ratio >= 0.9
        print(f"\nUpload of {u['size_bytes'] / MiB:.0f} MiB (medians of {args.reps} reps; "
              f"ours: {u['parts']} parts of {u['part_size'] // MiB} MiB, concurrency {u['concurrency']})")
        print(harness.table(["upload", "median s", "MiB/s", "ratio ours/this", "target"], [
            ["ours: Storage presigned multipart + Client.send_parts", round(med["ours"], 3), mibps["ours"], 1.0, "-"],
            [f"boto3 upload_file, default TransferConfig ({u['boto3_default_config']['chunksize'] // MiB} MiB, "
             f"{u['boto3_default_config']['max_concurrency']} threads)", round(med["boto3_default"], 3),
             mibps["boto3_default"], round(ratio, 2), "≥ 0.9"],
            [f"boto3 upload_file, same parts ({u['part_size'] // MiB} MiB, {u['concurrency']} threads)",
             round(med["boto3_same_parts"], 3), mibps["boto3_same_parts"], round(ratio_same, 2), "(report)"],
        ]))
        print(f"client hashing (prepare: sha256 of the file), not in 'ours': median {med['hashing']:.3f}s "
              f"({u['size_bytes'] / MiB / med['hashing']:.0f} MiB/s)")
    if "validation" in out:
        v = out["validation"]
        med_v = harness.median(v["runs_s"])
        v.update(median_s=med_v, images_per_s=v["images"] / med_v)
        print(f"\nValidation of {v['images']:,} images (median of {args.validate_reps}; archive "
              f"{v['archive_bytes'] / MiB:.1f} MiB; generated in {v['generate_s']:.1f}s, zipped in {v['zip_s']:.1f}s)")
        print(harness.table(["validation", "median s", "images/s", "runs s"], [
            ["validate_archive (hash + safety + extract + inspect)", round(med_v, 2), v["images_per_s"],
             ", ".join(f"{x:.2f}" for x in v["runs_s"])]]))
    out["targets_met"] = targets
    harness.write_result("dataset_upload", out)


if __name__ == "__main__":
    main()
