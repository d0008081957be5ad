"""Validation before training (DESIGN §4): a broken dataset fails in seconds with a
DatasetError that names its first offending entries, not at the end of an epoch."""
from __future__ import annotations

import math
import random
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, NamedTuple

from ..env import normalize_task_type
from ..errors import ConfigError, DatasetError
from .formats import IMAGE_SUFFIXES, YOLO, IMAGEFOLDER, detect_format, load_dice, read_data_yaml, yolo_names

MAX_REPORTED = 5
TOLERANCE = 0.5  # pixels: rounding of float coordinates at the image border


def _raise(problems: list[str], what: str) -> None:
    if not problems:
        return
    shown = "; ".join(problems[:MAX_REPORTED])
    more = f" (and {len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
    raise DatasetError(f"{what}: {len(problems)} problem(s): {shown}{more}")


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_bbox(bbox: Any, w: int, h: int) -> str | None:
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_num(v) for v in bbox)):
        return f"bbox {bbox!r} is not [x, y, w, h] numbers"
    x, y, bw, bh = bbox
    if bw <= 0 or bh <= 0:
        return f"bbox {list(bbox)} has zero or negative size"
    if x < -TOLERANCE or y < -TOLERANCE or x + bw > w + TOLERANCE or y + bh > h + TOLERANCE:
        return f"bbox {list(bbox)} lies outside the {w}x{h} image"
    return None


def polygon_area(pts: list[float]) -> float:
    xs, ys = pts[0::2], pts[1::2]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2.0


def _check_polygons(seg: Any, w: int, h: int) -> str | None:
    if not isinstance(seg, list) or not seg:
        return "segmentation is not a non-empty list of polygons"
    for k, poly in enumerate(seg):
        if not (isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0
                and all(_num(v) for v in poly)):
            return f"polygon #{k} needs at least 3 (x, y) pairs of numbers"
        xs, ys = poly[0::2], poly[1::2]
        if min(xs) < -TOLERANCE or min(ys) < -TOLERANCE or max(xs) > w + TOLERANCE or max(ys) > h + TOLERANCE:
            return f"polygon #{k} has points outside the {w}x{h} image"
        if polygon_area(poly) <= 0:
            return f"polygon #{k} has zero area"
    return None


class DiceIssue(NamedTuple):
    """One problem in a DICE dataset: ``where`` as validate_dice names it ("annotations.json",
    "classes[2]", "image id=7 'a.png' annotation #0"), the ``reason``, the ``file`` it is in
    relative to the root ("annotations.json" or "images/<file_name>") and ``detail``: the reason
    as said of that file (with "annotation #k: " in front for one annotation)."""

    where: str
    reason: str
    file: str
    detail: str


def dice_issues(root: str | Path, data: dict[str, Any], task: str,
                check_files: bool = True) -> Iterator[DiceIssue]:
    """Every problem of a DICE v1.0 document (``task``: its normalized task type), in order."""
    root = Path(root)
    doc = "annotations.json"

    def whole(where: str, reason: str) -> DiceIssue:
        return DiceIssue(where, reason, doc, reason if where == doc else f"{where}: {reason}")

    if "format_version" not in data:
        yield whole(doc, "missing 'format_version'")
    if not task:
        yield whole(doc, "missing 'task_type'")
    classes = data.get("classes")
    class_ids: set[Any] = set()
    if not isinstance(classes, list) or not classes:
        yield whole(doc, "'classes' must be a non-empty list")
        classes = []
    for i, c in enumerate(classes):
        if not isinstance(c, dict) or "id" not in c or not str(c.get("name", "")).strip():
            yield whole(f"classes[{i}]", "needs 'id' and 'name'")
        elif c["id"] in class_ids:
            yield whole(f"classes[{i}]", f"duplicate class id {c['id']!r}")
        else:
            class_ids.add(c["id"])
    images = data.get("images")
    if not isinstance(images, list) or not images:
        yield whole(doc, "'images' is empty")
        return
    seen_ids: set[Any] = set()
    for i, img in enumerate(images):
        if not isinstance(img, dict):
            yield whole(f"images[{i}]", "not an object")
            continue
        name = img.get("file_name")
        label = f"image id={img.get('id')!r} {name!r}"
        good_name = (isinstance(name, str) and bool(name) and not name.startswith("/")
                     and ".." not in PurePosixPath(name).parts)
        file = f"images/{name}" if good_name else doc

        def of_image(reason: str, ann: int | None = None, label: str = label, file: str = file) -> DiceIssue:
            if ann is None:
                return DiceIssue(label, reason, file, reason if file != doc else f"{label}: {reason}")
            where = f"{label} annotation #{ann}"
            return DiceIssue(where, reason, file, f"annotation #{ann}: {reason}" if file != doc else f"{where}: {reason}")

        if img.get("id") in seen_ids:
            yield of_image("duplicate image id")
        seen_ids.add(img.get("id"))
        w: Any = img.get("width")
        h: Any = img.get("height")
        if not (_num(w) and _num(h) and w > 0 and h > 0):
            yield of_image("width/height must be positive numbers")
            continue
        if not (good_name and isinstance(name, str)):
            yield of_image("file_name must be a relative path inside images/")
            continue
        if check_files and not (root / "images" / name).is_file():
            yield of_image(f"file images/{name} is missing")
        split = img.get("split")
        if split not in (None, "", "train", "val", "valid", "validation", "test"):
            yield of_image(f"unknown split {split!r}")
        if task == "image_classification":
            ann = img.get("annotation")
            cid = ann.get("class_id") if isinstance(ann, dict) else None
            if cid is None:
                yield of_image("missing annotation.class_id")
            elif cid not in class_ids:
                yield of_image(f"unknown class_id {cid!r}")
            continue
        anns = img.get("annotations", [])
        if not isinstance(anns, list):
            yield of_image("'annotations' must be a list")
            continue
        for k, a in enumerate(anns):
            if not isinstance(a, dict):
                yield of_image("not an object", k)
                continue
            if a.get("class_id") not in class_ids:
                yield of_image(f"unknown class_id {a.get('class_id')!r}", k)
            if "bbox" in a or task == "object_detection":
                reason = _check_bbox(a.get("bbox"), w, h)
                if reason:
                    yield of_image(reason, k)
            if task == "instance_segmentation":
                reason = _check_polygons(a.get("segmentation"), w, h)
                if reason:
                    yield of_image(reason, k)


def validate_dice(root: str | Path, data: dict[str, Any] | None = None,
                  task_type: str | None = None, check_files: bool = True) -> dict[str, Any]:
    """Check a DICE v1.0 dataset; returns the parsed annotations. Raises DatasetError."""
    root = Path(root)
    data = load_dice(root) if data is None else data
    try:
        task = normalize_task_type(task_type or data.get("task_type"))
    except ConfigError as exc:
        raise DatasetError(f"annotations.json: {exc}") from None
    problems = [f"{p.where}: {p.reason}" for p in dice_issues(root, data, task, check_files)]
    _raise(problems, "invalid DICE dataset")
    data["task_type"] = task
    return data


def primary_class(img: dict[str, Any]) -> Any:
    if isinstance(img.get("annotation"), dict):
        return img["annotation"].get("class_id")
    anns = img.get("annotations") or []
    return anns[0].get("class_id") if anns else None


def image_classes(img: dict[str, Any]) -> set[Any]:
    if isinstance(img.get("annotation"), dict):
        return {img["annotation"].get("class_id")}
    return {a.get("class_id") for a in img.get("annotations") or []}


def assign_splits(images: list[dict[str, Any]], val_fraction: float = 0.2,
                  seed: int = 0) -> dict[Any, str]:
    """image id -> 'train' | 'val' | 'test'. Uses the dataset's splits when it has any;
    otherwise a seeded split stratified by class with every class in val where possible."""
    norm = {"valid": "val", "validation": "val"}
    if any(img.get("split") for img in images):
        return {img["id"]: norm.get(img.get("split") or "train", img.get("split") or "train")
                for img in images}
    rng = random.Random(seed)
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for img in sorted(images, key=lambda i: str(i["id"])):
        groups[str(primary_class(img))].append(img)
    out: dict[Any, str] = {}
    for key in sorted(groups):
        members = groups[key]
        rng.shuffle(members)
        n_val = int(round(len(members) * val_fraction)) if len(members) > 1 else 0
        if len(members) > 1:
            n_val = min(max(n_val, 1), len(members) - 1)
        for j, img in enumerate(members):
            out[img["id"]] = "val" if j < n_val else "train"
    # Multi-label images: bring a class missing from val in, if train keeps an example of it.
    by_id = {img["id"]: img for img in images}
    counts: dict[Any, dict[str, int]] = defaultdict(lambda: {"train": 0, "val": 0})
    for iid, split in out.items():
        for c in image_classes(by_id[iid]):
            counts[c][split] += 1
    for c in sorted(counts, key=str):
        if counts[c]["val"] == 0 and counts[c]["train"] > 1:
            for iid in sorted(out, key=str):
                img_cls = image_classes(by_id[iid])
                if out[iid] == "train" and c in img_cls and all(counts[o]["train"] > 1 for o in img_cls):
                    out[iid] = "val"
                    for o in img_cls:
                        counts[o]["train"] -= 1
                        counts[o]["val"] += 1
                    break
    if len(images) > 1 and "train" not in out.values():  # keep at least one training image
        out[next(iter(out))] = "train"
    return out


def check_splits(splits: dict[Any, str], val_fraction: float | None = None) -> None:
    problems = []
    for name in ("train", "val"):
        if name not in splits.values():
            hint = f" (val_fraction={val_fraction})" if val_fraction is not None else ""
            problems.append(f"split '{name}' is empty{hint}: {len(splits)} image(s) in the dataset")
    _raise(problems, "invalid dataset split")


def _images_in(d: Path) -> int:
    return sum(1 for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if d.is_dir() else 0


def validate_yolo(root: Path) -> dict[str, Any]:
    yml = root / "data.yaml" if (root / "data.yaml").is_file() else root / "data.yml"
    data = read_data_yaml(yml)
    problems = []
    if not yolo_names(data):
        problems.append("data.yaml: missing 'names'")
    base = Path(data.get("path") or root)
    if not base.is_absolute():
        base = root / base
    for split in ("train", "val"):
        rel = data.get(split)
        if not rel:
            problems.append(f"data.yaml: missing '{split}'")
        elif not isinstance(rel, str):
            continue
        elif _images_in(base / rel) == 0:
            problems.append(f"split '{split}' is empty: no images under {rel}")
    _raise(problems, "invalid YOLO dataset")
    return data


def validate_imagefolder(root: Path) -> list[str]:
    problems = []
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir()) if (root / "train").is_dir() else []
    for split in ("train", "val"):
        d = root / split
        if not d.is_dir() or _images_in(d) == 0:
            problems.append(f"split '{split}' is empty: no images under {split}/<class>/")
            continue
        for cls in sorted(p for p in d.iterdir() if p.is_dir()):
            if split == "train" and _images_in(cls) == 0:
                problems.append(f"class folder {split}/{cls.name} has no images")
    _raise(problems, "invalid ImageFolder dataset")
    return classes


def validate_dataset(root: str | Path, task_type: str | None = None) -> str:
    """Validate whatever format ``root`` holds; returns the format name."""
    root = Path(root)
    fmt = detect_format(root)
    if fmt == YOLO:
        validate_yolo(root)
    elif fmt == IMAGEFOLDER:
        validate_imagefolder(root)
    else:
        validate_dice(root, task_type=task_type)
    return fmt
