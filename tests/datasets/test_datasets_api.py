"""Datasets through the API, as a user on another machine meets them (issue 15): the `vtp` CLI in
a separate process whose environment holds the API URL and a token, and no S3 keys and no
platform data directory, against the real platform (Serve over HTTP, Ray, SeaweedFS, SQLite).

The presigned URLs name the platform's public S3 endpoint, here a forwarder in front of SeaweedFS
(tests/fixtures/platform.py): the tests slow it down to interrupt an upload half-way, and count
its connections to see parts going up in parallel."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from sdk.datasets.convert import convert_dataset

from ray_app.datasets import make_classification, make_detection, zip_dataset

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def remote(platform, tmp_path):
    """Runs `vtp ...` as a remote user: URL and token only."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
           "VTP_API_URL": platform.base_url, "VTP_API_TOKEN": platform.api_token, "COLUMNS": "200"}
    assert not any(k.startswith("VTP_S3") or k.startswith("AWS_") for k in env)
    assert not (home / ".vtp").exists()

    def vtp(*args: str, timeout: float = 300, popen: bool = False):
        cmd = [sys.executable, "-m", "ray_app", *args]
        if popen:
            return subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout)

    return vtp


def uploaded(vtp, path: Path, dataset_id: str, *extra: str) -> dict:
    r = vtp("datasets", "upload", str(path), "--id", dataset_id, "--json", *extra)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    return json.loads(r.stdout)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


# ---------------------------------------------------------------- formats


def test_dice_zip_yolo_folder_and_imagefolder_tree_upload_validate_and_list(remote, tmp_path):
    dice = zip_dataset(make_detection(tmp_path / "dice", n_images=12, size=64, val_fraction=0.25),
                       tmp_path / "dice.zip")
    yolo = convert_dataset(make_detection(tmp_path / "dice-y", n_images=10, size=64, seed=1), "yolo",
                           tmp_path / "yolo", val_fraction=0.2)
    folder = convert_dataset(make_classification(tmp_path / "dice-c", n_images=12, size=64, seed=2),
                             "imagefolder", tmp_path / "imagefolder", val_fraction=0.25)
    names = {"dice": unique("dice"), "yolo": unique("yolo"), "imagefolder": unique("folder")}

    d = uploaded(remote, dice, names["dice"])
    assert d["state"] == "valid" and d["created"], d
    assert d["report"]["format"] == "dice" and d["report"]["task_type"] == "object_detection"
    assert d["report"]["classes"] == ["circle", "square", "triangle"]
    assert d["report"]["splits"] == {"train": 9, "val": 3} and d["report"]["images"] == 12

    y = uploaded(remote, yolo, names["yolo"])
    assert y["state"] == "valid", y
    assert (y["report"]["format"], y["report"]["task_type"]) == ("yolo", "object_detection")
    assert y["report"]["classes"] == ["circle", "square", "triangle"]
    on_disk = {split: len(list((yolo / "images" / split).iterdir())) for split in ("train", "val")}
    assert y["report"]["splits"] == on_disk and sum(on_disk.values()) == 10 and y["report"]["annotations"] > 0

    f = uploaded(remote, folder, names["imagefolder"])
    assert f["state"] == "valid", f
    assert (f["report"]["format"], f["report"]["task_type"]) == ("imagefolder", "image_classification")
    assert f["report"]["classes"] == ["circle", "square", "triangle"]
    assert f["report"]["splits"] == {split: len(list((folder / split).rglob("*.png"))) for split in ("train", "val")}
    assert f["report"]["images"] == 12

    listed = json.loads(remote("datasets", "list", "--json").stdout)["items"]
    by_id = {d["id"]: d for d in listed}
    for fmt, name in names.items():
        newest = by_id[name]["versions"][0]
        assert (newest["format"], newest["state"]) == (fmt, "valid")
        assert by_id[name]["latest_valid_version"] == newest["version"]
    assert by_id[names["dice"]]["versions"][0]["splits"] == {"train": 9, "val": 3}

    # the same content again: no new version, nothing sent
    again = uploaded(remote, dice, names["dice"])
    assert not again["created"] and again["parts_sent"] == 0 and again["version"] == d["version"]
    got = json.loads(remote("datasets", "get", names["dice"], "--json").stdout)
    assert [v["version"] for v in got["versions"]] == [d["version"]]
    # a folder zips to the same bytes every time: re-uploading the YOLO folder makes no version either
    assert not uploaded(remote, yolo, names["yolo"])["created"]


# ---------------------------------------------------------------- samples


def test_a_valid_version_shows_sample_thumbnails_with_their_labels(remote, platform, s3_server, tmp_path):
    root = make_detection(tmp_path / "det", n_images=16, size=300, val_fraction=0.25, seed=7)
    truth = {f"images/{i['file_name']}": i for i in json.loads((root / "annotations.json").read_text())["images"]}
    name = unique("samples")
    up = uploaded(remote, zip_dataset(root, tmp_path / "det.zip"), name)
    assert up["state"] == "valid", up

    resp = platform.api("GET", f"/v1/datasets/{name}/versions/{up['version'][:10]}/samples")  # a prefix names it
    assert resp.status_code == 200, resp.text
    items = resp.json()["items"]
    assert len(items) == 12 and len({i["file"] for i in items}) == 12
    classes = ["circle", "square", "triangle"]
    for item in items:
        assert (item["width"], item["height"]) == (256, 256)  # 300 px images, shrunk
        r = 256 / 300
        anns = truth[item["file"]]["annotations"]
        assert [lab["class_name"] for lab in item["labels"]] == [classes[a["class_id"]] for a in anns]
        for lab, a in zip(item["labels"], anns):
            x, y, w, h = a["bbox"]
            assert lab["xyxy"] == pytest.approx([x * r, y * r, (x + w) * r, (y + h) * r], abs=0.01)
            assert "polygon" not in lab  # detection: boxes only, no nulls
        # the presigned URL (the public S3 endpoint) serves the thumbnail itself
        got = httpx.get(item["url"], timeout=30)
        assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
        im = Image.open(io.BytesIO(got.content))
        assert im.format == "JPEG" and im.size == (item["width"], item["height"])
    assert any(item["labels"] for item in items)

    missing = [f"/v1/datasets/no-such-{name}/versions/{up['version']}/samples",
               f"/v1/datasets/{name}/versions/{'0' * 64}/samples", f"/v1/datasets/{name}/versions/xyz/samples"]
    for path in missing:
        assert platform.api("GET", path).status_code == 404, path

    # deleting the dataset deletes its samples too
    client = s3_server.client()
    listed = client.list_objects_v2(Bucket=s3_server.bucket, Prefix=f"datasets/{name}@")
    assert any(o["Key"].endswith("/samples/samples.json") for o in listed.get("Contents", []))
    assert platform.api("DELETE", f"/v1/datasets/{name}").status_code == 204
    assert not client.list_objects_v2(Bucket=s3_server.bucket, Prefix=f"datasets/{name}@").get("Contents")


# ---------------------------------------------------------------- large, parallel, resumed


def big_imagefolder(root: Path, side: int = 2100) -> Path:
    """Four noise images stored without compression (~13 MB each): a dataset over 50 MB."""
    rng = np.random.default_rng(0)
    for split, cls in (("train", "a"), ("train", "b"), ("val", "a"), ("val", "b")):
        (root / split / cls).mkdir(parents=True)
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / split / cls / "noise.png", compress_level=0)
    return root


def test_large_upload_goes_in_parallel_parts_and_resumes_after_the_client_is_killed(
        remote, deployment, s3_server, tmp_path):
    root = big_imagefolder(tmp_path / "big")
    assert sum(p.stat().st_size for p in root.rglob("*.png")) >= 50 * 2**20
    name = unique("big")
    forwarder = deployment.public_s3
    client = s3_server.client()

    def parts_stored() -> int:
        uploads = client.list_multipart_uploads(Bucket=s3_server.bucket, Prefix=f"datasets/{name}@").get("Uploads", [])
        if not uploads:
            return 0
        up = uploads[0]
        return len(client.list_parts(Bucket=s3_server.bucket, Key=up["Key"], UploadId=up["UploadId"]).get("Parts", []))

    forwarder.rate, forwarder.max_open = 6 * 2**20, 0  # bytes/s per connection: ~4 s per 8 MiB part
    try:
        first = remote("datasets", "upload", str(root), "--id", name, "--concurrency", "3", "--json", popen=True)
        deadline = time.monotonic() + 120
        while parts_stored() < 2:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "no two parts arrived within 120 s"
            time.sleep(0.05)
        first.kill()  # SIGKILL: no chance to clean up
        first.communicate()
    finally:
        forwarder.rate = None
    assert forwarder.max_open >= 2  # parts went up side by side
    # A part whose bytes were already in the forwarder's buffers when the client died can still
    # complete on the server afterwards: count the stored parts once that has settled.
    deadline = time.monotonic() + 30
    while forwarder.open and time.monotonic() < deadline:
        time.sleep(0.05)
    stored = parts_stored()
    while time.monotonic() < deadline:
        time.sleep(1)
        if (now := parts_stored()) == stored:
            break
        stored = now
    assert stored >= 2

    resumed = uploaded(remote, root, name)
    assert resumed["state"] == "valid", resumed
    assert resumed["parts_total"] >= 7  # 8 MiB parts
    assert resumed["parts_skipped"] == stored, resumed  # the parts that arrived were not sent again
    assert resumed["parts_sent"] == resumed["parts_total"] - stored
    assert resumed["report"]["splits"] == {"train": 2, "val": 2}
    version = json.loads(remote("datasets", "get", name, "--json").stdout)["versions"][0]
    key = version["uri"].split("/", 3)[3]
    assert client.head_object(Bucket=s3_server.bucket, Key=key)["ContentLength"] == version["size_bytes"]
    assert not client.list_multipart_uploads(Bucket=s3_server.bucket, Prefix=f"datasets/{name}@").get("Uploads")


# ---------------------------------------------------------------- problems, refusals


def test_problems_are_reported_by_file_and_a_job_on_the_dataset_is_refused(remote, platform, tmp_path):
    root = make_detection(tmp_path / "bad", n_images=8, size=64, val_fraction=0.25)
    data = json.loads((root / "annotations.json").read_text())
    broken, outside, unknown = data["images"][0], data["images"][1], data["images"][2]
    path = root / "images" / broken["file_name"]
    path.write_bytes(path.read_bytes()[:100])  # truncated: not decodable
    outside["annotations"][0]["bbox"] = [40, 40, 60, 10]  # 40 + 60 > 64
    unknown["annotations"][0]["class_id"] = 99  # not in classes
    (root / "annotations.json").write_text(json.dumps(data))
    name = unique("bad")

    r = remote("datasets", "upload", str(root), "--id", name, "--json")
    assert r.returncode == 1, r.stdout + r.stderr  # exit 1: the dataset is invalid
    report = json.loads(r.stdout)["report"]
    assert json.loads(r.stdout)["state"] == "invalid"
    by_file = {}
    for p in report["problems"]:
        by_file.setdefault(p["file"], []).append(p["problem"])
    assert any("cannot decode" in m for m in by_file[f"images/{broken['file_name']}"])
    assert any("outside" in m for m in by_file[f"images/{outside['file_name']}"])
    assert any("99" in m for m in by_file[f"images/{unknown['file_name']}"])
    assert report["problems_total"] == len(report["problems"]) >= 3
    # an invalid version still shows samples: the 7 images that decode
    version = json.loads(r.stdout)["version"]
    samples = platform.api("GET", f"/v1/datasets/{name}/versions/{version}/samples").json()["items"]
    assert len(samples) == 7 and f"images/{broken['file_name']}" not in {s["file"] for s in samples}

    shown = remote("datasets", "get", name)
    assert shown.returncode == 0 and "invalid" in shown.stdout and broken["file_name"] in shown.stdout

    # no GPU is spent on it: refused at creation, naming the dataset and its problems
    resp = platform.api("POST", "/v1/jobs", json={"framework": "manual", "task_type": "object_detection",
                                                  "model_name": "any", "dataset_id": name})
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"][0]
    assert detail["loc"] == ["body", "dataset_id"] and name in detail["msg"] and "problem" in detail["msg"]
    assert broken["file_name"] in detail["msg"] or outside["file_name"] in detail["msg"]
    submit = remote("jobs", "submit", "--framework", "manual", "--model", "any", "--dataset", name)
    assert submit.returncode == 3 and "no valid version" in submit.stderr


def hostile_archives(tmp_path: Path, marker: str) -> dict[str, tuple[Path, str]]:
    """name -> (archive, the reason validation must give)."""
    out = {}
    traversal = tmp_path / "traversal.zip"
    with zipfile.ZipFile(traversal, "w") as zf:
        zf.writestr("annotations.json", "{}")
        zf.writestr(f"../../../../../../tmp/{marker}-traversal.txt", "x")
    out["traversal"] = (traversal, "path traversal")
    absolute = tmp_path / "absolute.zip"
    with zipfile.ZipFile(absolute, "w") as zf:
        zf.writestr(f"/tmp/{marker}-absolute.txt", "x")
    out["absolute"] = (absolute, "absolute path")
    link = tmp_path / "link.tar.gz"
    with tarfile.open(link, "w:gz") as tf:
        info = tarfile.TarInfo("images/passwd")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    out["symlink"] = (link, "symbolic link")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("zeros.bin", "w") as f:
            for _ in range(64):
                f.write(bytes(1 << 20))  # 64 MiB of zeros: ~1000:1
    out["bomb"] = (bomb, "zip bomb")
    return out


def test_hostile_archives_are_refused_with_their_reason_and_write_nothing_outside(remote, tmp_path):
    marker = f"vtp-hostile-{uuid.uuid4().hex[:8]}"
    for kind, (archive, reason) in hostile_archives(tmp_path, marker).items():
        r = remote("datasets", "upload", str(archive), "--id", unique(kind), "--json")
        assert r.returncode == 1, (kind, r.stdout + r.stderr)
        result = json.loads(r.stdout)
        assert result["state"] == "invalid", kind
        problems = result["report"]["problems"]
        assert any(reason in p["problem"] for p in problems), (kind, problems)
    assert not list(Path("/tmp").glob(f"{marker}*"))


def test_upload_refusals_are_4xx_naming_the_field(platform):
    body = {"dataset_id": "ok-name", "filename": "d.zip", "size_bytes": 10, "sha256": "0" * 64}
    for field, value in (("dataset_id", "../etc"), ("dataset_id", ""), ("filename", "d.exe"),
                         ("filename", "../d.zip"), ("size_bytes", 0), ("sha256", "xyz"), ("size_bytes", "10")):
        resp = platform.api("POST", "/v1/datasets", json={**body, field: value})
        assert resp.status_code == 422, (field, value, resp.text)
        assert resp.json()["detail"][0]["loc"][-1] == field
    resp = platform.api("POST", "/v1/datasets", json={**body, "size_bytes": 2**41})
    assert resp.status_code == 413 and "size_bytes" in resp.json()["detail"]
    assert platform.api("GET", "/v1/datasets/no-such-dataset").status_code == 404
    assert platform.api("GET", "/v1/datasets/..%2f..").status_code == 404
    assert platform.api("DELETE", "/v1/datasets/no-such-dataset").status_code == 404
    missing = platform.api("POST", f"/v1/datasets/no-such/versions/{'a' * 64}/complete")
    assert missing.status_code == 404
    assert platform.api("GET", "/v1/datasets", headers={"Authorization": "Bearer wrong"}).status_code == 401
    job = {"framework": "manual", "task_type": "object_detection", "model_name": "any", "dataset_id": "ds-test"}
    resp = platform.api("POST", "/v1/jobs", json={**job, "dataset_version": "abcdef12"})
    assert resp.status_code == 422 and "not registered" in resp.json()["detail"][0]["msg"]


def test_completing_with_parts_missing_is_a_409_naming_them(platform, tmp_path):
    archive = zip_dataset(make_classification(tmp_path / "c", n_images=6, size=32), tmp_path / "c.zip")
    import hashlib

    body = {"dataset_id": unique("partial"), "filename": "c.zip", "size_bytes": archive.stat().st_size,
            "sha256": hashlib.sha256(archive.read_bytes()).hexdigest()}
    opened = platform.api("POST", "/v1/datasets", json=body)
    assert opened.status_code == 201 and opened.json()["urls"], opened.text
    done = platform.api("POST", f"/v1/datasets/{body['dataset_id']}/versions/{body['sha256']}/complete")
    assert done.status_code == 409 and "1 of 1 part(s) missing" in done.json()["detail"]
    # opening again resumes the same upload (200, same part numbers), a new one is not made
    again = platform.api("POST", "/v1/datasets", json=body)
    assert again.status_code == 200 and again.json()["parts_done"] == []
    assert [u["part_number"] for u in again.json()["urls"]] == [1]


# ---------------------------------------------------------------- in use


def test_a_dataset_in_use_cannot_be_deleted_and_jobs_record_their_version(remote, platform, tmp_path):
    name = unique("inuse")
    first = uploaded(remote, zip_dataset(make_classification(tmp_path / "v1", n_images=6, size=32),
                                         tmp_path / "v1.zip"), name)
    second = uploaded(remote, zip_dataset(make_classification(tmp_path / "v2", n_images=8, size=32, seed=5),
                                          tmp_path / "v2.zip"), name)
    assert first["version"] != second["version"] and second["state"] == "valid"
    job = platform.create_job(dataset_id=name, task_type="image_classification")  # the newest valid one
    assert job["dataset_version"] == second["version"] and job["dataset_uri"].endswith(f"{name}@{second['version']}.zip")
    pinned = platform.create_job(dataset_id=name, task_type="image_classification",
                                 dataset_version=first["version"][:10])  # a prefix names it too
    assert pinned["dataset_version"] == first["version"]

    r = remote("datasets", "rm", name)
    assert r.returncode == 3 and "409" in r.stderr and job["id"] in r.stderr
    for j in (job, pinned):
        platform.api("POST", f"/v1/jobs/{j['id']}/cancel")
        platform.wait_final(j["id"])
    assert remote("datasets", "rm", name).returncode == 0
    assert remote("datasets", "get", name).returncode == 3
    gone = platform.api("POST", "/v1/jobs", json={"framework": "manual", "task_type": "image_classification",
                                                  "model_name": "any", "dataset_id": name,
                                                  "dataset_version": first["version"]})
    assert gone.status_code == 422
    # the finished jobs still say what they trained on
    assert platform.job(job["id"])["dataset_version"] == second["version"]
