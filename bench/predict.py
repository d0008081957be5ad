"""Inference (issue 17): `POST /v1/jobs/{id}/predict` on the Ultralytics model server against the
trainer's own `predict()` called directly in one process; cold start; memory per cached model.

Three tiny yolo11n detection jobs (A, B, C) are trained through the platform on one generated
dataset (accuracy does not matter), with VTP_PREDICT_MODELS_PER_REPLICA=2. Then, in order:

  cold deploy + load   the first predict on A: the API deploys `vtp-predict-ultralytics` (replica
                       start in the trainer's venv, `predict.py` imported), loads A's checkpoint
                       (S3 fetch, `load_model`) and predicts. Client wall of the POST.
  cold load            the first predict on B: the server is up, B's model is loaded and predicts.
  warm                 --n predicts of one 128-px image on A through the API (httpx, sequential,
                       one connection), client wall each; interleaved in --blocks blocks with
  direct (reference)   the same `predict(model, [image])` in one process (bench/_direct_predict.py,
                       the Ultralytics trainer's venv python), A's best.pt downloaded from S3 and
                       loaded once; each call timed alone. Ratio = API / direct, p50 and p95.
  memory               the replica's `status()["rss_bytes"]` after A is loaded, after B, after the
                       warm predicts, after C (the 3rd model: A or B is evicted), and after B and A
                       are asked for again (more evictions and loads). Deltas in MiB.

    flock /tmp/vtp-suite.lock .venv/bin/python bench/predict.py [--n 50] [--blocks 2] [--epochs 1]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from training_overhead import trainer_python  # noqa: E402

BUCKET = "vtp-bench"
APP = "vtp-predict-ultralytics"
MB = 1024 * 1024


def train_job(p: Any, dataset_id: str, a: argparse.Namespace, seed: int) -> dict[str, Any]:
    job = p.create_job(framework="ultralytics", task_type="object_detection", model_name="yolo11n",
                       dataset_id=dataset_id, epochs=a.epochs, batch_size=a.batch, image_size=a.imgsz,
                       num_cpus=2, config={"seed": seed, "plots": False})
    job = p.wait_final(job["id"], timeout=a.timeout)
    if job["state"] != "SUCCEEDED":
        tail = "\n".join(p.logs(job["id"], complete=False)[-60:])
        raise RuntimeError(f"job {job['id']} {job['state']}: {job['error']}\n{tail}")
    return job


def post(p: Any, job_id: str, image: bytes) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    r = p.api("POST", f"/v1/jobs/{job_id}/predict", files=[("files", ("img.png", image, "image/png"))],
              timeout=600)
    wall = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"predict on {job_id}: {r.status_code} {r.text[:2000]}")
    return wall, r.json()


def status() -> dict[str, Any]:
    from ray import serve

    return serve.get_app_handle(APP).status.remote().result(timeout_s=60)


def read_tagged(proc: subprocess.Popen, tag: str) -> dict[str, Any]:
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1:])
    raise RuntimeError(f"direct predict process ended ({proc.wait()}) before {tag}:\n{proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]


def stats(times: list[float]) -> dict[str, Any]:
    return {"n": len(times), "p50_ms": 1000 * harness.pct(times, 50), "p95_ms": 1000 * harness.pct(times, 95),
            "min_ms": 1000 * min(times), "max_ms": 1000 * max(times)}


def keep_serve_logs(temp_dir: str, stamp: str) -> str | None:
    """The model server's replica logs (the cluster's temp dir goes with the cluster)."""
    src = Path(temp_dir, "session_latest", "logs", "serve")
    files = [f for f in src.glob("*ModelServer*")] if src.is_dir() else []
    if not files:
        return None
    dest = harness.RESULTS / f"predict-serve-logs-{stamp}"
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, dest / f.name)
    return str(dest.relative_to(harness.REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50, help="warm predicts on each side")
    ap.add_argument("--blocks", type=int, default=2, help="API and direct alternate in this many blocks")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=128, help="generated image size (px)")
    ap.add_argument("--imgsz", type=int, default=128, help="training (and so inference) image size")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()

    from ray_app.datasets import make_detection, zip_dataset
    from ray_app.storage import SeaweedS3Server
    from ray_app.storage.s3 import upload_dataset
    from tests.fixtures.s3 import S3TestServer

    python = trainer_python()
    tmp = Path(tempfile.mkdtemp(prefix="vtp-bench-predict-"))
    s3 = SeaweedS3Server(tmp / "s3", buckets=[BUCKET])
    s3.start(timeout=60)
    res: dict[str, Any] = {"args": vars(a)}
    mem: list[dict[str, Any]] = []
    direct: subprocess.Popen | None = None
    t_start = time.monotonic()
    try:
        root = make_detection(tmp / "dice", n_images=a.images, size=a.size, seed=0)
        upload_dataset(s3.client(), BUCKET, "bench-predict", Path(zip_dataset(root)))
        image_path = sorted((root / "images").glob("*.png"))[0] if (root / "images").is_dir() \
            else sorted(root.rglob("*.png"))[0]
        image = image_path.read_bytes()
        with harness.platform(num_cpus=4, s3=S3TestServer(s3, BUCKET),
                              VTP_PREDICT_MODELS_PER_REPLICA="2") as (dep, p):
            t0 = time.monotonic()
            jobs = [train_job(p, "bench-predict", a, seed) for seed in range(3)]
            res["train_s"] = time.monotonic() - t0
            ids = [j["id"] for j in jobs]
            print(f"trained 3 jobs in {res['train_s']:.0f}s: {ids}")

            def snap(label: str) -> None:
                s = status()
                mem.append({"after": label, "rss_mb": s["rss_bytes"] / MB, "resident": [r.split("|")[0] for r in s["resident"]],
                            "loads": {k.split("|")[0]: v for k, v in s["loads"].items()}, "pid": s["pid"]})
                print(f"  rss after {label}: {mem[-1]['rss_mb']:.0f} MiB, resident {mem[-1]['resident']}")

            cold_deploy, body_a = post(p, ids[0], image)
            snap("A loaded (1 model)")
            cold_load, body_b = post(p, ids[1], image)
            snap("B loaded (2 models)")
            res["cold"] = {"deploy_load_predict_s": cold_deploy, "load_predict_s": cold_load,
                           "server_predict_s": [body_a["inference_seconds"], body_b["inference_seconds"]],
                           "model_cached": [body_a["model_cached"], body_b["model_cached"]]}
            print(f"cold: first predict (deploy + load) {cold_deploy:.2f}s; first on B (load) {cold_load:.2f}s")

            # the reference: A's best.pt from S3, loaded once in the trainer's venv python
            ckpt = tmp / "best.pt"
            bucket, _, key = jobs[0]["artifacts"]["best"][len("s3://"):].partition("/")
            s3.client().download_file(bucket, key, str(ckpt))
            direct = subprocess.Popen([str(python), str(harness.BENCH / "_direct_predict.py"), str(ckpt), str(image_path)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, cwd=tmp, env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
            res["direct_ready"] = read_tagged(direct, "READY")
            api_t: list[float] = []
            api_server: list[float] = []
            dir_t: list[float] = []
            boxes = {}
            per = [a.n // a.blocks + (1 if i < a.n % a.blocks else 0) for i in range(a.blocks)]
            for k in per:
                for _ in range(k):
                    wall, body = post(p, ids[0], image)
                    api_t.append(wall)
                    api_server.append(body["inference_seconds"])
                    boxes["api"] = len(body["predictions"][0].get("boxes", []))
                    if not body["model_cached"]:
                        raise RuntimeError(f"warm predict on A was not cached: {body}")
                direct.stdin.write(f"{k}\n")  # type: ignore[union-attr]
                direct.stdin.flush()  # type: ignore[union-attr]
                r = read_tagged(direct, "RESULT")
                dir_t += r["times_s"]
                boxes["direct"] = r["boxes"]
            direct.stdin.close()  # type: ignore[union-attr]
            direct.wait(timeout=60)
            res["warm"] = {"api": stats(api_t), "api_server_predict": stats(api_server), "direct": stats(dir_t),
                           "boxes": boxes, "api_times_s": api_t, "direct_times_s": dir_t}
            w = res["warm"]
            w["ratio_p50"] = w["api"]["p50_ms"] / w["direct"]["p50_ms"]
            w["ratio_p95"] = w["api"]["p95_ms"] / w["direct"]["p95_ms"]
            snap(f"{a.n} warm predicts on A")

            res["cold"]["third_load_predict_s"] = post(p, ids[2], image)[0]  # C: evicts B (least recently used)
            snap("C loaded (3rd model, 2 kept)")
            post(p, ids[1], image)
            snap("B again (evicts A)")
            post(p, ids[0], image)
            snap("A again (evicts C)")
            res["serve_logs"] = keep_serve_logs(dep.cluster.temp_dir, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    finally:
        if direct is not None and direct.poll() is None:
            direct.kill()
        s3.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    res["run_s"] = time.monotonic() - t_start
    rss = [m["rss_mb"] for m in mem]
    res["memory"] = {"snapshots": mem, "model_2_mb": rss[1] - rss[0], "third_load_mb": rss[3] - rss[2],
                     "churn_mb": rss[5] - rss[3], "warm_growth_mb": rss[2] - rss[1]}
    res["job_ids"] = ids

    c, w, m = res["cold"], res["warm"], res["memory"]
    print(f"\nInference: yolo11n, {a.epochs} epoch(s) on {a.images} images of {a.size}px, imgsz {a.imgsz}; "
          f"one {a.size}px image a request; {a.n} warm predicts a side in {a.blocks} blocks")
    print(harness.table(["measure", "value"], [
        ["cold: first predict, deploy + load + predict (s)", c["deploy_load_predict_s"]],
        ["cold: first predict on B, server up: load + predict (s)", c["load_predict_s"]],
        ["cold: 3rd model C, load (+ eviction) + predict (s)", c["third_load_predict_s"]],
        ["direct: import + load_model (s), first predict (s)",
         f"{res['direct_ready']['load_s']:.2f}, {res['direct_ready']['first_predict_s']:.2f}"],
    ]))
    print(harness.table(["warm (ms)", "p50", "p95", "min", "max"], [
        [k, w[k]["p50_ms"], w[k]["p95_ms"], w[k]["min_ms"], w[k]["max_ms"]]
        for k in ("api", "api_server_predict", "direct")] + [["ratio API / direct", w["ratio_p50"], w["ratio_p95"], "", ""]]))
    print(harness.table(["replica rss after", "MiB", "delta MiB", "resident"], [
        [s["after"], s["rss_mb"], (s["rss_mb"] - mem[i - 1]["rss_mb"]) if i else "", ", ".join(s["resident"])]
        for i, s in enumerate(mem)]))
    print(f"2nd model: +{m['model_2_mb']:.0f} MiB; 3rd load (one evicted): {m['third_load_mb']:+.0f} MiB; "
          f"two more evict+load cycles: {m['churn_mb']:+.0f} MiB; run {res['run_s']:.0f}s")
    harness.write_result("predict", res)


if __name__ == "__main__":
    main()
