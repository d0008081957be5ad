"""`bench/gpu_check.py --direct`: the GPU path of the TRAINERS without the platform (issue 27).

For a machine that cannot host the platform (no Ray, no network: the lent device machine). What
the platform's runner would do, done by hand, one step at a time (each step in its own try):

  1. GPUs: nvidia-smi and torch.cuda.device_count() (in a child process).
  2. S3: moto's server (`moto.server.ThreadedMotoServer`) on 127.0.0.1, one bucket.
  3. Two generated datasets (ray_app/datasets/synthetic.py, loaded by path: numpy and Pillow
     only) with a seeded 80/20 split, zipped and placed where the platform places a dataset:
     `datasets/{id}.zip` (DATASET_S3_URI = s3://bucket/datasets/{id}, sdk.contract.dataset_uri).
  4. Each trainer's train.py as the runner starts it: `python train.py`, cwd = the trainer's
     folder, trainers/ first on PYTHONPATH (`import sdk`), the contract's environment
     (ray_app/runtime/contract_env.py: JOB_ID ... CONFIG, the S3 names of `storage()`, WORK_DIR,
     OFFLINE_ENV; DEVICE "0" as the runner sets it for one GPU; WORLD_SIZE=1 RANK=0) and no
     BACKEND_BASE_URL: the SDK then only logs its callbacks (dry run), and this script reads them
     from the trainer's output, each line timestamped on arrival. yolo11n (from its yaml,
     detection) and a timm model (resnet18), AMP asked for (Ultralytics `config.amp`, timm
     `advanced_config.amp`). nvidia-smi sampled every second meanwhile.
  5. Per run: exit 0; the device and AMP decision from the trainers' own line "training E epochs
     ... on cuda:0 (... AMP on ...)"; the best checkpoint in the bucket
     (checkpoints/job-{id}/best.pt); per-GPU utilisation mean/max and memory max over the
     training window (first `model_initialized` event line -> exit); images/s (below).
  6. Predict and export as the platform calls them (ray_app/serving/model_server.py,
     exports.py): the checkpoint fetched from S3, the trainer's predict.py loaded by path in a
     child whose cwd is the trainer's folder, load_model(ckpt, "0") (the device string the model
     server passes when it holds a GPU), predict(model, [image]) timed cold and warm;
     export(ckpt, out, "onnx", imgsz, device="0") timed, then onnxruntime loads the file and runs
     it once on zeros.
  7. Summary table, failures, JSON to --out (and the trainers' full logs beside it); exit 0 only
     when everything passed. --budget-s (default 420) bounds the whole run: a trainer still
     running then is killed and the rest reported as not run.

images/s, from the trainer's dry-run event lines (timestamps taken here as each line arrives):
  steady   epochs 2..E: (E - 1) x training images / (last - first `validation_complete`)
           (training + validation per epoch, the first epoch's warm-up left out; E >= 2)
  epoch 1  training images / (first `validation_complete` - `model_initialized`) when E = 1

One GPU here means "all GPUs" = 1: the multi-GPU path (Ultralytics DDP over several GPUs, timm's
NCCL ranks) cannot be shown on such a machine, and two NCCL ranks cannot share one GPU.

polars: Ultralytics 8.4 imports it when it saves a checkpoint (trainer.read_results_csv); its
runtime wheel is 54 MB, too big to carry to the device machine with the rest. Where the
trainer's interpreter cannot import polars, a stand-in (read_csv(...).to_dict(), all that path
uses) is put first on the Ultralytics trainer's PYTHONPATH, and the summary says so.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
TRAINERS = REPO / "trainers"
BUCKET = "vtp-gpu-check"
KEY = "testing"  # moto takes any keys

# the contract's offline environment (DESIGN §9), what the runner gives every trainer: sdk.contract
# is the standard library only, so it imports where the platform (Ray) is not installed
sys.path.insert(0, str(TRAINERS))
from sdk.contract import OFFLINE_ENV  # noqa: E402

POLARS_SHIM = '''"""A stand-in for polars (bench/gpu_direct.py): only what Ultralytics' checkpoint save uses."""
import csv
import io


class DataFrame:
    def __init__(self, data):
        self._data = data

    def to_dict(self, as_series=True):
        return {k: list(v) for k, v in self._data.items()}


def _value(text):
    text = text.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_csv(source, infer_schema_length=None, **_):
    if isinstance(source, (bytes, bytearray)):
        text = bytes(source).decode()
    else:
        with open(source) as f:
            text = f.read()
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    if not rows:
        return DataFrame({})
    head = [h.strip() for h in rows[0]]
    return DataFrame({h: [_value(r[i]) for r in rows[1:] if i < len(r)] for i, h in enumerate(head)})
'''


def _load_by_path(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


# ---------------------------------------------------------------- S3 (moto) and data
class MotoS3:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)

    def start(self) -> str:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per S3 request
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.client().create_bucket(Bucket=BUCKET)
        return self.endpoint

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=KEY, aws_secret_access_key=KEY,
                            region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))

    def stop(self) -> None:
        self.server.stop()


def make_datasets(tmp: Path, a: argparse.Namespace) -> dict[str, dict[str, Any]]:
    synthetic = _load_by_path("vtp_synthetic", REPO / "ray_app" / "datasets" / "synthetic.py")
    det = synthetic.make_detection(tmp / "det", n_images=a.images, size=a.det_size, seed=1, val_fraction=0.2)
    cls = synthetic.make_classification(tmp / "cls", n_images=a.images, size=a.cls_size, seed=2, val_fraction=0.2,
                                        classes=("circle", "square", "triangle"))
    out = {}
    for key, root in (("ultralytics", det), ("timm", cls)):
        images = json.loads((root / "annotations.json").read_text())["images"]
        train = sum(1 for i in images if i.get("split", "train") == "train")
        out[key] = {"root": root, "zip": synthetic.zip_dataset(root), "train_images": train,
                    "val_images": len(images) - train, "image": sorted((root / "images").glob("*.png"))[-1]}
        print(f"   {key}: {len(images)} images ({train} train / {len(images) - train} val) at "
              f"{a.det_size if key == 'ultralytics' else a.cls_size}px, {out[key]['zip'].stat().st_size} bytes zipped")
    return out


def upload(s3: MotoS3, data: dict[str, dict[str, Any]]) -> None:
    from sdk.contract import dataset_uri

    client = s3.client()
    for key, d in data.items():
        d["dataset_id"] = f"gpu-check-{key}"
        # ray_app/storage/s3.py upload_dataset: a zip goes to datasets/{id}.zip
        client.upload_file(str(d["zip"]), BUCKET, f"datasets/{d['dataset_id']}.zip",
                           ExtraArgs={"ContentType": "application/zip"})
        d["dataset_uri"] = dataset_uri(BUCKET, d["dataset_id"])
        print(f"   {d['dataset_uri']}.zip")


# ---------------------------------------------------------------- the trainers
def contract_env(framework: str, d: dict[str, Any], a: argparse.Namespace, s3: MotoS3, tmp: Path,
                 job_id: str) -> dict[str, str]:
    """contract_env.build() for one attempt of one job, without the callback URL and token."""
    if framework == "ultralytics":
        task, model, epochs, batch, imgsz, lr = "object_detection", "yolo11n", a.epochs, a.yolo_batch, a.yolo_imgsz, 0.01
        config: dict[str, Any] = {"seed": 0, "plots": False, "amp": True}
        advanced: dict[str, Any] = {}
    else:
        task, model, epochs, batch, imgsz, lr = "image_classification", a.timm_model, a.epochs, a.timm_batch, a.cls_size, 0.01
        config, advanced = {}, {"seed": 0, "amp": True, "scale": [0.6, 1.0]}
    config = {**config, "epochs": epochs, "batch": batch, "imgsz": imgsz, "learning_rate": lr,
              "advanced_config": advanced}
    work = tmp / "work" / f"job-{job_id}" / "attempt-1"
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **OFFLINE_ENV,
        "JOB_ID": job_id, "TRACE_ID": f"trace-{job_id}", "PROJECT_ID": "default", "ATTEMPT": "1",
        "FRAMEWORK": framework, "TASK_TYPE": task, "MODEL_NAME": model, "DATASET_ID": d["dataset_id"],
        "DATASET_S3_URI": d["dataset_uri"], "EPOCHS": str(epochs), "BATCH_SIZE": str(batch),
        "LEARNING_RATE": str(lr), "IMAGE_SIZE": str(imgsz), "IMGSZ": str(imgsz), "CONFIG": json.dumps(config),
        "NUM_CPUS": str(a.num_cpus), "STORAGE_TYPE": "minio", "STORAGE_BUCKET": BUCKET,
        "EXTERNAL_BUCKET_DATASETS": BUCKET, "INTERNAL_BUCKET_CHECKPOINTS": BUCKET,
        "WORK_DIR": str(work), "TMP_DIR": str(work / "tmp"), "DATASET_CACHE_DIR": str(tmp / "cache" / "datasets"),
        "DEVICE": a.device, "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0",
    }
    for name in ("S3_ENDPOINT", "MINIO_ENDPOINT", "R2_ENDPOINT", "EXTERNAL_STORAGE_ENDPOINT", "INTERNAL_STORAGE_ENDPOINT"):
        env[name] = s3.endpoint
    for ak, sk in (("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"), ("R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY"),
                   ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
                   ("EXTERNAL_STORAGE_ACCESS_KEY", "EXTERNAL_STORAGE_SECRET_KEY"),
                   ("INTERNAL_STORAGE_ACCESS_KEY", "INTERNAL_STORAGE_SECRET_KEY")):
        env[ak], env[sk] = KEY, KEY
    return env


def child_env(extra: dict[str, str], shim: Path | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("BACKEND_BASE_URL", "CALLBACK_URL", "CALLBACK_TOKEN", "MLFLOW_TRACKING_URI")}
    paths = [str(shim)] if shim else []
    paths += [str(TRAINERS), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return {**base, **extra, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


def python_for(framework: str, a: argparse.Namespace) -> str:
    return getattr(a, f"python_{framework}") or a.python or sys.executable


def polars_shim(py: str, tmp: Path, env: dict[str, str]) -> Path | None:
    """A folder holding the polars stand-in when `py` cannot import polars, else None."""
    forced = os.environ.get("VTP_GPU_DIRECT_POLARS_STANDIN") == "1"  # to test the stand-in where polars exists
    ok = subprocess.run([py, "-c", "import polars"], env=env, capture_output=True, timeout=120).returncode == 0
    if ok and not forced:
        return None
    folder = tmp / "polars-shim"
    (folder / "polars").mkdir(parents=True, exist_ok=True)
    (folder / "polars" / "__init__.py").write_text(POLARS_SHIM)
    return folder


EVENT = re.compile(r"\bevent ([a-z_]+)\b")


def run_trainer(chk: Any, sampler: Any, rec: dict[str, Any], d: dict[str, Any], a: argparse.Namespace,
                s3: MotoS3, tmp: Path, logs_dir: Path | None) -> dict[str, Any]:
    from gpu_check import device_evidence, gpu_stats

    fw = rec["framework"]
    job_id = f"direct-{fw}"
    rec["job_id"] = job_id
    py = python_for(fw, a)
    env = child_env(contract_env(fw, d, a, s3, tmp, job_id))
    shim = None
    if fw == "ultralytics":
        shim = polars_shim(py, tmp, env)
        if shim:
            why = ("VTP_GPU_DIRECT_POLARS_STANDIN=1" if os.environ.get("VTP_GPU_DIRECT_POLARS_STANDIN") == "1"
                   else "polars is not importable by the trainer's interpreter")
            chk.warn(f"ultralytics: {why}: the polars stand-in (bench/gpu_direct.py POLARS_SHIM, read_csv().to_dict() "
                     "for the checkpoint's train_results) used")
            env = child_env(contract_env(fw, d, a, s3, tmp, job_id), shim)
        rec["polars_standin"] = bool(shim)
    rec["python"] = py
    cwd = TRAINERS / fw
    print(f"   {py} train.py (cwd {cwd}); DEVICE={env['DEVICE']} EPOCHS={env['EPOCHS']} BATCH_SIZE={env['BATCH_SIZE']} "
          f"IMAGE_SIZE={env['IMAGE_SIZE']} MODEL_NAME={env['MODEL_NAME']} CONFIG={env['CONFIG']}", flush=True)
    lines: list[tuple[float, str]] = []
    log_file = open(logs_dir / f"train-{fw}.log", "w") if logs_dir else None
    started = time.time()
    proc = subprocess.Popen([py, "train.py"], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1, start_new_session=True)
    killed = [False]

    def guard() -> None:  # the budget: kill the trainer's process group when it is spent
        while proc.poll() is None:
            if chk.remaining() <= 0:
                killed[0] = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return
            time.sleep(0.5)

    threading.Thread(target=guard, daemon=True).start()
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            now = time.time()
            for line in raw.replace("\r", "\n").splitlines():
                if not line.strip():
                    continue
                lines.append((now, line))
                if log_file:
                    log_file.write(f"{now - started:8.2f} {line}\n")
                low = line.lower()
                if (EVENT.search(line) or "error" in low or "warning" in low or "traceback" in low
                        or (" epochs" in line and " on " in line) or "ultralytics" in low or "amp" in low):
                    print(f"     {now - started:6.1f}s | {line[:240]}", flush=True)
        rc = proc.wait()
    finally:
        if log_file:
            log_file.close()
    ended = time.time()
    rec.update(exit_code=rc, wall_s=round(ended - started, 1))
    if killed[0]:
        rec["state"] = "killed: budget spent"
        raise RuntimeError(f"{fw}: killed after {ended - started:.0f}s, the budget was spent")
    rec["state"] = "exit 0" if rc == 0 else f"exit {rc}"
    events = [(t, m.group(1)) for t, ln in lines if (m := EVENT.search(ln))]
    rec["events"] = sorted({e for _, e in events})
    if rc != 0:
        print("\n".join("     | " + ln for _, ln in lines[-40:]))
        raise RuntimeError(f"{fw} train.py exited {rc}: {' / '.join(ln for _, ln in lines[-3:])[:600]}")
    # device and AMP, from the trainers' own line
    ev = device_evidence(fw, [], [ln for _, ln in lines])
    rec["device"] = ev
    device = str(ev.get("device") or "")
    cuda = a.device != "cpu"
    if cuda and "cuda" not in device.lower():
        chk.fail(f"{fw}: the trainer did not report a CUDA device (device={ev.get('device')!r}); lines: {ev['lines'][:2]}")
    if not cuda and "cuda" in device.lower():
        chk.fail(f"{fw}: trained on {device} in a CPU run")
    if cuda and ev.get("amp") is not True:
        chk.fail(f"{fw}: AMP not reported on (amp={ev.get('amp')!r}); lines: {ev['lines'][:2]}")
    # images/s
    init = next((t for t, e in events if e == "model_initialized"), None)
    vals = [t for t, e in events if e == "validation_complete"]
    n = d["train_images"]
    if len(vals) >= 2 and vals[-1] > vals[0]:
        rec["images_per_s"] = round((len(vals) - 1) * n / (vals[-1] - vals[0]), 1)
        rec["images_per_s_method"] = (f"steady: epochs 2..{len(vals)}, {len(vals) - 1} x {n} training images / time "
                                      "between the first and last validation_complete line (train + val per epoch)")
    elif len(vals) == 1 and init is not None and vals[0] > init:
        rec["images_per_s"] = round(n / (vals[0] - init), 1)
        rec["images_per_s_method"] = f"epoch 1: {n} images / (validation_complete - model_initialized), setup included"
    else:
        rec["images_per_s"] = None
        chk.fail(f"{fw}: no images/s (events seen: {rec['events']})")
    rec["train_images"] = n
    if init is not None and vals:
        rec["train_window_s"] = round(vals[-1] - init, 1)
    # the checkpoint, where the platform finds it
    client = s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=f"checkpoints/job-{job_id}/").get("Contents", [])]
    rec["checkpoints"] = keys
    best = next((k for k in keys if k.endswith("/best.pt")), None) or next((k for k in keys if k.endswith(".pt")), None)
    if best is None:
        raise RuntimeError(f"{fw}: no checkpoint under s3://{BUCKET}/checkpoints/job-{job_id}/ ({keys})")
    rec["checkpoint"] = f"s3://{BUCKET}/{best}"
    # the GPU while it trained
    if sampler is not None:
        stats = gpu_stats(sampler.window(init or started, ended) or sampler.window(started, ended),
                          sampler.level_before(started))
        rec["gpu"] = {str(k): v for k, v in stats.items()}
        rec["gpus_used"] = sorted(k for k, v in stats.items() if v["used"])
        for k, v in stats.items():
            print(f"     GPU {k}: util mean {v['util_mean']:.0f}% max {v['util_max']:.0f}%, memory max "
                  f"{v['mem_max_mib']:.0f} MiB (+{v['mem_rise_mib']:.0f}), {v['samples']} samples")
        if not stats:
            chk.fail(f"{fw}: nvidia-smi gave no samples while it trained")
        elif not rec["gpus_used"]:
            chk.fail(f"{fw}: nvidia-smi saw no GPU busy while it trained")
    print(f"   {fw}: exit 0 in {rec['wall_s']}s; {rec['images_per_s']} images/s; device {ev.get('device')}, "
          f"AMP {ev.get('amp')}; checkpoint {rec['checkpoint']}", flush=True)
    return rec


def predict_export(chk: Any, fw: str, run: dict[str, Any], d: dict[str, Any], a: argparse.Namespace, s3: MotoS3,
                   tmp: Path, logs_dir: Path | None) -> dict[str, Any]:
    """The trainer's predict.py and export.py in a child (cwd = its folder), as the model server and
    the export task call them."""
    folder = tmp / f"serve-{fw}"
    folder.mkdir(parents=True, exist_ok=True)
    key = run["checkpoint"].split(f"s3://{BUCKET}/", 1)[1]
    local = folder / Path(key).name
    s3.client().download_file(BUCKET, key, str(local))  # ray_app/serving/trainer_files.fetch_checkpoint
    imgsz = a.yolo_imgsz if fw == "ultralytics" else a.cls_size
    env = {**OFFLINE_ENV, "STORAGE_TYPE": "minio", "STORAGE_BUCKET": BUCKET, "NUM_CPUS": str(a.num_cpus),
           "WORK_DIR": str(tmp / "work" / "exports"), "MINIO_ENDPOINT": s3.endpoint, "S3_ENDPOINT": s3.endpoint}
    shim = polars_shim(python_for(fw, a), tmp, child_env(env)) if fw == "ultralytics" else None
    cmd = [python_for(fw, a), str(Path(__file__).resolve()), "--child-serve", fw, str(local), str(d["image"]),
           str(folder / "out"), str(imgsz), a.serve_device]
    t0 = time.monotonic()
    out = subprocess.run(cmd, cwd=TRAINERS / fw, env=child_env(env, shim), capture_output=True, text=True,
                         errors="replace", timeout=max(10.0, chk.left(f"predict/export {fw}")))
    text = out.stdout + out.stderr
    if logs_dir:
        (logs_dir / f"serve-{fw}.log").write_text(text)
    result = next((json.loads(ln[7:]) for ln in reversed(out.stdout.splitlines()) if ln.startswith("RESULT ")), None)
    if out.returncode != 0 or result is None:
        print("\n".join("     | " + ln for ln in text.splitlines()[-30:]))
        raise RuntimeError(f"predict/export {fw}: exit {out.returncode}: {text.strip().splitlines()[-1:] or ''}")
    result["wall_s"] = round(time.monotonic() - t0, 1)
    for step in ("predict", "export", "onnxruntime"):
        if (result.get(step) or {}).get("error"):
            chk.fail(f"{step} {fw}: {result[step]['error'][:600]}")
    if a.serve_device != "cpu" and "cuda" not in str((result.get("predict") or {}).get("param_device")):
        chk.fail(f"predict {fw}: the loaded model's weights are on {result.get('predict', {}).get('param_device')!r}, not CUDA")
    print(f"   {fw}: {json.dumps(result)[:1500]}", flush=True)
    return result


def _param_device(model: Any) -> str | None:
    """Where the loaded model's weights are (after a predict: Ultralytics moves them then)."""
    import torch

    predictor = getattr(getattr(model, "yolo", None), "predictor", None)
    if predictor is not None:  # Ultralytics: AutoBackend holds the weights in a backend object, not a submodule
        inner = getattr(getattr(getattr(predictor, "model", None), "backend", None), "model", None)
        if isinstance(inner, torch.nn.Module) and (param := next(inner.parameters(), None)) is not None:
            return str(param.device)
        if getattr(predictor, "device", None) is not None:
            return str(predictor.device)
    candidates = [model, getattr(model, "model", None), getattr(model, "net", None)]
    for obj in candidates:
        if isinstance(obj, torch.nn.Module):
            param = next(obj.parameters(), None)
            if param is not None:
                return str(param.device)
    return None


def child_serve(fw: str, checkpoint: str, image: str, out_dir: str, imgsz: int, device: str) -> int:
    """In the trainer's folder: load_model + predict, export to ONNX, onnxruntime; one RESULT line."""
    sys.path.insert(0, os.getcwd())
    res: dict[str, Any] = {"predict": {}, "export": {}, "onnxruntime": {}}
    try:
        import torch

        module = _load_by_path("trainer_predict", Path.cwd() / "predict.py")
        t = time.perf_counter()
        model = module.load_model(checkpoint, device)
        res["predict"]["load_s"] = round(time.perf_counter() - t, 3)
        times, first = [], None
        for i in range(6):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t = time.perf_counter()
            pred = module.predict(model, [image])
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            (times.append if i else (lambda x: None))(time.perf_counter() - t)
            first = first if i else time.perf_counter() - t
        res["predict"]["param_device"] = _param_device(model)
        p0 = pred[0]
        res["predict"].update(first_s=round(first or 0, 4), warm_median_s=round(sorted(times)[len(times) // 2], 4),
                              result_keys=sorted(p0))
        if "boxes" in p0:
            res["predict"]["boxes"] = len(p0["boxes"])
        if p0.get("top_k"):
            res["predict"]["top1"] = p0["top_k"][0].get("class_name")
        if torch.cuda.is_available():
            res["predict"]["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except Exception as exc:
        res["predict"]["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    files: list[str] = []
    try:
        module = _load_by_path("trainer_export", Path.cwd() / "export.py")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        files = [str(p) for p in module.export(checkpoint, out_dir, "onnx", int(imgsz), half=False, dynamic=False,
                                               device=device) or []]
        res["export"].update(seconds=round(time.perf_counter() - t, 2),
                             files=[(Path(f).name, Path(f).stat().st_size) for f in files])
        if not files:
            res["export"]["error"] = "export() wrote no file"
    except Exception as exc:
        res["export"]["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    onnx_files = [f for f in files if f.endswith(".onnx")]
    if onnx_files:
        try:
            import numpy as np
            import onnxruntime as ort

            t = time.perf_counter()
            sess = ort.InferenceSession(onnx_files[0], providers=["CPUExecutionProvider"])
            inp = sess.get_inputs()[0]
            shape = [s if isinstance(s, int) else (1 if i == 0 else int(imgsz)) for i, s in enumerate(inp.shape)]
            outs = sess.run(None, {inp.name: np.zeros(shape, dtype=np.float32)})
            res["onnxruntime"] = {"seconds": round(time.perf_counter() - t, 3), "input": [inp.name, shape],
                                  "outputs": [list(o.shape) for o in outs], "version": ort.__version__,
                                  "providers_available": ort.get_available_providers()}
        except Exception as exc:
            res["onnxruntime"]["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
    elif not res["export"].get("error"):
        res["onnxruntime"]["error"] = f"no .onnx file among {files}"
    print("RESULT " + json.dumps(res, default=str), flush=True)
    return 0


# ---------------------------------------------------------------- main
def main(argv: list[str]) -> int:
    import gpu_check as gc

    ap = argparse.ArgumentParser(prog="gpu_check.py --direct", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--direct", action="store_true")
    ap.add_argument("--out", help="also write the summary as JSON here (the trainers' logs go beside it)")
    ap.add_argument("--budget-s", type=float, default=420.0)
    ap.add_argument("--cpu-smoke", action="store_true", help="no GPU: the same flow on the CPU, tiny")
    ap.add_argument("--epochs", type=int, help="default 3 on a GPU, 2 with --cpu-smoke")
    ap.add_argument("--images", type=int, help="images per dataset (default 1024 on a GPU, 20 with --cpu-smoke)")
    ap.add_argument("--timm-model", help="default resnet18 on a GPU, test_resnet with --cpu-smoke")
    ap.add_argument("--python", help="the trainers' interpreter (default: this one)")
    ap.add_argument("--python-timm", help="the timm trainer's interpreter (default --python)")
    ap.add_argument("--python-ultralytics", help="the Ultralytics trainer's interpreter (default --python)")
    a = ap.parse_args(argv)

    res: dict[str, Any] = {"mode": "direct", "runs": []}
    chk = gc.Check(a.budget_s)
    info = chk.step("detect GPUs", gc.detect_gpus) or {}
    res.update(info)
    n_gpus = int(info.get("torch_cuda_devices") or 0)
    print(f"   nvidia-smi: {info.get('nvidia_smi')!r}; torch {info.get('torch')} (CUDA {info.get('torch_cuda')}) sees "
          f"{n_gpus} CUDA device(s){'; ' + info['torch_error'] if info.get('torch_error') else ''}", flush=True)
    if not n_gpus and not a.cpu_smoke:
        print("\nno CUDA device: nothing to check on a GPU (`--direct --cpu-smoke` runs the flow on the CPU)")
        res["mode"] = "direct-no-gpu"
        return gc.summary(chk, res, a.out)
    cpu = n_gpus == 0
    res["mode"] = "direct-cpu-smoke" if cpu else "direct-gpu"
    res["n_gpus"] = n_gpus
    a.device = a.serve_device = "cpu" if cpu else "0"
    a.epochs = a.epochs or (2 if cpu else 3)
    a.images = a.images or (20 if cpu else 1024)
    a.timm_model = a.timm_model or ("test_resnet" if cpu else "resnet18")
    a.det_size, a.yolo_imgsz, a.yolo_batch = (64, 64, 8) if cpu else (160, 160, 32)
    a.cls_size, a.timm_batch = (48, 8) if cpu else (64, 64)
    a.num_cpus = 2 if cpu else max(2, min(8, (os.cpu_count() or 4) // 2))
    res["args"] = {k: v for k, v in vars(a).items()}
    if n_gpus == 1:
        res["multi_gpu"] = ("not shown: this machine has one GPU, so 'all GPUs' = 1; Ultralytics DDP over several "
                            "GPUs and timm's NCCL ranks need more than one (two NCCL ranks cannot share one GPU)")
    logs_dir = Path(a.out).resolve().parent if a.out else None

    # the watchdog: 20 s past the budget the process ends, the summary printed first
    done = threading.Event()

    def watchdog() -> None:
        if done.wait(max(0.0, chk.remaining() + 20)):
            return
        if not chk.reported:
            chk.fail(f"still running 20 s after --budget-s {a.budget_s:g}: stopped")
            gc.summary(chk, res, a.out)
        os._exit(1)

    threading.Thread(target=watchdog, daemon=True, name="watchdog").start()
    tmp = Path(tempfile.mkdtemp(prefix="vtp-gpu-direct-"))
    sampler = gc.GpuSampler().start() if not cpu else None
    s3: MotoS3 | None = None
    try:
        data = chk.step("generate datasets (ray_app/datasets/synthetic.py)", make_datasets, tmp, a)

        def s3_up() -> MotoS3:
            server = MotoS3()
            print(f"   moto S3 at {server.start()}, bucket {BUCKET}")
            if data:
                upload(server, data)
            return server

        s3 = chk.step("S3 (moto server on loopback) up, datasets uploaded", s3_up)
        runs: dict[str, dict[str, Any]] = {}
        if s3 is None or data is None:
            chk.fail("no S3 or no datasets: nothing was trained")
        else:
            for fw in ("ultralytics", "timm"):
                rec: dict[str, Any] = {"run": f"{fw} {'cpu' if cpu else '1 GPU'}", "framework": fw,
                                       "num_gpus": 0 if cpu else 1, "state": "not started"}
                res["runs"].append(rec)
                if chk.step(f"train {fw} (train.py as the runner starts it)", run_trainer, chk, sampler, rec, data[fw],
                            a, s3, tmp, logs_dir) is not None:
                    runs[fw] = rec
            res["predict_export"] = {}
            for fw in ("ultralytics", "timm"):
                if fw not in runs:
                    chk.fail(f"predict/export {fw}: not run, its training failed")
                    continue
                r = chk.step(f"predict + ONNX export {fw} (predict.py, export.py; device {a.serve_device!r})",
                             predict_export, chk, fw, runs[fw], data[fw], a, s3, tmp, logs_dir)
                if r is not None:
                    res["predict_export"][fw] = r
                    res.setdefault("predict", {})[fw] = r.get("predict")
                    res.setdefault("export", {})[fw] = {**(r.get("export") or {}), "onnxruntime": r.get("onnxruntime")}
        if n_gpus == 1:
            print(f"\n   multi-GPU: {res['multi_gpu']}")
        return gc.summary(chk, res, a.out, sampler)
    finally:
        done.set()
        if sampler is not None:
            sampler.stop()
        if s3 is not None:
            try:
                s3.stop()
            except Exception as exc:
                print(f"   S3 stop: {exc}")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "--child-serve":
        sys.exit(child_serve(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), sys.argv[7]))
    sys.path.insert(0, str(BENCH))
    sys.exit(main(sys.argv[1:]))
