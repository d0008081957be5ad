"""The reference side of benchmark 3: the same training run directly with Ultralytics.

Run with the Ultralytics trainer's own venv python (the environment the platform runs the trainer
in), as a user would: ``YOLO("yolo11n.yaml").train(...)`` with Ultralytics' defaults for threads
and dataloader workers. Only the offline preparation the trainer itself does is shared
(``ul_runtime.prepare_environment`` / ``configure_settings``: font, no hub, no MLflow), so neither
side pays for network time-outs. Prints one JSON line (``RESULT {...}``) with its inner timings.

    <trainer venv>/bin/python bench/_direct_ultralytics.py --data DIR/data.yaml --work DIR ...
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

T_START = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "trainers" / "ultralytics"))
sys.path.insert(0, str(REPO / "trainers"))  # the SDK (`sdk`), which ul_runtime uses, as the trainer has it

import ul_runtime  # noqa: E402  (no ultralytics import: it must configure Ultralytics first)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="data.yaml of the dataset in YOLO layout")
    ap.add_argument("--work", required=True)
    ap.add_argument("--model", default="yolo11n.yaml")
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--imgsz", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plots", action="store_true")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads for training and validation (0: Ultralytics' own rule, cpus - 1)")
    args = ap.parse_args()

    work = Path(args.work)
    ul_runtime.prepare_environment(work)
    ul_runtime.configure_settings(work)
    t_import = time.perf_counter()
    import torch
    from ultralytics import YOLO

    t_model = time.perf_counter()
    model = YOLO(args.model)
    if args.threads:  # Ultralytics sets its own count as the trainer and each validator start
        def threads(_: object) -> None:
            torch.set_num_threads(args.threads)

        for event in ("on_pretrain_routine_end", "on_train_start", "on_val_start"):
            model.add_callback(event, threads)
    t_train = time.perf_counter()
    # The trainer's only non-default training argument that changes the optimisation is nbs=batch
    # (one optimizer step per batch); it is repeated here so both sides run the same training.
    # Threads and workers stay Ultralytics' own choice: that is the point of the comparison.
    model.train(data=args.data, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, seed=args.seed,
                nbs=args.batch, device="cpu", amp=False, plots=args.plots, project=str(work / "runs"),
                name="train", exist_ok=True, verbose=False)
    t_end = time.perf_counter()
    metrics = getattr(model.trainer, "metrics", {}) or {}
    print("RESULT " + json.dumps({
        "startup_s": t_import - T_START, "import_s": t_model - t_import, "model_s": t_train - t_model,
        "train_s": t_end - t_train, "in_process_s": t_end - T_START, "torch_threads": torch.get_num_threads(),
        "workers": model.trainer.args.workers,
        "mAP50": float(metrics.get("metrics/mAP50(B)", float("nan")))}), flush=True)


if __name__ == "__main__":
    main()
