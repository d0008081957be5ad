"""Benchmark: the timm trainer's training images/s at 1 and 2 ranks on the CPU (Gloo), one run.

Issue 27's scaling figure on a machine without GPUs: `trainers/timm/train.py` started as the
platform starts each rank (the contract's environment, torchrun's rendezvous variables on
loopback, callbacks off: a dry run), on a generated classification set in a SeaweedFS on loopback,
no Ray. Per repetition, interleaved:

  1 rank x 1 CPU     NUM_CPUS=1 (one torch thread): the unit a rank brings
  2 ranks x 1 CPU    two processes, NUM_CPUS=1 each, DistributedDataParallel over Gloo
  1 rank x 2 CPUs    NUM_CPUS=2 (two torch threads): the same machine used by one process

Throughput: the bench stamps each line of the trainers' output as it arrives; an epoch's training
time is from rank 0's line ending the previous epoch's validation (`epoch E-1/N train_loss=...`)
to its `rank 0/W epoch E: trained on N samples` (the training loop alone: no validation; the
previous epoch's checkpoint is written in the window but uploaded in the background). Images/s =
the samples all ranks trained on in the epoch / that time; epoch 1 (warm-up) is left out; medians
over the epochs, then over the repetitions. Scaling efficiency = images/s at 2 ranks / (2 x
images/s at 1 rank x 1 CPU): 1.0 is perfect data parallelism. BATCH_SIZE is the job's, split over
the ranks (the trainer's rule), so both take the same optimizer steps.

    flock /tmp/vtp-suite.lock .venv/bin/python bench/distributed_scaling.py [--reps 3] [--model resnet18]

Run it alone (nothing else on the CPUs): a 2-core machine is what it divides.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TRAIN = REPO / "trainers" / "timm" / "train.py"
EPOCH_LINE = re.compile(r"\] rank (\d+)/(\d+) epoch (\d+): trained on (\d+) samples$")  # train.py's
VALIDATED = re.compile(r"\] epoch (\d+)/\d+ train_loss=")
CONFIGS = {"1 rank x 1 CPU": (1, 1), "2 ranks x 1 CPU": (2, 1), "1 rank x 2 CPUs": (1, 2)}  # (ranks, cpus)


def timm_python(given: str | None) -> Path:
    """The timm trainer's venv: --python, else one already built (the platform's or the tests'),
    else built where the tests build it."""
    if given:
        return Path(given)
    from ray_app.runtime import venvs
    from ray_app.runtime.registry import TrainerRegistry

    manifest = TrainerRegistry([REPO / "trainers"]).get("timm")
    for root in (Path.home() / ".vtp" / "venvs", Path.home() / ".cache" / "vtp-test-venvs"):
        built = venvs.find_built(root, manifest)
        if built is not None:
            return venvs.python_of(built)
    return venvs.python_of(venvs.build(Path.home() / ".cache" / "vtp-test-venvs", manifest))


def read_lines(proc: subprocess.Popen, sink: list[tuple[float, str]]) -> None:
    for line in proc.stdout:  # type: ignore[union-attr]
        sink.append((time.monotonic(), line.rstrip("\n")))


def run(python: Path, env: dict[str, str], ranks: int, cpus: int, work: Path, timeout: float) -> dict[str, Any]:
    """One job of ``ranks`` processes with ``cpus`` CPUs each; its epochs' training times."""
    from ray_app.ports import free_port

    port = free_port()
    job = f"bench{uuid.uuid4().hex[:8]}"
    procs, outputs, readers = [], [], []
    t0 = time.monotonic()
    for rank in range(ranks):
        rank_env = {**env, "JOB_ID": job, "TRACE_ID": job, "WORK_DIR": str(work / job), "NUM_CPUS": str(cpus),
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(ranks),
                    "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(ranks), "NODE_RANK": "0"}
        proc = subprocess.Popen([str(python), "-u", str(TRAIN)], env=rank_env, cwd=work, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines: list[tuple[float, str]] = []
        reader = threading.Thread(target=read_lines, args=(proc, lines), daemon=True)
        reader.start()
        procs.append(proc)
        outputs.append(lines)
        readers.append(reader)
    try:
        codes = [proc.wait(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for reader in readers:
        reader.join(10)
    wall = time.monotonic() - t0
    if any(codes):
        tail = "\n".join(line for _, line in outputs[codes.index(next(c for c in codes if c))][-40:])
        raise RuntimeError(f"{ranks} rank(s): exit codes {codes}\n{tail}")
    validated: dict[int, float] = {}
    epochs: list[dict[str, Any]] = []
    samples = {}
    for lines in outputs:  # every rank's count of the epoch, from its own line
        for _, line in lines:
            if m := EPOCH_LINE.search(line):
                samples[(int(m.group(1)), int(m.group(3)))] = int(m.group(4))
    for stamp, line in outputs[0]:
        if m := VALIDATED.search(line):
            validated[int(m.group(1))] = stamp
        elif (m := EPOCH_LINE.search(line)) and int(m.group(3)) - 1 in validated:
            epoch = int(m.group(3))
            seconds = stamp - validated[epoch - 1]
            trained = sum(n for (_, e), n in samples.items() if e == epoch)
            epochs.append({"epoch": epoch, "seconds": seconds, "samples": trained, "images_per_s": trained / seconds})
    if not epochs:
        raise RuntimeError(f"no timed epoch in the output of {ranks} rank(s)")
    return {"ranks": ranks, "cpus_per_rank": cpus, "wall_s": wall, "epochs": epochs,
            "images_per_s": statistics.median(e["images_per_s"] for e in epochs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4, help="per run; the first is the warm-up, not timed")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--images", type=int, default=240, help="generated images (10 %% held out for validation)")
    ap.add_argument("--imgsz", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32, help="the job's BATCH_SIZE (split over the ranks)")
    ap.add_argument("--python", help="the timm trainer's venv python (default: found or built)")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()

    from ray_app.datasets import make_classification
    from ray_app.storage import SeaweedS3Server
    from ray_app.storage.s3 import upload_dataset

    python = timm_python(args.python)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="vtp-bench-ddp-") as tmp:
        root = Path(tmp)
        server = SeaweedS3Server(root / "s3", buckets=["bench"])
        server.start(timeout=60)
        try:
            dataset = f"ddp-bench-{uuid.uuid4().hex[:6]}"
            folder = make_classification(root / "ds", n_images=args.images, size=args.imgsz,
                                         classes=("circle", "square", "triangle"), seed=3)
            upload_dataset(server.client(), "bench", dataset, folder)
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BACKEND_BASE_URL", "CALLBACK_URL",
                                                                    "CALLBACK_TOKEN", "MLFLOW_TRACKING_URI")}
            env.update(server.env("bench"))
            env.update(PYTHONPATH=str(REPO / "trainers"), HF_HUB_OFFLINE="1", MLFLOW_DISABLE_TELEMETRY="true",
                       TMP_DIR=str(root / "tmp"), DATASET_CACHE_DIR=str(root / "cache"), FRAMEWORK="timm",
                       TASK_TYPE="image_classification", MODEL_NAME=args.model, DATASET_ID=dataset,
                       EPOCHS=str(args.epochs), BATCH_SIZE=str(args.batch), LEARNING_RATE="0.01",
                       IMAGE_SIZE=str(args.imgsz), DEVICE="cpu", VTP_DIST_TIMEOUT_S="300",
                       VTP_CHECKPOINT_MIN_INTERVAL_S="3600",  # one upload a name while timing: not the subject
                       CONFIG=json.dumps({"advanced_config": {"seed": 0, "val_fraction": 0.1, "amp": False}}))
            for rep in range(args.reps):
                for name, (ranks, cpus) in CONFIGS.items():
                    r = run(python, env, ranks, cpus, root, args.timeout)
                    results[name].append(r)
                    print(f"rep {rep} {name}: {r['images_per_s']:.1f} images/s (epochs "
                          + ", ".join(f"{e['epoch']}: {e['seconds']:.2f} s" for e in r["epochs"])
                          + f"; wall {r['wall_s']:.1f} s)", flush=True)
        finally:
            server.stop()

    median = {name: statistics.median(r["images_per_s"] for r in runs) for name, runs in results.items()}
    one, two, whole = median["1 rank x 1 CPU"], median["2 ranks x 1 CPU"], median["1 rank x 2 CPUs"]
    per_rep_eff = [b["images_per_s"] / (2 * a["images_per_s"])
                   for a, b in zip(results["1 rank x 1 CPU"], results["2 ranks x 1 CPU"])]
    efficiency = two / (2 * one)
    print(f"\ntimm {args.model}, {args.imgsz} px, BATCH_SIZE {args.batch} (the job's), "
          f"{args.images} images (train {results['1 rank x 1 CPU'][0]['epochs'][0]['samples']} an epoch), "
          f"{os.cpu_count()} CPUs, Gloo; medians of {args.reps} repetitions")
    print("| configuration | images/s | per repetition |\n| --- | --- | --- |")
    for name in CONFIGS:
        print(f"| {name} | {median[name]:.1f} | " + ", ".join(f"{r['images_per_s']:.1f}" for r in results[name]) + " |")
    print(f"\nscaling efficiency (2 ranks / (2 x 1 rank x 1 CPU)): {efficiency:.2f} "
          f"(per repetition {', '.join(f'{e:.2f}' for e in per_rep_eff)}); "
          f"2 ranks / 1 rank x 2 CPUs: {two / whole:.2f}")
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    doc = {"args": vars(args), "cpus": os.cpu_count(), "median_images_per_s": median,
           "scaling_efficiency": efficiency, "scaling_efficiency_per_rep": per_rep_eff,
           "two_ranks_over_one_rank_two_cpus": two / whole, "runs": results}
    for name in (f"distributed_scaling-{stamp}.json", "distributed_scaling-latest.json"):
        (out / name).write_text(json.dumps(doc, indent=1))
    print(f"wrote bench/results/distributed_scaling-{stamp}.json")


if __name__ == "__main__":
    main()
