"""Deterministic synthetic DICE v1.0 datasets for tests and the demo (numpy + Pillow).

Filled shapes (circle, square, triangle, ...) in saturated class colours on a mildly noisy grey
background: easy enough for a tiny model to learn in a few epochs, and exact: every bbox is the
extent of the shape's drawn pixels, every polygon is the one that was rasterised. Images are PNG
(lossless), so tests can recover the shapes from the pixels.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

FORMAT_VERSION = "1.0"
PALETTE = [(230, 40, 40), (40, 200, 40), (40, 80, 230), (230, 200, 30), (200, 40, 200), (30, 200, 210)]
SHAPES = ("circle", "square", "triangle", "diamond", "hexagon", "star")
DEFAULT_CLASSES = ("circle", "square", "triangle")


def class_color(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def shape_polygon(kind: str, cx: float, cy: float, r: float) -> list[tuple[int, int]]:
    """Integer vertices (what gets rasterised, so the polygon is exact) of a shape of radius r."""
    if kind == "square":
        pts = [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    elif kind == "triangle":
        pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    elif kind == "diamond":
        pts = [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    elif kind == "hexagon":
        pts = [(cx + r * math.cos(k * math.pi / 3), cy + r * math.sin(k * math.pi / 3)) for k in range(6)]
    elif kind == "star":
        pts = [(cx + (r if k % 2 == 0 else r * 0.45) * math.cos(-math.pi / 2 + k * math.pi / 5),
                cy + (r if k % 2 == 0 else r * 0.45) * math.sin(-math.pi / 2 + k * math.pi / 5)) for k in range(10)]
    else:  # circle (and any unknown name): a 24-gon
        pts = [(cx + r * math.cos(2 * math.pi * k / 24), cy + r * math.sin(2 * math.pi * k / 24)) for k in range(24)]
    return [(int(round(x)), int(round(y))) for x, y in pts]


def _kind_of(name: str, index: int) -> str:
    return name if name in SHAPES else SHAPES[index % len(SHAPES)]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.normal(120.0, 10.0, size=(size, size, 1))
    tint = rng.normal(0.0, 4.0, size=(size, size, 3))
    return np.clip(base + tint, 0, 255).astype(np.uint8)


def _draw(img: np.ndarray, poly: list[tuple[int, int]], color: tuple[int, int, int]) -> list[int]:
    """Paint the polygon; returns the pixel-exact bbox [x, y, w, h] of what was painted."""
    h, w = img.shape[:2]
    mask_img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask_img).polygon(poly, fill=255)
    mask = np.asarray(mask_img) > 0
    img[mask] = color
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _place(rng: random.Random, size: int, placed: list[tuple[float, float, float]],
           r_range: tuple[float, float]) -> tuple[float, float, float] | None:
    for _ in range(100):
        r = rng.uniform(*r_range)
        cx, cy = rng.uniform(r + 1, size - r - 2), rng.uniform(r + 1, size - r - 2)
        if all(math.hypot(cx - x, cy - y) > r + pr + 3 for x, y, pr in placed):
            return cx, cy, r
    return None


def _splits(n: int, labels: list[int], val_fraction: float | None, seed: int) -> list[str | None]:
    if val_fraction is None:
        return [None] * n
    rng = random.Random(seed + 1)
    out: list[str | None] = ["train"] * n
    by_class: dict[int, list[int]] = {}
    for i, c in enumerate(labels):
        by_class.setdefault(c, []).append(i)
    for c in sorted(by_class):
        idx = by_class[c]
        rng.shuffle(idx)
        k = max(1, int(round(len(idx) * val_fraction))) if len(idx) > 1 else 0
        for i in idx[:k]:
            out[i] = "val"
    return out


def content_hash(root: Path, data: dict[str, Any]) -> str:
    h = hashlib.sha256()
    body = {k: v for k, v in data.items() if k != "content_hash"}
    h.update(json.dumps(body, sort_keys=True).encode())
    for img in sorted(data["images"], key=lambda i: i["file_name"]):
        h.update(img["file_name"].encode())
        h.update(hashlib.sha256((root / "images" / img["file_name"]).read_bytes()).digest())
    return "sha256:" + h.hexdigest()


def _make(root: str | Path, task: str, n_images: int, size: int, classes: Sequence[str], seed: int,
          val_fraction: float | None, max_objects: int) -> Path:
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    images: list[dict[str, Any]] = []
    first_labels: list[int] = []
    ann_id = 1
    for i in range(n_images):
        img = _background(nrng, size)
        record: dict[str, Any] = {"id": i + 1, "file_name": f"img_{i:04d}.png", "width": size, "height": size}
        if task == "image_classification":
            c = i % len(classes)  # balanced classes
            r = rng.uniform(size * 0.22, size * 0.34)
            cx, cy = rng.uniform(r + 1, size - r - 2), rng.uniform(r + 1, size - r - 2)
            _draw(img, shape_polygon(_kind_of(classes[c], c), cx, cy, r), class_color(c))
            record["annotation"] = {"class_id": c}
            first_labels.append(c)
        else:
            placed: list[tuple[float, float, float]] = []
            anns = []
            n_obj = rng.randint(1, max_objects)
            for k in range(n_obj):
                c = (i + k) % len(classes) if k == 0 else rng.randrange(len(classes))
                spot = _place(rng, size, placed, (size * 0.08, size * 0.16))
                if spot is None:
                    continue
                placed.append(spot)
                poly = shape_polygon(_kind_of(classes[c], c), *spot)
                bbox = _draw(img, poly, class_color(c))
                ann: dict[str, Any] = {"id": ann_id, "class_id": c, "bbox": bbox, "area": bbox[2] * bbox[3]}
                if task == "instance_segmentation":
                    ann["segmentation"] = [[float(v) for xy in poly for v in xy]]
                anns.append(ann)
                ann_id += 1
            record["annotations"] = anns
            first_labels.append(anns[0]["class_id"])
        Image.fromarray(img).save(root / "images" / record["file_name"], optimize=False)
        images.append(record)
    for record, split in zip(images, _splits(n_images, first_labels, val_fraction, seed)):
        if split:
            record["split"] = split
    data: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "task_type": task,
        "classes": [{"id": i, "name": name} for i, name in enumerate(classes)],
        "images": images,
    }
    data["content_hash"] = content_hash(root, data)
    (root / "annotations.json").write_text(json.dumps(data, indent=1))
    return root


def make_detection(root: str | Path, n_images: int = 64, size: int = 128,
                   classes: Sequence[str] = DEFAULT_CLASSES, seed: int = 0,
                   val_fraction: float | None = None, max_objects: int = 3) -> Path:
    """Object detection: 1..max_objects shapes per image; bbox [x, y, w, h] in pixels.
    ``val_fraction`` writes a seeded ``split`` per image; None leaves the split to the trainer."""
    return _make(root, "object_detection", n_images, size, classes, seed, val_fraction, max_objects)


def make_segmentation(root: str | Path, n_images: int = 64, size: int = 128,
                      classes: Sequence[str] = DEFAULT_CLASSES, seed: int = 0,
                      val_fraction: float | None = None, max_objects: int = 3) -> Path:
    """Instance segmentation: as detection, plus the exact polygon of each shape."""
    return _make(root, "instance_segmentation", n_images, size, classes, seed, val_fraction, max_objects)


def make_classification(root: str | Path, n_images: int = 64, size: int = 128,
                        classes: Sequence[str] = DEFAULT_CLASSES, seed: int = 0,
                        val_fraction: float | None = None) -> Path:
    """Image classification: one large shape per image; the class is the shape."""
    return _make(root, "image_classification", n_images, size, classes, seed, val_fraction, 1)


def zip_dataset(root: str | Path, out: str | Path | None = None) -> Path:
    """Zip a dataset folder with ``annotations.json`` and ``images/`` at the archive's top level."""
    root = Path(root)
    out = Path(out) if out else root.parent / f"{root.name}.zip"
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            zf.write(path, path.relative_to(root).as_posix())
    return out
