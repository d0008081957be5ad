"""The reference side of bench/predict.py: the Ultralytics trainer's own `predict.py`, called
directly in one process (its venv's python), the model loaded once.

    <trainer venv>/bin/python bench/_direct_predict.py CHECKPOINT IMAGE

Prints `READY {...}` once the model is loaded (load time, torch threads), then answers each line
`N` on stdin with `RESULT {...}`: the wall of N calls `predict(model, [IMAGE])`, each timed alone.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

PREDICT = Path(__file__).resolve().parents[1] / "trainers" / "ultralytics" / "predict.py"


def main() -> None:
    checkpoint, image = sys.argv[1], sys.argv[2]
    t0 = time.perf_counter()
    spec = importlib.util.spec_from_file_location("trainer_predict", PREDICT)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["trainer_predict"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    model = module.load_model(checkpoint, "cpu")
    load_s = time.perf_counter() - t0
    import torch

    first = time.perf_counter()
    module.predict(model, [image])  # the predictor's set-up (the API's cold call pays it too)
    first_s = time.perf_counter() - first
    print("READY " + json.dumps({"load_s": load_s, "first_predict_s": first_s,
                                 "torch_threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        times, boxes = [], 0
        for _ in range(int(line)):
            t = time.perf_counter()
            out = module.predict(model, [image])
            times.append(time.perf_counter() - t)
            boxes = len(out[0].get("boxes", []))
        print("RESULT " + json.dumps({"times_s": times, "boxes": boxes}), flush=True)


if __name__ == "__main__":
    main()
