"""The prepared GPU check (issue 27): one command that says whether the platform trains, predicts
and exports on the NVIDIA GPUs of the machine it runs on, and how fast, in under 8 minutes.

    .venv/bin/python bench/gpu_check.py [--out gpu_check.json] [--budget-s 450]
    flock /tmp/vtp-suite.lock .venv/bin/python bench/gpu_check.py --cpu-smoke   # the same flow on a CPU
    python3 bench/gpu_check.py --direct [--out gpu.json]   # no platform: the trainers alone (gpu_direct.py)

What it does, each step in its own try (one failure does not hide the rest):

  1. GPUs: `nvidia-smi --query-gpu=index,name,memory.total` and torch.cuda.device_count() (in a
     child process, so this one holds no CUDA context). None: it says "no NVIDIA GPU found", runs
     a few-second self-test of its own code and exits 0 (with --cpu-smoke: the whole flow on the
     CPU instead, num_gpus=0, 1 epoch, tiny data).
  2. The bundled trainers' environments found (or built) in VTP_TRAINER_VENVS_DIR, as the tests do.
  3. Two generated datasets (ray_app.datasets: DICE detection for Ultralytics, classification for
     timm) with a seeded 80/20 split written into them, so the training images are counted exactly;
     uploaded to a SeaweedFS S3 server on loopback.
  4. The platform as the benchmarks bring it up (bench/harness.py -> tests/fixtures: a throwaway
     `ray start --head`, Serve on 127.0.0.1, SQLite), its Ray node given N GPUs
     (RAY_OVERRIDE_RESOURCES={"GPU": N}: the fixture starts it with --num-gpus=0, and Ray's
     override wins over that flag), predict replicas given 0.25 GPU each (VTP_PREDICT_NUM_GPUS).
  5. Training, one job at a time, AMP asked for (Ultralytics `config.amp`, timm
     `advanced_config.amp`): yolo11n (from its yaml) and a small timm model, with num_gpus=1, then
     predict (POST /v1/jobs/{id}/predict) and ONNX export (POST /v1/jobs/{id}/exports) of each, then
     (more than one GPU) the same two trainings with num_gpus=N. While each job runs, a thread
     samples `nvidia-smi --query-gpu=index,utilization.gpu,memory.used` every second.
  6. Per run: SUCCEEDED; the device the trainer used (the `started` event's DEVICE, timm's
     `model_initialized` data, the trainers' "training ... on cuda:0 (... AMP on ...)" log lines,
     Ultralytics' own CUDA banner); AMP on; every GPU asked for busy in nvidia-smi (memory above
     its level before the job, or utilisation); per-GPU mean/max utilisation and max memory over
     the job's training window (model_initialized -> finished); images/s (below).
  7. A summary table, the list of what failed (and warnings), JSON to --out; exit 0 when
     everything passed, else 1. --budget-s (default 450) bounds the whole run: past it nothing is
     waited for any more (a running job is cancelled) and the rest is reported as not run. The
     summary is printed before the teardown (~25 s on 2 cores, most of it Ray's processes given
     20 s to exit after SIGTERM); a watchdog ends the process 30 s after the budget whatever it is
     doing, so the whole command ends within --budget-s + 30 s (480 s by default).

images/s, from the job's own events (server timestamps), training images counted from the split:
  steady    epochs 2..E: (E - 1) x training images / (last - first `validation_complete`), i.e.
            training + validation per epoch, the first epoch's warm-up left out (needs E >= 2)
  epoch 1   training images / (first `validation_complete` - `model_initialized`): includes the
            trainer's setup (data loaders, AMP check), used when only one epoch reported
  whole     E x training images / (finished_at - `model_initialized`): includes the final
            evaluation and uploads, used when the trainer reported no epoch (e.g. a DDP child
            whose callbacks do not reach the platform)
Scaling efficiency = images/s at N GPUs / (N x images/s at 1 GPU), per trainer.

Offline: nothing is downloaded; models are built from config (yolo11n.yaml, timm pretrained=False)
and the trainers apply DESIGN §9's offline settings themselves.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from training_overhead import TERMINAL, VENVS, _ts  # noqa: E402

BUCKET = "vtp-gpu-check"
APP_PREFIX = "vtp-predict-"
TEARDOWN_GRACE_S = 30  # the watchdog ends the process this long after --budget-s
MIB_USED = 256  # a GPU counts as used by a job when its memory rose this much above the level before it
UTIL_USED = 5   # ... or its utilisation reached this (percent)


class BudgetSpent(Exception):
    pass


# ---------------------------------------------------------------- the check's bookkeeping
class Check:
    """Steps, failures and warnings, against one deadline."""

    def __init__(self, budget_s: float) -> None:
        self.t0 = time.monotonic()
        self.deadline = self.t0 + budget_s
        self.budget_s = budget_s
        self.steps: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.warnings: list[str] = []
        self.lock = threading.Lock()
        self.reported = False

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def left(self, what: str) -> float:
        """Seconds left, or BudgetSpent naming what was being waited for."""
        r = self.remaining()
        if r <= 0:
            raise BudgetSpent(f"--budget-s {self.budget_s:g} spent while waiting for {what}")
        return r

    def fail(self, what: str) -> None:
        self.failures.append(what)
        print(f"  FAILED: {what}", flush=True)

    def warn(self, what: str) -> None:
        self.warnings.append(what)
        print(f"  warning: {what}", flush=True)

    def step(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one step; its exception is recorded as a failure and None returned."""
        rec: dict[str, Any] = {"step": name, "ok": False, "seconds": 0.0}
        self.steps.append(rec)
        if self.remaining() <= 0:
            rec["error"] = "not run: the budget was spent"
            self.fail(f"{name}: not run (--budget-s {self.budget_s:g} spent)")
            return None
        print(f"\n== {name} (at {time.monotonic() - self.t0:.0f}s, {self.remaining():.0f}s of budget left)", flush=True)
        t = time.monotonic()
        try:
            value = fn(*args, **kwargs)
            rec["ok"] = True
            return value
        except Exception as exc:  # every step's failure is reported, none hides the rest
            rec["error"] = f"{type(exc).__name__}: {exc}"[:3000]
            if not isinstance(exc, BudgetSpent):
                traceback.print_exc(limit=6)
            self.fail(f"{name}: {type(exc).__name__}: {str(exc)[:800]}")
            return None
        finally:
            rec["seconds"] = round(time.monotonic() - t, 1)
            print(f"   {name}: {'ok' if rec['ok'] else 'FAILED'} in {rec['seconds']:.1f}s", flush=True)


class GpuSampler:
    """`nvidia-smi --query-gpu=index,utilization.gpu,memory.used` every `period` seconds, in a thread."""

    CMD = ["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits"]

    def __init__(self, period: float = 1.0) -> None:
        self.period = period
        self.samples: list[tuple[float, int, float, float]] = []  # (time.time(), index, util %, MiB)
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="nvidia-smi sampler")

    def start(self) -> GpuSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def sample_once(self) -> list[tuple[float, int, float, float]]:
        out = subprocess.run(self.CMD, capture_output=True, text=True, timeout=10)
        now, rows = time.time(), []
        for line in out.stdout.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 3:
                try:
                    rows.append((now, int(parts[0]), float(parts[1]), float(parts[2])))
                except ValueError:  # "[N/A]" on some boards
                    continue
        return rows

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                self.samples.extend(self.sample_once())
            except (OSError, subprocess.SubprocessError):
                self.errors += 1
            self._stop.wait(max(0.0, self.period - (time.monotonic() - t)))

    def window(self, start: float, end: float) -> list[tuple[float, int, float, float]]:
        return [s for s in list(self.samples) if start <= s[0] <= end]

    def level_before(self, t: float, lookback: float = 5.0) -> dict[int, float]:
        """Each GPU's memory.used just before `t` (the lowest of the last few samples)."""
        out: dict[int, float] = {}
        for ts, idx, _util, mem in list(self.samples):
            if t - lookback <= ts <= t:
                out[idx] = min(out.get(idx, mem), mem)
        return out


def gpu_stats(samples: list[tuple[float, int, float, float]], before: dict[int, float]) -> dict[int, dict[str, Any]]:
    by: dict[int, list[tuple[float, float]]] = {}
    for _t, idx, util, mem in samples:
        by.setdefault(idx, []).append((util, mem))
    out = {}
    for idx, rows in sorted(by.items()):
        utils, mems = [u for u, _ in rows], [m for _, m in rows]
        base = before.get(idx, min(mems))
        out[idx] = {"samples": len(rows), "util_mean": round(sum(utils) / len(utils), 1), "util_max": max(utils),
                    "mem_max_mib": max(mems), "mem_before_mib": base, "mem_rise_mib": max(mems) - base,
                    "used": max(mems) - base >= MIB_USED or max(utils) >= UTIL_USED}
    return out


# ---------------------------------------------------------------- GPUs
def detect_gpus() -> dict[str, Any]:
    info: dict[str, Any] = {"nvidia_smi": None, "gpus": [], "torch_cuda_devices": None, "torch": None}
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            info["nvidia_smi"] = (out.stdout + out.stderr).strip()[:2000]
            for line in out.stdout.splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 3 and parts[0].isdigit():
                    info["gpus"].append({"index": int(parts[0]), "name": parts[1], "memory_total": parts[2]})
        except (OSError, subprocess.SubprocessError) as exc:
            info["nvidia_smi"] = f"failed: {exc}"
    else:
        info["nvidia_smi"] = "not installed"
    code = "import torch, json; print(json.dumps([torch.__version__, torch.version.cuda, torch.cuda.device_count()]))"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        version, cuda, count = json.loads(out.stdout.strip().splitlines()[-1])
        info.update(torch=version, torch_cuda=cuda, torch_cuda_devices=int(count))
    except Exception as exc:  # torch missing or broken: say so, the GPU list still stands
        info["torch_error"] = f"{type(exc).__name__}: {exc}"[:500]
    return info


def trainer_envs() -> dict[str, str]:
    """The bundled trainers' venvs, found (or built) where the platform's settings look for them."""
    from ray_app.runtime import venvs
    from ray_app.runtime.registry import TrainerRegistry

    registry = TrainerRegistry([harness.REPO / "trainers"])
    out = {}
    for name in ("ultralytics", "timm"):
        manifest = registry.get(name)
        venv = venvs.find_built(VENVS, manifest) or venvs.build(VENVS, manifest)
        out[name] = str(venv)
        print(f"   {name}: {venv}")
    return out


# ---------------------------------------------------------------- data
def make_datasets(tmp: Path, a: argparse.Namespace) -> dict[str, dict[str, Any]]:
    from ray_app.datasets import make_classification, make_detection

    det = make_detection(tmp / "det", n_images=a.images, size=a.det_size, seed=1, val_fraction=0.2)
    cls = make_classification(tmp / "cls", n_images=a.images, size=a.cls_size, seed=2, val_fraction=0.2,
                              classes=("circle", "square", "triangle"))
    out = {}
    for key, root in (("ultralytics", det), ("timm", cls)):
        images = json.loads((root / "annotations.json").read_text())["images"]
        train = sum(1 for i in images if i.get("split", "train") == "train")
        out[key] = {"root": root, "train_images": train, "val_images": len(images) - train,
                    "image": sorted((root / "images").glob("*.png"))[-1]}
        print(f"   {key}: {len(images)} images ({train} train / {len(images) - train} val) at "
              f"{a.det_size if key == 'ultralytics' else a.cls_size}px")
    return out


def upload(s3: Any, datasets: dict[str, dict[str, Any]]) -> None:
    from ray_app.datasets import zip_dataset
    from ray_app.storage.s3 import upload_dataset

    for key, d in datasets.items():
        d["dataset_id"] = f"gpu-check-{key}"
        upload_dataset(s3.client(), BUCKET, d["dataset_id"], Path(zip_dataset(d["root"])))


# ---------------------------------------------------------------- the platform
def platform_up(stack: ExitStack, s3: Any, n_gpus: int, a: argparse.Namespace) -> tuple[Any, Any]:
    from tests.fixtures.s3 import S3TestServer

    extra = {"VTP_PLACEMENT_TIMEOUT_S": "120",  # the fixture's 6 s is for tests of the timeout itself
             "VTP_PREDICT_NUM_GPUS": "0.25" if n_gpus else "0"}
    if n_gpus:
        # the fixture starts `ray start --head --num-gpus=0`; Ray's resource override wins over the flag
        os.environ["RAY_OVERRIDE_RESOURCES"] = json.dumps({"GPU": n_gpus})
    try:
        dep, p = stack.enter_context(harness.platform(num_cpus=a.cluster_cpus, s3=S3TestServer(s3, BUCKET), **extra))
    finally:
        os.environ.pop("RAY_OVERRIDE_RESOURCES", None)
    import ray

    resources = ray.cluster_resources()
    print(f"   API {p.base_url}; cluster {dep.cluster.address}: CPU {resources.get('CPU')}, GPU {resources.get('GPU', 0)}")
    if float(resources.get("GPU", 0)) != float(n_gpus):
        raise RuntimeError(f"the Ray cluster has GPU={resources.get('GPU', 0)}, wanted {n_gpus}")
    return dep, p


def job_fields() -> set[str]:
    from ray_app.jobs.api_models import JobCreate

    return set(JobCreate.model_fields)


def job_body(framework: str, gpus: int, d: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    cpus = max(1, min(a.cluster_cpus - 1, a.cpus_per_gpu * max(1, gpus))) if gpus else 2
    if framework == "ultralytics":
        body = {"framework": "ultralytics", "task_type": "object_detection", "model_name": "yolo11n",
                "epochs": a.epochs, "batch_size": a.yolo_batch, "image_size": a.yolo_imgsz,
                "config": {"seed": 0, "plots": False, "amp": True}}
    else:
        body = {"framework": "timm", "task_type": "image_classification", "model_name": a.timm_model,
                "epochs": a.epochs, "batch_size": a.timm_batch, "image_size": a.cls_size, "learning_rate": 0.01,
                "advanced_config": {"seed": 0, "amp": True, "scale": [0.6, 1.0]}}
    body.update(dataset_id=d["dataset_id"], num_cpus=cpus, num_gpus=gpus)
    if framework == "timm" and gpus > 1 and a.timm_ranks_field == "workers":
        # W ranks of one GPU each (issue 27's per-worker fields), where the API has them
        if "workers" not in job_fields():
            raise RuntimeError("--timm-ranks-field workers: JobCreate has no `workers` field")
        body.update(workers=gpus, num_gpus=1, num_cpus=max(1, cpus // gpus))
    return body


def all_logs(p: Any, job_id: str, remaining: float) -> list[str]:
    try:
        return p.logs(job_id, complete=True, timeout=max(1.0, min(30.0, remaining)))
    except AssertionError:  # output not marked complete in time: what is there
        return p.logs(job_id, complete=False)


def device_evidence(framework: str, events: list[dict[str, Any]], logs: list[str]) -> dict[str, Any]:
    """The device and precision the trainer reported, with the lines that say so."""
    ev: dict[str, Any] = {"device": None, "amp": None, "lines": []}
    started = next((e for e in events if e["event_type"] == "started"), None)
    if started:
        ev["DEVICE"] = started["data"].get("device")  # the contract's DEVICE: "0", "0,1", "cpu"
    init = next((e for e in events if e["event_type"] == "model_initialized"), None)
    if framework == "timm" and init:
        ev.update(device=init["data"].get("device"), amp=init["data"].get("amp"), amp_dtype=init["data"].get("amp_dtype"))
    amp_hint = False
    for line in logs:
        line = re.sub(r"^\[TRACE:[^]]*\] ", "", line)
        low = line.lower()
        # both trainers: "training E epochs ... on cuda:0 (... AMP on ...)"
        if "training " in line and " epochs" in line and " on " in line and "memory format" in line:
            ev["lines"].append(line.strip()[:300])
            after = line.split(" on ", 1)[1]
            ev["device"] = ev["device"] or after.split()[0].rstrip("(,")
            if ev["amp"] is None:
                ev["amp"] = "amp on" in low
        elif ("ultralytics" in low and ("cuda:" in low or "cpu (" in low)) or "amp check" in low \
                or "amp: checks" in low or ("gpus=" in line and "started " in line):
            ev["lines"].append(line.strip()[:300])
            if ev["device"] is None and "ultralytics" in low and "cuda:" in low:
                ev["device"] = "cuda (Ultralytics banner)"
            if "amp check" in low or "amp: checks" in low:  # the check's outcome, when no training line says it
                amp_hint = amp_hint or "amp=true" in low or "checks passed" in low
    if ev["amp"] is None and amp_hint:
        ev["amp"] = True
    ev["lines"] = ev["lines"][:6]
    return ev


def images_per_s(job: dict[str, Any], events: list[dict[str, Any]], train_images: int) -> tuple[float | None, str]:
    attempt = job.get("attempt") or 1
    evs = [e for e in events if e.get("attempt", attempt) == attempt]
    init = next((_ts(e["created_at"]) for e in evs if e["event_type"] == "model_initialized"), None)
    vals: dict[int, float] = {}
    for e in evs:
        if e["event_type"] == "validation_complete":
            vals.setdefault(int(e["data"].get("epoch", len(vals) + 1)), _ts(e["created_at"]))
    times = [vals[k] for k in sorted(vals)]
    if len(times) >= 2 and times[-1] > times[0]:
        return ((len(times) - 1) * train_images / (times[-1] - times[0]),
                f"steady: epochs 2..{len(times)}, {len(times) - 1} x {train_images} images / time between the first "
                "and last validation_complete (train + val per epoch)")
    if len(times) == 1 and init is not None and times[0] > init:
        return (train_images / (times[0] - init),
                f"epoch 1: {train_images} images / (validation_complete - model_initialized), setup included")
    if init is not None and job.get("finished_at"):
        span = _ts(job["finished_at"]) - init
        epochs = int(job.get("epochs") or 1)
        if span > 0:
            return (epochs * train_images / span, f"whole: {epochs} x {train_images} images / (finished - "
                    "model_initialized), setup and final evaluation included (no epoch events)")
    return None, "no model_initialized/validation_complete events to time"


def train_run(chk: Check, p: Any, sampler: GpuSampler | None, rec: dict[str, Any], d: dict[str, Any],
              a: argparse.Namespace, expect_cuda: bool) -> dict[str, Any]:
    """One training job, filling `rec` (the summary's row) as it goes."""
    name, framework, gpus = rec["run"], rec["framework"], rec["num_gpus"]
    rec["body"] = body = job_body(framework, gpus, d, a)
    submitted = time.time()
    r = p.api("POST", "/v1/jobs", json=body)
    if r.status_code != 201:
        raise RuntimeError(f"POST /v1/jobs: {r.status_code} {r.text[:1500]}")
    job = r.json()
    rec["job_id"] = job_id = job["id"]
    rec["state"] = job["state"]
    for key in ("workers", "num_gpus", "num_cpus"):
        if key in job:
            rec[f"job_{key}"] = job[key]
    print(f"   job {job_id}: {framework} {body['model_name']} num_gpus={body['num_gpus']}"
          f"{' workers=' + str(body['workers']) if 'workers' in body else ''} num_cpus={body['num_cpus']}", flush=True)
    last_line = ""
    try:
        while job["state"] not in TERMINAL:
            chk.left(f"job {job_id} ({name}, {job['state']})")
            time.sleep(1.0)
            job = p.job(job_id)
            rec["state"] = job["state"]
            line = (f"{job['state']} epoch {job.get('epoch')}/{job.get('total_epochs') or job.get('epochs')}"
                    + (f" ({job['wait_reason']})" if job.get("wait_reason") else ""))
            if line != last_line:
                print(f"     {time.time() - submitted:5.0f}s {line}", flush=True)
                last_line = line
    except BudgetSpent:
        rec["state"] = f"{job['state']} (cancelled: budget spent)"
        p.api("POST", f"/v1/jobs/{job_id}/cancel")
        raise
    rec["ranks"] = job.get("ranks")
    rec.update(state=job["state"], wall_s=round(_ts(job["finished_at"]) - _ts(job["created_at"]), 1)
               if job.get("finished_at") else None, error=job.get("error"))
    events = p.events(job_id)
    logs = all_logs(p, job_id, chk.remaining())
    rec["log_tail"] = logs[-15:]
    if job["state"] != "SUCCEEDED":
        print("\n".join("     | " + ln for ln in logs[-40:]))
        raise RuntimeError(f"job {job_id} {job['state']}: {job.get('error_type')}: {str(job.get('error'))[:600]}")
    ranks = job.get("ranks") or []
    if framework == "timm" and gpus > 1:  # issue 27: a timm job on N GPUs runs N ranks, one a GPU
        if not ranks:
            chk.warn(f"{name}: the job shows no ranks (JobView.ranks)")
        elif len(ranks) != gpus:
            chk.fail(f"{name}: {len(ranks)} rank(s) ran for {gpus} GPUs: {ranks}")
    # speed
    ips, how = images_per_s(job, events, d["train_images"])
    rec.update(images_per_s=round(ips, 1) if ips else None, images_per_s_method=how, train_images=d["train_images"])
    init = next((e for e in events if e["event_type"] == "model_initialized"), None)
    if framework == "timm" and init and init["data"].get("train_images") not in (None, d["train_images"]):
        chk.warn(f"{name}: the trainer counted {init['data']['train_images']} training images, the split "
                 f"{d['train_images']} (images/s uses the split's)")
    if ips is None:
        chk.fail(f"{name}: no images/s ({how})")
    # device and precision
    ev = device_evidence(framework, events, logs)
    rec["device"] = ev
    device = str(ev.get("device") or "")
    if expect_cuda and "cuda" not in device.lower():
        chk.fail(f"{name}: the trainer did not report a CUDA device (device={ev.get('device')!r}, "
                 f"DEVICE={ev.get('DEVICE')!r}); lines: {[ln[:160] for ln in ev['lines'][:2]]}")
    if not expect_cuda and device and "cuda" in device.lower():
        chk.fail(f"{name}: trained on {device} in a CPU run")
    if expect_cuda and ev.get("amp") is not True:
        chk.fail(f"{name}: AMP not reported on (amp={ev.get('amp')!r})")
    # the GPUs nvidia-smi saw busy during training
    if sampler is not None:
        start = _ts(init["created_at"]) if init else submitted
        end = _ts(job["finished_at"])
        stats = gpu_stats(sampler.window(start, end) or sampler.window(submitted, end),
                          sampler.level_before(submitted))
        rec["gpu"] = {str(k): v for k, v in stats.items()}
        used = sorted(k for k, v in stats.items() if v["used"])
        rec["gpus_used"] = used
        for k, v in stats.items():
            print(f"     GPU {k}: util mean {v['util_mean']:.0f}% max {v['util_max']:.0f}%, memory max "
                  f"{v['mem_max_mib']:.0f} MiB (+{v['mem_rise_mib']:.0f} over before the job), {v['samples']} samples")
        if not stats:
            chk.fail(f"{name}: nvidia-smi gave no samples during the job")
        elif len(used) < gpus:
            chk.fail(f"{name}: asked for {gpus} GPU(s), nvidia-smi saw {len(used)} busy ({used}); "
                     f"per GPU: {({k: (v['util_max'], v['mem_rise_mib']) for k, v in stats.items()})} (util max %, MiB rise)")
    print(f"   {name}: SUCCEEDED in {rec['wall_s']}s; {rec['images_per_s']} images/s ({how}); device "
          f"{ev.get('device')} (DEVICE={ev.get('DEVICE')}), AMP {ev.get('amp')}", flush=True)
    return rec


def predict(chk: Check, p: Any, framework: str, job_id: str, image: Path, expect_cuda: bool) -> dict[str, Any]:
    t0 = time.monotonic()
    r = p.api("POST", f"/v1/jobs/{job_id}/predict", files=[("files", (image.name, image.read_bytes(), "image/png"))],
              timeout=max(5.0, min(300.0, chk.left(f"predict on {job_id}"))))
    wall = time.monotonic() - t0
    if r.status_code != 200:
        raise RuntimeError(f"POST /v1/jobs/{job_id}/predict: {r.status_code} {r.text[:1500]}")
    body = r.json()
    pred = body["predictions"][0]
    rec = {"job_id": job_id, "wall_s": round(wall, 2), "inference_s": body.get("inference_seconds"),
           "result_keys": sorted(pred)}
    if "boxes" in pred:
        rec["boxes"] = len(pred["boxes"])
    if "top_k" in pred:
        rec["top1"] = pred["top_k"][0]["class_name"] if pred["top_k"] else None
    try:  # the replica's own device ("0": a GPU, "cpu"), as bench/predict.py reads its status
        from ray import serve

        status = serve.get_app_handle(APP_PREFIX + framework).status.remote().result(timeout_s=30)
        rec["device"] = status.get("device")
    except Exception as exc:
        rec["device"] = None
        chk.warn(f"predict {framework}: the model server's status could not be read: {type(exc).__name__}: {exc}")
    if expect_cuda and rec["device"] != "0":
        chk.fail(f"predict {framework}: the model server ran on {rec['device']!r}, not on a GPU")
    print(f"   predict {framework} {job_id}: {wall:.1f}s (server {body.get('inference_seconds')}s) on device "
          f"{rec['device']}: {({k: rec[k] for k in ('boxes', 'top1') if k in rec})}")
    return rec


def export(chk: Check, p: Any, framework: str, job_id: str, expect_cuda: bool) -> dict[str, Any]:
    from ray_app.serving.exports import GPU_FORMATS

    t0 = time.monotonic()
    r = p.api("POST", f"/v1/jobs/{job_id}/exports", json={"format": "onnx"}, timeout=120)
    if r.status_code != 202:
        raise RuntimeError(f"POST /v1/jobs/{job_id}/exports: {r.status_code} {r.text[:1500]}")
    export_id = r.json()["id"]
    while (view := p.api("GET", f"/v1/jobs/{job_id}/exports/{export_id}").json())["state"] not in ("succeeded", "failed"):
        chk.left(f"export {export_id} of {job_id}")
        time.sleep(0.5)
    wall = time.monotonic() - t0
    if view["state"] != "succeeded":
        raise RuntimeError(f"export {export_id} of {job_id} failed: {str(view.get('error'))[:1500]}")
    # ray_app/serving/exports.py: an export task gets a GPU only for GPU_FORMATS (TensorRT engines)
    device = "GPU 0" if "onnx" in GPU_FORMATS else "cpu"
    if expect_cuda and device == "cpu":
        chk.warn(f"export {framework}: ONNX exports run on the CPU (the platform gives an export task a GPU only "
                 f"for {sorted(GPU_FORMATS)}: ray_app/serving/exports.py), not on CUDA")
    files = [(f["name"], f["size_bytes"]) for f in view["files"]]
    print(f"   export {framework} {job_id} onnx: {wall:.1f}s on {device}: {files}")
    return {"job_id": job_id, "export_id": export_id, "wall_s": round(wall, 1), "files": files, "device": device}


def free_predict_gpus(frameworks: list[str]) -> None:
    """The predict replicas hold GPU fractions (VTP_PREDICT_NUM_GPUS): deleted before the jobs that
    need every GPU whole."""
    from ray import serve

    for fw in frameworks:
        try:
            serve.delete(APP_PREFIX + fw, _blocking=True)
        except Exception as exc:
            print(f"   could not delete {APP_PREFIX + fw}: {exc}")


# ---------------------------------------------------------------- report
def summary(chk: Check, res: dict[str, Any], out: str | None, sampler: GpuSampler | None = None) -> int:
    with chk.lock:
        if chk.reported:
            return 1
        chk.reported = True
    if sampler is not None:
        res["nvidia_smi_sampler"] = {"samples": len(sampler.samples), "errors": sampler.errors}
    res.update(steps=chk.steps, failures=chk.failures, warnings=chk.warnings,
               elapsed_s=round(time.monotonic() - chk.t0, 1), passed=not chk.failures)
    print("\n" + "=" * 100)
    print(f"GPU check ({res['mode']}): {len(res.get('gpus', []))} GPU(s) "
          f"{[g['name'] for g in res.get('gpus', [])]}, torch {res.get('torch')} (CUDA {res.get('torch_cuda')}, "
          f"{res.get('torch_cuda_devices')} device(s)); {res['elapsed_s']:.0f}s of --budget-s {chk.budget_s:g}")
    print(harness.table(["step", "ok", "s"], [[s["step"], "yes" if s["ok"] else "NO", s["seconds"]] for s in chk.steps]))
    runs = res.get("runs", [])
    if runs:
        rows = []
        for r in runs:
            gpu = r.get("gpu") or {}
            rows.append([r["run"], r.get("job_id", "-"), r.get("num_gpus"), r.get("state", "-"), r.get("wall_s"),
                         r.get("images_per_s"), (r.get("device") or {}).get("device"), (r.get("device") or {}).get("amp"),
                         " ".join(f"{k}:{v['util_mean']:.0f}/{v['util_max']:.0f}%" for k, v in gpu.items()) or "-",
                         " ".join(f"{k}:{v['mem_max_mib']:.0f}" for k, v in gpu.items()) or "-",
                         ",".join(map(str, r.get("gpus_used", []))) or "-"])
        print(harness.table(["run", "job", "num_gpus", "state", "wall s", "images/s", "device", "AMP",
                             "GPU util mean/max", "GPU mem max MiB", "GPUs busy"], rows))
        for r in runs:
            if r.get("images_per_s_method"):
                print(f"  {r['run']}: images/s = {r['images_per_s_method']}")
    if res.get("scaling"):
        print(harness.table(["trainer", "images/s 1 GPU", f"images/s {res.get('n_gpus')} GPUs", "efficiency"],
                            [[k, v.get("one"), v.get("all"), v.get("efficiency")] for k, v in res["scaling"].items()]))
    for kind in ("predict", "export"):
        for fw, v in (res.get(kind) or {}).items():
            print(f"  {kind} {fw}: " + ", ".join(f"{k}={v[k]}" for k in v))
    if chk.warnings:
        print("\nwarnings:\n" + "\n".join(f"  - {w}" for w in chk.warnings))
    print("\nfailed:\n" + ("\n".join(f"  - {f}" for f in chk.failures) if chk.failures else "  nothing"))
    print(f"\nresult: {'PASSED' if not chk.failures else 'FAILED'}")
    if out:
        Path(out).write_text(json.dumps({"check": "gpu_check", "machine": harness.machine(), **res}, indent=2, default=str))
        print(f"wrote {out}")
    sys.stdout.flush()
    return 0 if not chk.failures else 1


def self_test(tmp: Path) -> dict[str, Any]:
    """A few seconds of this script's own code on the CPU: a tiny dataset, the images/s and
    device calculations on made-up events, the GPU statistics on made-up samples."""
    a = argparse.Namespace(images=10, det_size=64, cls_size=32)
    d = make_datasets(tmp, a)
    t = 1_700_000_000.0

    def iso(s: float) -> str:
        from datetime import UTC, datetime

        return datetime.fromtimestamp(t + s, UTC).isoformat()

    events = [{"event_type": "model_initialized", "created_at": iso(0), "attempt": 1, "data": {"device": "cuda:0", "amp": True}},
              *[{"event_type": "validation_complete", "created_at": iso(2 + 2 * k), "attempt": 1, "data": {"epoch": k + 1}}
                for k in range(3)]]
    ips, how = images_per_s({"attempt": 1, "epochs": 3, "finished_at": iso(9)}, events, 100)
    assert ips is not None and abs(ips - 50.0) < 1e-6, (ips, how)
    ev = device_evidence("timm", events, ["training 3 epochs on cuda:0 (4 torch threads, 2 data-loader workers, "
                                          "contiguous memory format, AMP on (float16), 7 batches per epoch)"])
    assert ev["device"] == "cuda:0" and ev["amp"] is True, ev
    stats = gpu_stats([(t, 0, 90.0, 5000.0), (t + 1, 0, 70.0, 5200.0), (t, 1, 0.0, 10.0)], {0: 1000.0, 1: 10.0})
    assert stats[0]["used"] and not stats[1]["used"] and stats[0]["util_mean"] == 80.0, stats
    return {"datasets": {k: v["train_images"] for k, v in d.items()}, "images_per_s": ips}


# ---------------------------------------------------------------- main
def main() -> int:
    if "--direct" in sys.argv[1:]:  # the trainers alone, no platform: bench/gpu_direct.py
        import gpu_direct

        return gpu_direct.main(sys.argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--direct", action="store_true",
                    help="no platform (no Ray, no network): the trainers' train.py, predict.py and export.py run "
                         "directly against a moto S3 server, as bench/gpu_direct.py describes (`--direct --help`)")
    ap.add_argument("--out", help="also write the summary as JSON here")
    ap.add_argument("--budget-s", type=float, default=450.0, help="stop waiting and report after this many seconds")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="with no GPU: run the whole flow on the CPU (num_gpus=0, 1 epoch, tiny data)")
    ap.add_argument("--epochs", type=int, help="default 3 on GPUs, 1 with --cpu-smoke")
    ap.add_argument("--images", type=int, help="images per dataset (default 512 on GPUs, 24 with --cpu-smoke)")
    ap.add_argument("--timm-model", help="default resnet18 on GPUs, test_resnet with --cpu-smoke")
    ap.add_argument("--timm-ranks-field", choices=("num_gpus", "workers"), default="num_gpus",
                    help="how the N-GPU timm job asks for N ranks: num_gpus=N (the platform makes one rank a "
                         "GPU) or workers=N with num_gpus=1 each (where JobCreate has `workers`)")
    ap.add_argument("--cpus-per-gpu", type=int, default=4, help="a job's num_cpus per GPU it asks for")
    a = ap.parse_args()

    res: dict[str, Any] = {"mode": "gpu", "runs": []}
    chk = Check(a.budget_s)
    info = chk.step("detect GPUs", detect_gpus) or {}
    res.update(info)
    n_gpus = int(info.get("torch_cuda_devices") or 0)
    listed = len(info.get("gpus") or [])
    print(f"   nvidia-smi: {info.get('nvidia_smi')!r}; torch {info.get('torch')} sees {info.get('torch_cuda_devices')} "
          f"CUDA device(s){'; ' + info['torch_error'] if info.get('torch_error') else ''}")
    tmp = Path(tempfile.mkdtemp(prefix="vtp-gpu-check-"))
    try:
        if listed and not n_gpus:
            chk.fail(f"nvidia-smi lists {listed} GPU(s) but torch.cuda.device_count() is "
                     f"{info.get('torch_cuda_devices')}: the platform's torch cannot use them")
            res["mode"] = "gpu-unusable"
            return summary(chk, res, a.out)
        if not n_gpus and not a.cpu_smoke:
            print(f"\nno NVIDIA GPU found (nvidia-smi: {info.get('nvidia_smi') or 'lists none'}; "
                  f"torch.cuda.device_count() = {info.get('torch_cuda_devices')}): nothing to check on a GPU. "
                  "`--cpu-smoke` runs the same flow on the CPU.")
            res["mode"] = "no-gpu"
            res["self_test"] = chk.step("self-test of this script (CPU, no platform)", self_test, tmp)
            return summary(chk, res, a.out)
        return run_flow(chk, res, a, n_gpus, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_flow(chk: Check, res: dict[str, Any], a: argparse.Namespace, n_gpus: int, tmp: Path) -> int:
    cpu = n_gpus == 0
    res["mode"] = "cpu-smoke" if cpu else "gpu"
    res["n_gpus"] = n_gpus
    a.epochs = a.epochs or (1 if cpu else 3)
    a.images = a.images or (24 if cpu else 512)
    a.timm_model = a.timm_model or ("test_resnet" if cpu else "resnet18")
    a.det_size, a.yolo_imgsz, a.yolo_batch = (64, 64, 8) if cpu else (160, 160, 32)
    a.cls_size, a.timm_batch = (48, 8) if cpu else (64, 64)
    a.cluster_cpus = 4 if cpu else max(4, os.cpu_count() or 4)
    res["args"] = {k: v for k, v in vars(a).items()}

    # the watchdog: 30 s past the budget the process ends, whatever a step or the teardown is doing
    # (the summary first, if it was not printed yet): the whole check stays within budget + 30 s
    done = threading.Event()
    code = [1]

    def watchdog() -> None:
        if done.wait(max(0.0, chk.remaining() + TEARDOWN_GRACE_S)):
            return
        if not chk.reported:
            chk.fail(f"still running {TEARDOWN_GRACE_S:g} s after --budget-s {chk.budget_s:g}: stopped")
            code[0] = summary(chk, res, a.out)
        print(f"watchdog: --budget-s {chk.budget_s:g} + {TEARDOWN_GRACE_S:g} s passed; exiting with {code[0]} "
              "(the throwaway cluster's processes may outlive this one)", flush=True)
        os._exit(code[0])

    threading.Thread(target=watchdog, daemon=True, name="watchdog").start()
    from ray_app.storage import SeaweedS3Server

    sampler = GpuSampler().start() if not cpu else None
    s3 = SeaweedS3Server(tmp / "s3", buckets=[BUCKET])
    try:
        with ExitStack() as stack:
            code[0] = flow(chk, res, a, n_gpus, tmp, stack, sampler, s3)
            t = time.monotonic()
            print("\n== teardown (the platform, the Ray cluster)", flush=True)
        print(f"   teardown: {time.monotonic() - t:.1f}s", flush=True)
    finally:
        if sampler is not None:
            sampler.stop()
        try:
            s3.stop()
        except Exception as exc:
            print(f"   S3 stop: {exc}")
        done.set()
    return code[0]


def flow(chk: Check, res: dict[str, Any], a: argparse.Namespace, n_gpus: int, tmp: Path, stack: ExitStack,
         sampler: GpuSampler | None, s3: Any) -> int:
    """Everything but the teardown; ends with the summary (so it is out before the teardown)."""
    cpu = n_gpus == 0
    chk.step("trainer environments (found or built)", trainer_envs)
    data = chk.step("generate datasets", make_datasets, tmp, a)
    def s3_up() -> None:
        s3.start(timeout=60)
        upload(s3, data)

    chk.step("S3 (SeaweedFS) up, datasets uploaded", s3_up)
    up = chk.step(f"platform up (Ray with GPU={n_gpus}, Serve, SQLite)", platform_up, stack, s3, n_gpus, a)
    if up is None or data is None:
        chk.fail("no platform or no datasets: nothing was trained")
        return summary(chk, res, a.out, sampler)
    _dep, p = up
    counts = [1, n_gpus] if n_gpus > 1 else [n_gpus]
    first: dict[str, str] = {}

    def train_both(g: int) -> None:
        for fw in ("ultralytics", "timm"):
            name = f"{fw} {'cpu' if cpu else f'{g} GPU'}"
            rec: dict[str, Any] = {"run": name, "framework": fw, "num_gpus": g, "state": "not created"}
            res["runs"].append(rec)
            if chk.step(f"train {name}", train_run, chk, p, sampler, rec, data[fw], a, not cpu) is not None:
                first.setdefault(fw, rec["job_id"])

    train_both(counts[0])
    res["predict"], res["export"] = {}, {}
    for fw, job_id in first.items():
        rec = chk.step(f"predict {fw} (POST /v1/jobs/{{id}}/predict)", predict, chk, p, fw, job_id,
                       data[fw]["image"], not cpu)
        if rec is not None:
            res["predict"][fw] = rec
    for fw, job_id in first.items():
        rec = chk.step(f"export {fw} onnx (POST /v1/jobs/{{id}}/exports)", export, chk, p, fw, job_id, not cpu)
        if rec is not None:
            res["export"][fw] = rec
    for fw in ("ultralytics", "timm"):
        if fw not in first:
            chk.fail(f"predict/export {fw}: not run, no {fw} job succeeded")
    if len(counts) > 1:
        chk.step("free the predict replicas' GPU shares", free_predict_gpus, list(res["predict"]))
        train_both(counts[1])
        res["scaling"] = {}
        for fw in ("ultralytics", "timm"):
            one = next((r.get("images_per_s") for r in res["runs"] if r["framework"] == fw and r["num_gpus"] == 1), None)
            many = next((r.get("images_per_s") for r in res["runs"] if r["framework"] == fw and r["num_gpus"] == n_gpus), None)
            res["scaling"][fw] = {"one": one, "all": many,
                                  "efficiency": round(many / (n_gpus * one), 3) if one and many else None}
    elif not cpu:
        res["scaling"] = {fw: {"one": r.get("images_per_s"), "all": r.get("images_per_s"), "efficiency": 1.0}
                          for fw in ("ultralytics", "timm") for r in res["runs"] if r["framework"] == fw}
        print("\n   one GPU: images/s at all GPUs = at 1 GPU (the same runs)")
    return summary(chk, res, a.out, sampler)


if __name__ == "__main__":
    sys.exit(main())
