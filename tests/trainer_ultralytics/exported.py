"""Running an exported YOLO detector outside the platform: ONNX with onnxruntime, TorchScript with
torch.jit, on 128-px images fed as Ultralytics feeds them at imgsz 128 (RGB, /255, CHW; no
letterbox at the model's own size), and the raw head (1, 4 + classes, anchors: cx, cy, w, h and
class scores) decoded with Ultralytics' rules: score threshold, class-aware NMS at IoU 0.7."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.ops import batched_nms


def image_input(path: Path, size: int = 128) -> np.ndarray:
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    assert rgb.size == (size, size), rgb.size
    return (np.asarray(rgb, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None].copy()


def decode(raw: np.ndarray | torch.Tensor, conf: float = 0.25, iou: float = 0.7) -> list[tuple[list[float], int, float]]:
    """[(xyxy, class index, score)] of one image's raw output (1, 4 + nc, N)."""
    out = torch.as_tensor(np.asarray(raw))[0].float().T  # (N, 4 + nc)
    scores, classes = out[:, 4:].max(dim=1)
    keep = scores > conf
    boxes, scores, classes = out[keep, :4], scores[keep], classes[keep]
    xyxy = torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], dim=1)
    kept = batched_nms(xyxy, scores, classes, iou)
    return [(xyxy[i].tolist(), int(classes[i]), float(scores[i])) for i in kept.tolist()]


def onnx_runner(path: Path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = ast.literal_eval(session.get_modelmeta().custom_metadata_map["names"])
    name = session.get_inputs()[0].name
    return (lambda x: session.run(None, {name: x})[0]), {int(k): v for k, v in names.items()}


def torchscript_runner(path: Path):
    model = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: np.ndarray):
        with torch.no_grad():
            y = model(torch.from_numpy(x))
        return (y[0] if isinstance(y, (list, tuple)) else y).numpy()

    return run


def box_iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
