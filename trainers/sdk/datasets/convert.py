"""DICE v1.0 -> what frameworks read: the YOLO layout (Ultralytics detect/segment) and
ImageFolder trees (timm, Ultralytics classify). Images are hard-linked, not copied."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from .formats import DICE, IMAGEFOLDER, YOLO, detect_format, load_dice
from .validate import assign_splits, check_splits, polygon_area, validate_dice, validate_dataset

TARGETS = (YOLO, IMAGEFOLDER)
MARKER = ".vtp-converted"


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard link (instant, no extra disk); copy when across filesystems or unsupported."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _flat_name(file_name: str) -> str:
    # images/a/1.png and images/b/1.png must not collide once flattened into one split folder
    return file_name.replace("\\", "/").replace("/", "__")


def _safe_dir_name(name: str) -> str:
    cleaned = re.sub(r"[^\w.\- ]+", "_", name).strip().strip(".")
    return cleaned or "class"


def _yaml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid YAML scalar


def _fmt(v: float) -> str:
    return f"{min(max(v, 0.0), 1.0):.6f}"


def _yolo_line(idx: int, ann: dict[str, Any], w: float, h: float, task: str) -> str | None:
    if task == "instance_segmentation":
        seg = ann.get("segmentation")
        if seg:
            # YOLO holds one polygon per instance: keep the largest part of a multi-part one.
            poly = max(seg, key=polygon_area)
        else:
            x, y, bw, bh = ann["bbox"]
            poly = [x, y, x + bw, y, x + bw, y + bh, x, y + bh]
        coords = " ".join(_fmt(v / (w if k % 2 == 0 else h)) for k, v in enumerate(poly))
        return f"{idx} {coords}"
    bbox = ann.get("bbox")
    if bbox is None:
        seg = ann.get("segmentation") or []
        if not seg:
            return None
        xs = [v for p in seg for v in p[0::2]]
        ys = [v for p in seg for v in p[1::2]]
        bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    x, y, bw, bh = bbox
    return f"{idx} {_fmt((x + bw / 2) / w)} {_fmt((y + bh / 2) / h)} {_fmt(bw / w)} {_fmt(bh / h)}"


def dice_to_yolo(root: Path, out: Path, data: dict[str, Any], splits: dict[Any, str]) -> Path:
    task = data["task_type"]
    if task not in ("object_detection", "instance_segmentation"):
        raise DatasetError(f"DICE -> YOLO supports detection and segmentation, not {task}")
    class_ids = sorted((c["id"] for c in data["classes"]), key=lambda v: (str(type(v)), v))
    index = {cid: i for i, cid in enumerate(class_ids)}
    names = {c["id"]: str(c["name"]) for c in data["classes"]}
    used = set()
    for img in data["images"]:
        split = splits[img["id"]]
        used.add(split)
        flat = _flat_name(img["file_name"])
        link_or_copy(root / "images" / img["file_name"], out / "images" / split / flat)
        lines = [line for a in img.get("annotations") or []
                 if (line := _yolo_line(index[a["class_id"]], a, img["width"], img["height"], task))]
        label = out / "labels" / split / (Path(flat).stem + ".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(f"{line}\n" for line in lines))
    yaml_lines = [f"path: {_yaml_str(str(out.resolve()))}", "train: images/train", "val: images/val"]
    if "test" in used:
        yaml_lines.append("test: images/test")
    yaml_lines.append("names:")
    yaml_lines += [f"  {index[cid]}: {_yaml_str(names[cid])}" for cid in class_ids]
    (out / "data.yaml").write_text("\n".join(yaml_lines) + "\n")
    # YOLO indices are 0..N-1; keep the map back to DICE class ids for predictions.
    (out / "class_map.json").write_text(json.dumps(
        [{"index": index[cid], "class_id": cid, "name": names[cid]} for cid in class_ids], indent=1))
    return out


def dice_to_imagefolder(root: Path, out: Path, data: dict[str, Any], splits: dict[Any, str]) -> Path:
    dirs: dict[Any, str] = {}
    for c in data["classes"]:
        d = _safe_dir_name(str(c["name"]))
        if d in dirs.values():
            d = f"{d}_{c['id']}"
        dirs[c["id"]] = d
    for img in data["images"]:
        cid = img["annotation"]["class_id"] if isinstance(img.get("annotation"), dict) else None
        if cid is None:  # detection data: label the image with its first object's class
            anns = img.get("annotations") or []
            if not anns:
                continue
            cid = anns[0]["class_id"]
        split = splits[img["id"]]
        link_or_copy(root / "images" / img["file_name"], out / split / dirs[cid] / _flat_name(img["file_name"]))
    for split in ("train", "val"):  # every class folder exists in both, even if empty
        for d in dirs.values():
            (out / split / d).mkdir(parents=True, exist_ok=True)
    return out


def convert_dataset(src_dir: str | os.PathLike, target: str = YOLO, out_dir: str | os.PathLike | None = None,
                    *, task_type: str | None = None, val_fraction: float = 0.2, seed: int = 0) -> Path:
    """Validate ``src_dir`` and write it in ``target`` layout under ``out_dir``.

    A dataset already in the target layout is validated and returned as it is.
    """
    src = Path(src_dir)
    target = target.lower()
    if target not in TARGETS:
        raise DatasetError(f"unknown target format {target!r}; use one of {', '.join(TARGETS)}")
    fmt = detect_format(src)
    if fmt == target:
        validate_dataset(src, task_type)
        return src
    if fmt != DICE:
        raise DatasetError(f"cannot convert a {fmt} dataset to {target}; only DICE converts")
    data = validate_dice(src, load_dice(src), task_type=task_type)
    splits = assign_splits(data["images"], val_fraction=val_fraction, seed=seed)
    check_splits(splits, val_fraction)
    out = Path(out_dir) if out_dir else src.parent / f"{src.name}-{target}"
    if out.resolve() == src.resolve():
        raise DatasetError("the conversion output folder must differ from the source")
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():  # never wipe a folder this function did not write
            raise DatasetError(f"conversion output folder {out} exists and is not empty")
        shutil.rmtree(out)  # stale output of an earlier attempt
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(f"converted from {src.resolve()} to {target}\n")
    if target == YOLO:
        return dice_to_yolo(src, out, data, splits)
    return dice_to_imagefolder(src, out, data, splits)
