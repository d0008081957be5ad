"""Benchmark 3 — training overhead: the same Ultralytics training through the platform vs directly.

One generated detection dataset (`make_detection`), converted once to the YOLO layout with the
SDK's own converter (the same split the trainer makes), and three ways to train yolo11n on it with
the same epochs, image size, batch, seed, nbs (= batch, the trainer's default) and plots setting:

  direct     the Ultralytics trainer's venv python running `YOLO("yolo11n.yaml").train(...)`
             (bench/_direct_ultralytics.py) with Ultralytics' defaults for threads and workers,
             offline as the trainer is (ul_runtime). Wall = process start → exit.
  platform   a job through the API (num_cpus as given, callbacks through the gateway as `vtp up`
             runs it); the trainer downloads the zipped DICE dataset from S3 and converts it
             itself. Wall = job creation → SUCCEEDED (server timestamps: the job's created_at and
             finished_at).
  slowed     the same job with every trainer callback held 2 s (--delay) by an HTTP proxy
             (bench/_slow_proxy.py) that VTP_PUBLIC_BASE_URL points trainers at. The proxy is
             there for the `platform` runs too, at 0 s delay: one deployment serves both.

Repetitions are interleaved (direct, platform, slowed) × --reps after one unrecorded 1-epoch
warm-up of each kind (file cache, the trainer's runtime_env). Per platform job the phases come
from the job's own events: created → trainer_process (queue, placement, Ray worker, runner) →
`started` (interpreter + SDK) → `model_initialized` (imports, dataset download + convert + check,
MLflow run, Ultralytics trainer built) → SUCCEEDED (training, final evaluation, uploads, `done`);
the trainer process's own wall is trainer_process → the runner's "trainer exited" log line.

  direct_Nthreads  (--direct-threads N) the direct run with N torch threads for training and
             validation: what a bare run gets from the job's CPUs when it uses them all.

Each platform run also records the CPU seconds of the trainer process and of every other process
of the machine (Ray, Serve, the store, the gateway, the runner, the trainer's MLflow child, S3)
between the job's creation and its end, the latter as `others_cores` (cores busy beside the
trainer): what a 2-CPU job shares its CPUs with, and a bare run does not.

  ratio            platform wall / direct wall (medians; target ≤ 0.9)
  fixed overhead   what the platform adds before Ultralytics' trainer is built: (created →
                   `dataset_prepared`) − (direct: process start → model.train() called, which
                   builds it); target ≤ 3 s
  slow-down change slowed ratio / platform ratio − 1 (target ≤ 5 %)

    flock /tmp/vtp-platform-tests.lock .venv/bin/python bench/training_overhead.py [--epochs 15]

With --first-job it measures the user's case instead (bench/first_job.py): a fresh `vtp up`, a
dataset the platform has never seen, the first job against the next, the one-time work per
dataset and the queue wait of a job submitted the moment another ends.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

BENCH = harness.BENCH
VENVS = Path(os.environ.get("VTP_TRAINER_VENVS_DIR", Path.home() / ".cache" / "vtp-test-venvs"))
BUCKET = "vtp-bench"
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def trainer_python() -> Path:
    """The Ultralytics trainer's venv (built once, as `vtp trainers build-env ultralytics` would)."""
    from ray_app.runtime import venvs
    from ray_app.runtime.registry import TrainerRegistry

    manifest = TrainerRegistry([harness.REPO / "trainers"]).get("ultralytics")
    venv = venvs.find_built(VENVS, manifest) or venvs.build(VENVS, manifest)
    return venvs.python_of(venv)


def prepare_dataset(tmp: Path, images: int, size: int, seed: int) -> tuple[Path, Path]:
    """(zip for the platform, data.yaml for the direct run): the same images, the same split."""
    from ray_app.datasets import make_detection, zip_dataset
    from sdk.datasets import convert_dataset

    root = make_detection(tmp / "dice", n_images=images, size=size, seed=seed)
    # the trainer's defaults (ul_config.Plan): val_fraction 0.2, split seed 0
    yolo = convert_dataset(root, "yolo", tmp / "yolo", task_type="object_detection", val_fraction=0.2, seed=0)
    return Path(zip_dataset(root)), yolo / "data.yaml"


def run_direct(python: Path, data_yaml: Path, work: Path, a: argparse.Namespace, epochs: int,
               threads: int = 0) -> dict[str, Any]:
    cmd = [str(python), str(BENCH / "_direct_ultralytics.py"), "--data", str(data_yaml), "--work", str(work),
           "--epochs", str(epochs), "--imgsz", str(a.imgsz), "--batch", str(a.batch), "--seed", str(a.seed),
           "--threads", str(threads)]
    if a.plots:
        cmd.append("--plots")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "VTP_"))}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"direct run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    inner = json.loads(line[len("RESULT "):])
    return {"wall_s": wall, **inner,
            "before_train_s": inner["startup_s"] + inner["import_s"] + inner["model_s"]}


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """Every process's CPU time so far (user + system), with its command line."""
    import psutil

    out = {}
    for proc in psutil.process_iter(["cmdline", "name"]):
        try:
            t = proc.cpu_times()
            out[proc.pid] = (" ".join(proc.info["cmdline"] or [proc.info["name"] or "?"]), t.user + t.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def cpu_split(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between two snapshots by the trainer process (`train.py`) and by every
    other process of the machine but this script (the platform's own: Ray, Serve, the store, the
    gateway, the runner, the trainer's MLflow child, S3). Taken at job creation and once the job
    is SUCCEEDED, when the trainer process has not exited yet (it exits ~2 s later)."""
    trainer = other = 0.0
    for pid, (cmd, t) in after.items():
        if pid == os.getpid():
            continue
        spent = t - before.get(pid, (cmd, 0.0))[1]
        if cmd.endswith(" train.py"):  # the runner starts it as `<python> -u train.py`
            trainer += spent
        else:
            other += spent
    return {"trainer_cpu_s": trainer, "others_cpu_s": other}


def all_logs(p: Any, job_id: str) -> list[dict[str, Any]]:
    items, after = [], 0
    while True:
        page = p.api("GET", f"/v1/jobs/{job_id}/logs", params={"after": after, "limit": 5000}).json()
        if not page["items"]:
            return items
        items += page["items"]
        after = page["next_after"]


def run_platform(p: Any, dataset_id: str, a: argparse.Namespace, epochs: int,
                 extra_config: dict[str, Any] | None = None) -> dict[str, Any]:
    config = {"seed": a.seed, "plots": a.plots, **(extra_config or {})}
    cpu_before = cpu_seconds()
    c0 = time.time()
    job = p.create_job(framework="ultralytics", task_type="object_detection", model_name="yolo11n",
                       dataset_id=dataset_id, epochs=epochs, batch_size=a.batch, image_size=a.imgsz,
                       num_cpus=a.num_cpus, config=config)
    job_id = job["id"]
    deadline = time.monotonic() + a.timeout
    while job["state"] not in TERMINAL:
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} still {job['state']} after {a.timeout}s")
        # wall comes from the server's timestamps; polling only finds the end, and polling faster
        # would put the bench's own requests on the CPUs the job trains on
        time.sleep(1.0)
        job = p.job(job_id)
    client_s = time.time() - c0
    cpu = cpu_split(cpu_before, cpu_seconds())
    if job["state"] != "SUCCEEDED":
        tail = "\n".join(p.logs(job_id, complete=False)[-60:])
        raise RuntimeError(f"job {job_id} {job['state']}: {job['error_type']}: {job['error']}\n{tail}")
    events = p.events(job_id)
    deadline = time.monotonic() + 60
    while True:  # the runner stores "trainer exited" a moment after the job is final
        logs = all_logs(p, job_id)
        if trainer_exited(logs) is not None or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    return {**phases(job, events, logs), "client_polled_s": client_s,
            # what the job's two CPUs also carried: the platform's processes, in cores (per second of the job)
            **cpu, "others_cores": cpu["others_cpu_s"] / client_s}


def trainer_exited(logs: list[dict[str, Any]]) -> float | None:
    """When the runner saw the trainer process exit (its log line), if it has yet."""
    return next((_ts(i["created_at"]) for i in logs if i["stream"] == "runner" and "trainer exited" in i["line"]), None)


def phases(job: dict[str, Any], events: list[dict[str, Any]], logs: list[dict[str, Any]]) -> dict[str, Any]:
    """Where a finished job's time went, from its own events and log (server timestamps)."""
    first: dict[str, float] = {}
    for e in events:
        first.setdefault(e["event_type"], _ts(e["created_at"]))
    exited = trainer_exited(logs)
    created, finished = _ts(job["created_at"]), _ts(job["finished_at"])
    threads = next((ln["line"] for ln in logs if "torch threads" in ln["line"]), "")
    return {
        "job_id": job["id"], "wall_s": finished - created,
        "launch_s": first["trainer_process"] - created,
        "trainer_start_s": first["started"] - first["trainer_process"],
        "prepare_s": first["model_initialized"] - first["started"],
        "dataset_s": first["dataset_prepared"] - first["started"],
        # of which: imports, config and the download through the node cache (`dataset_loaded`),
        # then DICE → YOLO conversion and Ultralytics' dataset check
        "to_loaded_s": first["dataset_loaded"] - first["started"],
        "convert_s": first["dataset_prepared"] - first["dataset_loaded"],
        # dataset_prepared: the moment before Ultralytics' trainer is built, i.e. the platform's
        # counterpart of the direct run's model.train() call (which builds it inside train_s)
        "before_train_s": first["dataset_prepared"] - created,
        "train_finish_s": finished - first["model_initialized"],
        "trainer_process_s": exited - first["trainer_process"] if exited else None,
        "exit_after_final_s": exited - finished if exited else None,
        "mAP50": (job.get("final_metrics") or {}).get("mAP50"), "threads_line": threads[-160:],
        "callbacks": sum(1 for e in events if e.get("source") == "trainer"),
    }


def proxy_call(port: int, path: str) -> dict[str, int]:
    import httpx

    return httpx.post(f"http://127.0.0.1:{port}{path}", timeout=10, trust_env=False).json()


def summarize(runs: dict[str, list[dict[str, Any]]], delay: float) -> dict[str, Any]:
    med = {kind: {k: harness.median([r[k] for r in rs if isinstance(r.get(k), (int, float))])
                  for k in rs[0] if isinstance(rs[0].get(k), (int, float))} for kind, rs in runs.items() if rs}
    d = med["direct"]["wall_s"]
    out: dict[str, Any] = {"medians": med}
    out["ratio_platform"] = med["platform"]["wall_s"] / d
    # per-repetition ratios too: each rep's runs are neighbours in time, so load drifts cancel better
    out["ratio_per_rep"] = [p["wall_s"] / r["wall_s"] for r, p in zip(runs["direct"], runs["platform"])]
    out["fixed_overhead_s"] = med["platform"]["before_train_s"] - med["direct"]["before_train_s"]
    out["launch_only_s"] = med["platform"]["launch_s"] + med["platform"]["trainer_start_s"]
    out["train_speedup"] = med["direct"]["train_s"] / med["platform"]["train_finish_s"]
    targets = {"ratio_le_0.9": out["ratio_platform"] <= 0.9, "fixed_overhead_le_3s": out["fixed_overhead_s"] <= 3.0}
    for kind, rs in runs.items():  # --variant runs (the same job with other trainer settings), --direct-threads
        if kind.startswith(("platform+", "direct_")) and rs:
            out[f"ratio_{kind}"] = med[kind]["wall_s"] / d
            out[f"ratio_{kind}_per_rep"] = [v["wall_s"] / r["wall_s"] for r, v in zip(runs["direct"], rs)]
    if runs.get("slowed"):
        out["ratio_slowed"] = med["slowed"]["wall_s"] / d
        out["slowed_change"] = out["ratio_slowed"] / out["ratio_platform"] - 1
        out["slowed_change_per_rep"] = [s["wall_s"] / p["wall_s"] - 1 for p, s in zip(runs["platform"], runs["slowed"])]
        targets[f"slowed_{delay:g}s_change_le_5pct"] = abs(out["slowed_change"]) <= 0.05
    out["targets_met"] = targets
    return out


def main() -> None:
    if "--first-job" in sys.argv:  # the user's case: a fresh `vtp up`, first job against the next (first_job.py)
        import first_job

        first_job.main(sys.argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", type=int, default=128, help="generated image size (px)")
    ap.add_argument("--imgsz", type=int, default=128, help="training image size")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plots", action="store_true", help="Ultralytics plots on both sides (off by default)")
    ap.add_argument("--num-cpus", type=float, default=2, help="the platform job's num_cpus")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--delay", type=float, default=2.0, help="seconds each callback is held in the slowed runs")
    ap.add_argument("--no-slowed", action="store_true")
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--serve-callbacks", action="store_true",
                    help="callbacks through Serve's proxy, not the callback gateway (`vtp up`'s default)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                    help="also run the platform job with these Ultralytics arguments in its config, "
                    "interleaved in each repetition (e.g. nodet='{\"deterministic\": false}')")
    ap.add_argument("--direct-threads", type=int, default=0, metavar="N",
                    help="also run the direct training with N torch threads (a second reference: what "
                    "the job's CPUs give a bare run that uses them all)")
    a = ap.parse_args()
    variants = {v.split("=", 1)[0]: json.loads(v.split("=", 1)[1]) for v in a.variant}

    from ray_app.storage import SeaweedS3Server
    from ray_app.storage.s3 import upload_dataset
    from tests.fixtures.s3 import S3TestServer

    python = trainer_python()
    tmp = Path(tempfile.mkdtemp(prefix="vtp-bench-overhead-"))
    s3 = SeaweedS3Server(tmp / "s3", buckets=[BUCKET])
    s3.start(timeout=60)
    proxy: subprocess.Popen | None = None
    direct_n = f"direct_{a.direct_threads}threads"
    runs: dict[str, list[dict[str, Any]]] = {"direct": [], "platform": [], "slowed": [],
                                             **({direct_n: []} if a.direct_threads else {}),
                                             **{f"platform+{n}": [] for n in variants}}
    warmup: dict[str, Any] = {}
    try:
        zipped, data_yaml = prepare_dataset(tmp, a.images, a.size, a.seed)
        dataset_id = "bench-overhead"
        upload_dataset(s3.client(), BUCKET, dataset_id, zipped)
        proxy_port = harness.free_port()
        extra = {"VTP_PUBLIC_BASE_URL": f"http://127.0.0.1:{proxy_port}"}
        if not a.serve_callbacks:
            extra["VTP_CALLBACK_PORT"] = str(harness.free_port())
        t0 = time.monotonic()
        with harness.platform(num_cpus=4, s3=S3TestServer(s3, BUCKET), **extra) as (dep, p):
            upstream = int(extra.get("VTP_CALLBACK_PORT", dep.port))
            proxy = subprocess.Popen([sys.executable, str(BENCH / "_slow_proxy.py"), f"http://127.0.0.1:{upstream}",
                                      str(proxy_port), "0"])
            harness.wait_http(f"http://127.0.0.1:{proxy_port}/healthz", timeout=60, ok=(200, 404))
            print(f"platform up in {time.monotonic() - t0:.1f}s; trainer venv {python.parent.parent.name}")
            if not a.no_warmup:  # file cache and the trainer's runtime_env: not what is measured
                warmup["direct"] = run_direct(python, data_yaml, tmp / "w-direct", a, 1)
                warmup["platform"] = run_platform(p, dataset_id, a, 1)
                print(f"  warm-up: direct {warmup['direct']['wall_s']:.1f}s, platform (cold) "
                      f"{warmup['platform']['wall_s']:.1f}s")
            for rep in range(a.reps):
                r = run_direct(python, data_yaml, tmp / f"direct-{rep}", a, a.epochs)
                runs["direct"].append(r)
                print(f"  rep {rep} direct   {r['wall_s']:6.1f}s (train {r['train_s']:.1f}s, "
                      f"{r['torch_threads']} threads, mAP50 {r['mAP50']:.2f})")
                if a.direct_threads:
                    r = run_direct(python, data_yaml, tmp / f"direct-n-{rep}", a, a.epochs, a.direct_threads)
                    runs[direct_n].append(r)
                    print(f"  rep {rep} {direct_n} {r['wall_s']:6.1f}s (train {r['train_s']:.1f}s)")
                for kind, delay in (("platform", 0.0), ("slowed", a.delay)):
                    if kind == "slowed" and a.no_slowed:
                        continue
                    proxy_call(proxy_port, f"/__proxy_delay?s={delay}")
                    r = run_platform(p, dataset_id, a, a.epochs)
                    r["proxied_requests"] = proxy_call(proxy_port, "/__proxy_stats")
                    runs[kind].append(r)
                    print(f"  rep {rep} {kind:8s} {r['wall_s']:6.1f}s (launch {r['launch_s']:.1f}, before training "
                          f"{r['before_train_s']:.1f}, train+finish {r['train_finish_s']:.1f}, "
                          f"process {r['trainer_process_s'] or 0:.1f}s, callbacks {r['proxied_requests']}, "
                          f"other processes {r['others_cores']:.2f} cores)")
                for name, cfg in variants.items():
                    r = run_platform(p, dataset_id, a, a.epochs, cfg)
                    runs[f"platform+{name}"].append(r)
                    print(f"  rep {rep} +{name:8s} {r['wall_s']:6.1f}s (before training {r['before_train_s']:.1f}, "
                          f"train+finish {r['train_finish_s']:.1f}, mAP50 {r['mAP50']}, "
                          f"other processes {r['others_cores']:.2f} cores)")
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=10)
        s3.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    s = summarize(runs, a.delay)
    m = s["medians"]
    cols = ["wall_s", "before_train_s", "train_s", "train_finish_s", "launch_s", "trainer_start_s",
            "dataset_s", "to_loaded_s", "convert_s", "prepare_s", "trainer_process_s", "trainer_cpu_s",
            "others_cores"]
    print(f"\nTraining overhead: {a.images} images {a.size}px, imgsz {a.imgsz}, {a.epochs} epochs, batch {a.batch}, "
          f"num_cpus {a.num_cpus:g}; medians of {a.reps} (seconds)")
    print(harness.table(["run"] + cols, [[k] + [m[k].get(c) for c in cols] for k in m]))
    rows = [["ratio platform / direct (target ≤ 0.9)", s["ratio_platform"]],
            ["  per repetition", ", ".join(f"{x:.2f}" for x in s["ratio_per_rep"])],
            ["fixed overhead before training, s (target ≤ 3)", s["fixed_overhead_s"]],
            ["  of which created → `started` (launch + trainer start), s", s["launch_only_s"]],
            ["training speed-up (direct train / platform train+finish)", s["train_speedup"]]]
    if a.direct_threads:
        rows += [[f"ratio {direct_n} / direct (the headroom of the job's CPUs)", s[f"ratio_{direct_n}"]],
                 ["  per repetition", ", ".join(f"{x:.2f}" for x in s[f"ratio_{direct_n}_per_rep"])]]
    for name in variants:
        rows += [[f"ratio platform+{name} ({json.dumps(variants[name])}) / direct", s[f"ratio_platform+{name}"]],
                 ["  per repetition", ", ".join(f"{x:.2f}" for x in s[f"ratio_platform+{name}_per_rep"])]]
    if warmup.get("platform") and m.get("platform"):
        rows += [["first job on the platform (cold, 1 epoch) − a warm 1-epoch estimate, s",
                  warmup["platform"]["before_train_s"] - m["platform"]["before_train_s"]]]
    if "slowed_change" in s:
        rows += [[f"ratio slowed ({a.delay:g} s/callback) / direct", s["ratio_slowed"]],
                 ["change vs platform (target ≤ 5 %)", f"{100 * s['slowed_change']:+.1f} %"],
                 ["  per repetition", ", ".join(f"{100 * x:+.1f} %" for x in s["slowed_change_per_rep"])]]
    print(harness.table(["metric", "value"], rows))
    harness.write_result("training_overhead", {"args": vars(a), "summary": s, "runs": runs, "warmup": warmup})


if __name__ == "__main__":
    main()
