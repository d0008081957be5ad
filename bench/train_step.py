"""Benchmark: one training step on the CPU, in the framework's layout and in the platform's.

What the trainers' CPU defaults change (issue 18), without the dataset, validation or the
platform around them: a model (yolo11n built from its YAML, or a timm model with --model),
forward + loss + backward + SGD step on a random batch, in four configurations, interleaved per
repetition:

  contiguous        the framework's own (NCHW weights, float32)
  channels_last     the platform's memory format on a CPU (ul_runtime.channels_last_models; the
                    timm trainer also makes its batches channels-last)
  bf16              float32 weights under CPU autocast (bfloat16), AMP as the platform turns it on
                    where the CPU has native bfloat16 (sdk.amp.native_cpu_bf16)
  channels_last+bf16

Medians of the steps after the warm-up ones, ratios against `contiguous` of the same repetition.
Run with the trainer's venv python (torch and the framework are there), nothing else running
(1 torch thread by default, as the trainer uses on a 2-CPU job):

    <ultralytics venv>/bin/python bench/train_step.py [--reps 3] [--steps 12] [--threads 1]
    <timm venv>/bin/python bench/train_step.py --model resnet18 [--imgsz 128]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")
CONFIGS = {"contiguous": (False, False), "channels_last": (True, False), "bf16": (False, True),
           "channels_last+bf16": (True, True)}


def build(model_name: str) -> tuple[Any, Any]:
    """(model in training mode, loss of its output): yolo11n from its YAML (a loss-like reduction
    of the head's outputs), or a timm model by name (cross-entropy on 4 classes, as the timm trainer)."""
    import torch

    torch.manual_seed(0)
    if model_name == "yolo11n":
        from ultralytics.nn.tasks import DetectionModel

        def yolo_loss(out: Any, _: Any) -> Any:
            leaves = out if isinstance(out, (list, tuple)) else list(out.values())
            return sum(t.float().mean() for t in leaves if torch.is_tensor(t))

        return DetectionModel("yolo11n.yaml", nc=3, verbose=False).train(), yolo_loss
    import timm

    return timm.create_model(model_name, num_classes=4, pretrained=False).train(), torch.nn.functional.cross_entropy


def step_times(model_name: str, channels_last: bool, bf16: bool, steps: int, warmup: int, batch: int,
               imgsz: int) -> list[float]:
    import torch

    model, loss_of = build(model_name)
    images, labels = torch.rand(batch, 3, imgsz, imgsz), torch.randint(0, 4, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        if model_name != "yolo11n":  # the timm trainer's batches are channels-last too; Ultralytics' stay NCHW
            images = images.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_of(model(images), labels)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default="yolo11n", help="yolo11n (Ultralytics' venv) or a timm model name "
                    "such as resnet18 (run with the timm trainer's venv python)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainers"))
    from sdk import amp

    runs: dict[str, list[float]] = {name: [] for name in CONFIGS}
    ratios: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for rep in range(args.reps):
        for name, (cl, bf16) in CONFIGS.items():
            times = step_times(args.model, cl, bf16, args.steps, args.warmup, args.batch, args.imgsz)
            runs[name].append(statistics.median(times))
        for name in CONFIGS:
            ratios[name].append(runs[name][-1] / runs["contiguous"][-1])
        print(f"rep {rep}: " + ", ".join(f"{n} {runs[n][-1] * 1000:.0f} ms" for n in CONFIGS), flush=True)
    print(f"\n{args.model} training step, batch {args.batch} x {args.imgsz} px, {args.threads} torch thread(s); "
          f"native bfloat16 on this CPU: {amp.native_cpu_bf16()}")
    print("| configuration | median step | ratio to contiguous | per repetition |\n| --- | --- | --- | --- |")
    for name in CONFIGS:
        print(f"| {name} | {statistics.median(runs[name]) * 1000:.0f} ms | {statistics.median(ratios[name]):.2f} | "
              + ", ".join(f"{r:.2f}" for r in ratios[name]) + " |")
    out = Path(__file__).resolve().parent / "results" / f"train_step-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "native_cpu_bf16": amp.native_cpu_bf16(),
                               "cpu": os.cpu_count(), "step_s": runs, "ratio_to_contiguous": ratios}, indent=1))
    print(f"wrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")


if __name__ == "__main__":
    main()
