"""Inference with a checkpoint of the timm trainer (the platform's predict contract).

    load_model(checkpoint_path, device) -> model
    predict(model, image_paths, conf=0.25, top_k=5) -> [{"top_k": [{"class_id", "class_name",
                                                        "probability"}], "class_id", "class_name",
                                                        "probability"}, ...]  (one per image)

The checkpoint carries everything needed: model name and kwargs, class names and ids, and timm's
data config (input size, interpolation, mean/std, crop) — the eval transform of training.
``conf`` is accepted for the common signature; a classifier returns its ``top_k`` classes whatever
their probability.

Command line (S3 through the contract's storage variables, e.g. STORAGE_TYPE/MINIO_*):

    python predict.py --checkpoint (path | s3://bucket/checkpoints/job-ID/best.pt)
                      --source (image | folder | s3://bucket/prefix) [--top-k 5] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import timm_common as common  # noqa: E402

BATCH = 32


class Classifier:
    def __init__(self, model: torch.nn.Module, ckpt: dict[str, Any], device: torch.device) -> None:
        self.model, self.device = model, device
        self.class_names = list(ckpt["class_names"])
        self.class_ids = list(ckpt.get("class_ids") or range(len(self.class_names)))
        self.data_config = dict(ckpt["data_config"])
        self.model_name = ckpt["model_name"]
        self.transform = common.eval_transform(self.data_config)


def load_model(checkpoint_path: str, device: str = "cpu") -> Classifier:
    ckpt = torch.load(str(checkpoint_path), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != common.CHECKPOINT_FORMAT:
        raise ValueError(f"{checkpoint_path} is not a checkpoint of the timm trainer")
    dev = common.torch_device(device)
    return Classifier(common.model_from_checkpoint(ckpt, dev), ckpt, dev)


@torch.no_grad()
def predict(model: Classifier, image_paths: list[str], conf: float = 0.25, top_k: int = 5,
            **_: Any) -> list[dict[str, Any]]:
    from PIL import Image

    k = max(1, min(int(top_k), len(model.class_names)))
    results: list[dict[str, Any]] = []
    for start in range(0, len(image_paths), BATCH):
        chunk = image_paths[start:start + BATCH]
        tensors = []
        for path in chunk:
            with Image.open(path) as img:
                tensors.append(model.transform(img.convert("RGB")))
        probs = model.model(torch.stack(tensors).to(model.device)).float().softmax(-1).cpu()
        values, indices = probs.topk(k, dim=-1)
        for vals, idxs in zip(values.tolist(), indices.tolist()):
            top = [{"class_id": model.class_ids[i], "class_name": model.class_names[i], "probability": round(v, 6)}
                   for v, i in zip(vals, idxs)]
            results.append({**top[0], "top_k": top})
    return results


# ----------------------------------------------------------------------------- command line
def _storage():
    sys.path.insert(0, str(HERE.parent))  # the SDK beside this trainer (trainers/sdk)
    from sdk import ConfigError
    from sdk.env import storage_locations
    from sdk.storage import S3Storage

    _, location = storage_locations(os.environ)
    if location is None:
        raise ConfigError("s3:// paths need the storage variables (STORAGE_BUCKET, MINIO_*/R2_*/AWS_*)")
    return S3Storage(location)


def _fetch_checkpoint(uri: str, tmp: Path) -> Path:
    if not uri.startswith("s3://"):
        return Path(uri)
    storage = _storage()
    from sdk.storage import parse_s3_uri

    bucket, key = parse_s3_uri(uri)
    return storage.download_file(key, tmp / Path(key).name, bucket)


def _sources(source: str, tmp: Path) -> list[str]:
    if source.startswith("s3://"):
        storage = _storage()
        from sdk.storage import parse_s3_uri

        bucket, prefix = parse_s3_uri(source)
        out = []
        for obj in storage.list(prefix, bucket):
            if obj["Key"].lower().endswith(common.IMAGE_EXTENSIONS):
                out.append(str(storage.download_file(obj["Key"], tmp / "images" / obj["Key"], bucket)))
        return sorted(out)
    path = Path(source)
    if path.is_dir():
        return [str(p) for p in common.list_images(path)]
    if path.is_file():
        return [str(path)]
    raise FileNotFoundError(source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or s3:// URI")
    parser.add_argument("--source", required=True, help="image, folder, or s3://bucket/prefix")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--device", default=os.environ.get("DEVICE", "cpu"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vtp-timm-predict-") as tmp:
        model = load_model(str(_fetch_checkpoint(args.checkpoint, Path(tmp))), args.device)
        images = _sources(args.source, Path(tmp))
        if not images:
            print(json.dumps({"error": f"no images in {args.source}"}))
            return 1
        results = [{"image": path, **r} for path, r in zip(images, predict(model, images, top_k=args.top_k))]
    print(json.dumps({"checkpoint": args.checkpoint, "model_name": model.model_name, "predictions": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
