"""Inference with a checkpoint of this trainer (the platform's predict contract).

The platform's model server (ray_app/serving, a Ray Serve deployment) imports this file and calls

    model = load_model(checkpoint_path, device)       # once; the model stays loaded
    predict(model, image_paths, conf=0.25, top_k=5)   # one JSON-serializable dict per image

detection       {"boxes": [{"xyxy": [x1, y1, x2, y2], "confidence", "class_id", "class_name"}]}
segmentation    the same, plus "polygon": [[x, y], ...] per box (image pixels)
classification  {"top_k": [{"class_id", "class_name", "probability"}]}

``class_id`` is the dataset's own class id (DICE ids are kept in the checkpoint by train.py).

Command line (prints JSON):

    python predict.py --checkpoint best.pt|s3://bucket/checkpoints/job-X/best.pt \\
                      --source image.png|folder|s3://bucket/prefix/ [--conf 0.25] [--top-k 5]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
try:
    import sdk  # noqa: F401  (shipped by the platform with runtime_env.py_modules)
except ImportError:  # run by hand from the repository: the SDK sits next to this trainer
    sys.path.insert(0, str(HERE.parent))

import ul_runtime  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def _config_base() -> Path:
    base = os.environ.get("WORK_DIR")
    return Path(base) / "predict" if base else Path(tempfile.gettempdir()) / f"vtp-predict-{os.getpid()}"


@dataclass
class LoadedModel:
    yolo: Any
    task: str
    device: str
    names: dict[int, str]
    class_ids: dict[int, Any] = field(default_factory=dict)
    imgsz: int | None = None


def load_model(checkpoint_path: str, device: str = "cpu") -> LoadedModel:
    ul_runtime.prepare_environment(_config_base())  # before ultralytics is imported
    ul_runtime.configure_settings(_config_base())
    from ultralytics import YOLO

    import ul_checkpoints

    yolo = YOLO(str(checkpoint_path))
    meta = ul_checkpoints.metadata(yolo.ckpt or {})
    dev = ul_runtime.ultralytics_device(device)
    ul_runtime.set_threads()
    names = {int(k): str(v) for k, v in (yolo.names or {}).items()}
    ids = {int(k): v for k, v in (meta.get("class_ids") or {}).items()}
    return LoadedModel(yolo=yolo, task=yolo.task, device=dev, names=names, class_ids=ids,
                       imgsz=meta.get("imgsz") or (yolo.ckpt or {}).get("train_args", {}).get("imgsz"))


def read_image(path: str | Path) -> Any:
    """The image at `path` as pixels (BGR, as Ultralytics reads files itself). Ultralytics is never
    handed a path: it reads a `.txt`/`.csv` source as a list of paths, and takes folders and globs,
    so a file named by whoever sent it could make it read other files (DESIGN §12)."""
    import cv2
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path.name}: not a file")
    pixels = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    if pixels is None:
        raise ValueError(f"{path.name}: not an image")
    return pixels


def _cls(model: LoadedModel, index: int) -> dict[str, Any]:
    return {"class_id": model.class_ids.get(index, index), "class_name": model.names.get(index, str(index))}


def predict(model: LoadedModel, image_paths: list[str], conf: float = 0.25, top_k: int = 5,
            **_: Any) -> list[dict[str, Any]]:
    if not image_paths:
        return []
    ul_runtime.set_threads()
    kwargs: dict[str, Any] = {"device": model.device, "verbose": False, "save": False}
    if model.imgsz:
        kwargs["imgsz"] = model.imgsz
    if model.task != "classify":
        kwargs["conf"] = conf
    out: list[dict[str, Any]] = []
    for path in image_paths:  # one at a time: images of different sizes, bounded memory
        result = model.yolo.predict(read_image(path), **kwargs)[0]
        h, w = (result.orig_shape or (None, None))[:2]
        item: dict[str, Any] = {"width": w, "height": h}
        if model.task == "classify":
            probs = result.probs.data.float().cpu()
            k = max(1, min(int(top_k), probs.numel()))
            values, indices = probs.topk(k)
            item["top_k"] = [{**_cls(model, int(i)), "probability": round(float(v), 6)}
                             for v, i in zip(values.tolist(), indices.tolist())]
        else:
            boxes = []
            polygons = result.masks.xy if (model.task == "segment" and result.masks is not None) else None
            for j in range(len(result.boxes)):
                box = result.boxes[j]
                entry = {"xyxy": [round(float(v), 2) for v in box.xyxy[0].tolist()],
                         "confidence": round(float(box.conf[0]), 6), **_cls(model, int(box.cls[0]))}
                if polygons is not None:
                    entry["polygon"] = [[round(float(x), 2), round(float(y), 2)] for x, y in polygons[j].tolist()]
                boxes.append(entry)
            item["boxes"] = boxes
        out.append(item)
    return out


# ---------------------------------------------------------------------------- command line
def _storage():
    from sdk.env import storage_locations
    from sdk.storage import S3Storage

    _, loc = storage_locations(os.environ)
    if loc is None:
        raise SystemExit("s3:// paths need the storage variables (STORAGE_TYPE, MINIO_*/R2_*, STORAGE_BUCKET)")
    return S3Storage(loc)


def _fetch(uri: str, dest: Path) -> list[Path]:
    """Local copies of an s3:// object or of every image under an s3:// prefix."""
    from sdk.storage import parse_s3_uri

    storage = _storage()
    bucket, key = parse_s3_uri(uri)
    if key and not key.endswith("/") and storage.head(key, bucket):
        return [storage.download_file(key, dest / Path(key).name, bucket)]
    prefix = key.rstrip("/") + "/" if key else ""
    files = []
    for obj in storage.list(prefix, bucket):
        if Path(obj["Key"]).suffix.lower() in IMAGE_SUFFIXES:
            files.append(storage.download_file(obj["Key"], dest / obj["Key"][len(prefix):], bucket))
    return files


def _images(source: str, tmp: Path) -> list[Path]:
    if source.startswith("s3://"):
        return sorted(_fetch(source, tmp / "source"))
    path = Path(source)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if path.is_file():
        return [path]
    raise SystemExit(f"source {source!r} not found")


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Predict with an Ultralytics checkpoint; prints JSON")
    parser.add_argument("--checkpoint", required=True, help="a .pt path or s3:// URI")
    parser.add_argument("--source", required=True, help="an image, a folder, or an s3:// object/prefix")
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--device", default=os.environ.get("DEVICE", "cpu"))
    a = parser.parse_args(argv)
    out = sys.stdout
    # stdout carries the JSON only: Ultralytics' own messages (its logger binds the stream that is
    # sys.stdout when it is first imported, here) go to stderr
    with tempfile.TemporaryDirectory(prefix="vtp-predict-") as tmp, contextlib.redirect_stdout(sys.stderr):
        os.environ.setdefault("WORK_DIR", tmp)  # the per-run Ultralytics config dir lives here
        ckpt = Path(a.checkpoint)
        if a.checkpoint.startswith("s3://"):
            ckpt = _fetch(a.checkpoint, Path(tmp) / "checkpoint")[0]
        images = _images(a.source, Path(tmp))
        model = load_model(str(ckpt), a.device)
        results = predict(model, [str(p) for p in images], conf=a.conf, top_k=a.top_k)
        for result, image in zip(results, images):
            result["image"] = str(image if not a.source.startswith("s3://") else image.name)
    json.dump({"checkpoint": a.checkpoint, "predictions": results}, out, indent=1)
    out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
