"""Export a checkpoint of this trainer to another format (the platform's export contract):

    export(checkpoint_path, output_dir, format, image_size, half=False, dynamic=False, device="cpu")
        -> [paths of the files written under output_dir]

Ultralytics' own exporter (`YOLO(checkpoint).export(...)`) for the formats in trainer.yaml
(`export_formats`): ``onnx`` (the raw head: detection (1, 4 + classes, anchors) as cx, cy, w, h and
class scores, no NMS) and ``torchscript``. Offline: the ONNX graph is not simplified (onnxslim and
onnxruntime would be installed at run time otherwise); ``onnx`` is in requirements.txt.

Command line:

    python export.py --checkpoint best.pt --format onnx --image-size 640 --output-dir out/
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import ul_runtime  # noqa: E402

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript"}


def _config_base() -> Path:
    base = os.environ.get("WORK_DIR")
    return Path(base) / "export" if base else Path(tempfile.gettempdir()) / f"vtp-export-{os.getpid()}"


def export(checkpoint_path: str, output_dir: str, format: str, image_size: int, half: bool = False,
           dynamic: bool = False, device: str = "cpu") -> list[str]:
    if format not in FORMATS:
        raise ValueError(f"format {format!r} is not supported; supported: {', '.join(FORMATS)}")
    ul_runtime.prepare_environment(_config_base())  # before ultralytics is imported
    ul_runtime.configure_settings(_config_base())
    from ultralytics import YOLO

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vtp-ul-export-") as tmp:
        # the exporter writes beside the weights: a copy in a scratch folder keeps the input as it is
        weights = Path(tmp) / Path(checkpoint_path).name
        shutil.copyfile(checkpoint_path, weights)
        ul_runtime.set_threads()
        kwargs = {"format": format, "imgsz": int(image_size), "half": half, "dynamic": dynamic,
                  "device": ul_runtime.ultralytics_device(device), "verbose": False}
        if format == "onnx":
            kwargs["simplify"] = False
        produced = YOLO(str(weights)).export(**kwargs)
        if not produced or not Path(produced).exists():
            raise RuntimeError(f"Ultralytics wrote no {format} file")
        target = out / (Path(checkpoint_path).stem + FORMATS[format])
        shutil.move(str(produced), target)
    return [str(target)]


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export an Ultralytics checkpoint; prints the files as JSON")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--format", required=True, choices=sorted(FORMATS))
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--output-dir", default=".")
    parser.add_argument("--half", action="store_true")
    parser.add_argument("--dynamic", action="store_true")
    parser.add_argument("--device", default=os.environ.get("DEVICE", "cpu"))
    a = parser.parse_args(argv)
    files = export(a.checkpoint, a.output_dir, a.format, a.image_size, a.half, a.dynamic, a.device)
    print(json.dumps({"files": files}))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
