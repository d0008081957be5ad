"""Export a checkpoint of the timm trainer to another format (the platform's export contract):

    export(checkpoint_path, output_dir, format, image_size, half=False, dynamic=False, device="cpu")
        -> [paths of the files written under output_dir]

``onnx`` (torch.onnx's TorchScript-based exporter, opset 17; input ``images`` 1x3xSxS, output
``logits``; with ``dynamic`` the batch axis is free) and ``torchscript`` (torch.jit.trace). S is the
input size of the checkpoint's data config (the size the model was trained and evaluated at),
else ``image_size``. Beside the model, ``preprocess.json`` says how to feed it: the data config
(input size, interpolation, mean, std, crop), the class names and ids, so the exported model can be
used without timm: resize the short side to S / crop_pct, center-crop S, RGB / 255, normalize.

Command line:

    python export.py --checkpoint best.pt --format onnx [--image-size 224] --output-dir out/
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import timm_common as common  # noqa: E402

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript"}
OPSET = 17


def _input_size(ckpt: dict[str, Any], image_size: int) -> int:
    size = (ckpt.get("data_config") or {}).get("input_size")
    return int(size[-1]) if size else int(image_size)


def export(checkpoint_path: str, output_dir: str, format: str, image_size: int, half: bool = False,
           dynamic: bool = False, device: str = "cpu") -> list[str]:
    if format not in FORMATS:
        raise ValueError(f"format {format!r} is not supported; supported: {', '.join(FORMATS)}")
    ckpt = torch.load(str(checkpoint_path), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != common.CHECKPOINT_FORMAT:
        raise ValueError(f"{checkpoint_path} is not a checkpoint of the timm trainer")
    dev = common.torch_device(device)
    half = half and dev.type == "cuda"  # FP16 on a CPU is neither supported everywhere nor faster
    model = common.model_from_checkpoint(ckpt, dev)
    size = _input_size(ckpt, image_size)
    sample = torch.zeros(1, 3, size, size, device=dev)
    if half:
        model, sample = model.half(), sample.half()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / (Path(checkpoint_path).stem + FORMATS[format])
    with torch.no_grad():
        if format == "onnx":
            torch.onnx.export(model, (sample,), str(target), dynamo=False, opset_version=OPSET,
                              input_names=["images"], output_names=["logits"],
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None)
        else:
            traced = torch.jit.trace(model, sample)
            traced.save(str(target))
    preprocess = out / "preprocess.json"
    preprocess.write_text(json.dumps({
        "model_name": ckpt["model_name"], "input": [1 if not dynamic else "batch", 3, size, size],
        "data_config": ckpt.get("data_config") or {}, "class_names": list(ckpt["class_names"]),
        "class_ids": list(ckpt.get("class_ids") or range(len(ckpt["class_names"]))),
        "half": half, "format": format,
    }, indent=1))
    return [str(target), str(preprocess)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a timm trainer checkpoint; prints the files as JSON")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--format", required=True, choices=sorted(FORMATS))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--output-dir", default=".")
    parser.add_argument("--half", action="store_true")
    parser.add_argument("--dynamic", action="store_true")
    parser.add_argument("--device", default=os.environ.get("DEVICE", "cpu"))
    a = parser.parse_args(argv)
    print(json.dumps({"files": export(a.checkpoint, a.output_dir, a.format, a.image_size, a.half, a.dynamic,
                                      a.device)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
