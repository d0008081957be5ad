"""Validation of an uploaded dataset into a full report (DESIGN §10).

Where the trainer's validation (sdk.datasets.validate) stops at the first problems with a
DatasetError, this collects every problem with the file it is in, and fills the report's
format, task type, classes and counts. Pure functions: the platform runs them in a Ray task.

``inspect_archive`` applies the SDK's archive safety rules (traversal, absolute paths, links,
special files, expansion bombs) before anything is written, extracts into ``work_dir`` only,
then calls ``inspect_tree`` on the dataset root.
"""
from __future__ import annotations

import math
import shutil
import tarfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, ImageFile
from sdk.datasets.archive import ArchiveLimits, ArchiveMemberError, safe_extract
from sdk.datasets.formats import (DICE, IMAGE_SUFFIXES, IMAGEFOLDER, YOLO, detect_format, find_root, load_dice,
                                  read_data_yaml, yolo_names)
from sdk.datasets.validate import dice_issues, polygon_area
from sdk.env import normalize_task_type
from sdk.errors import ConfigError, DatasetError

from ray_app.datasets.models import MAX_REPORTED_PROBLEMS, Problem, ValidationReport

YOLO_TOLERANCE = 1e-3  # normalized coordinates: rounding at the image border
EXTRACT_DIR = "root"   # inspect_archive extracts into work_dir / EXTRACT_DIR
_SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


class _Problems:
    """Counts every problem, keeps the first MAX_REPORTED_PROBLEMS."""

    def __init__(self) -> None:
        self.kept: list[Problem] = []
        self.total = 0

    def add(self, file: str | None, problem: str) -> None:
        self.total += 1
        if len(self.kept) < MAX_REPORTED_PROBLEMS:
            self.kept.append(Problem(file=file, problem=problem))


def _decode(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """(width, height) from the header and None, or None and why the image does not decode.
    Decodes every byte (``verify()`` alone misses truncated files); JPEG at reduced scale."""
    try:
        with Image.open(path) as im:
            size = im.size
            if im.format == "JPEG":
                im.draft(im.mode, (1, 1))  # DCT scaling: still reads the whole entropy-coded stream
            im.load()
        return size, None
    except Exception as exc:  # any failure to decode is the finding
        return None, f"cannot decode image: {exc}"


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()


def _images_under(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if _is_image(p)) if d.is_dir() else []


def _rel(root: Path, p: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return p.as_posix()


def _inside(root: Path, p: Path) -> bool:
    base, t = root.resolve(), p.resolve()
    return t == base or base in t.parents


# ---------------------------------------------------------------- DICE


def _class_names(classes: Any) -> list[str]:
    good = [c for c in classes if isinstance(c, dict) and "id" in c] if isinstance(classes, list) else []
    try:
        good = sorted(good, key=lambda c: c["id"])
    except TypeError:  # ids of mixed types: keep the document's order
        pass
    return [str(c.get("name", "")) for c in good]


def _inspect_dice(root: Path, report: ValidationReport, problems: _Problems) -> None:
    try:
        data = load_dice(root)
    except DatasetError as exc:
        problems.add("annotations.json", str(exc))
        return
    try:
        task = normalize_task_type(data.get("task_type"))
    except ConfigError as exc:
        problems.add("annotations.json", str(exc))
        task = ""
    report.task_type = task or None
    report.classes = _class_names(data.get("classes"))
    for issue in dice_issues(root, data, task):
        problems.add(issue.file, issue.detail)

    images = data.get("images")
    if not isinstance(images, list):
        images = []
    splits: dict[str, int] = {}
    decoded: dict[str, tuple[tuple[int, int] | None, str | None]] = {}
    annotations = 0
    for img in images:
        if not isinstance(img, dict):
            continue
        split = img.get("split") or None
        key = _SPLIT_NAMES.get(split, "unsplit") if isinstance(split, str) else "unsplit"
        splits[key] = splits.get(key, 0) + 1
        if isinstance(img.get("annotation"), dict):
            annotations += 1
        elif isinstance(img.get("annotations"), list):
            annotations += len(img["annotations"])
        name = img.get("file_name")
        if not (isinstance(name, str) and name and not name.startswith("/")
                and ".." not in PurePosixPath(name).parts):
            continue  # dice_issues reported it
        path = root / "images" / name
        if name not in decoded:
            decoded[name] = _decode(path) if path.is_file() else (None, None)  # missing: reported
            if decoded[name][1]:
                problems.add(f"images/{name}", str(decoded[name][1]))
        size = decoded[name][0]
        w, h = img.get("width"), img.get("height")
        if size is not None and isinstance(w, (int, float)) and isinstance(h, (int, float)) and (w, h) != size:
            problems.add(f"images/{name}", f"decoded size {size[0]}x{size[1]} differs from the declared "
                                           f"width x height {w}x{h}")
    if any(k != "unsplit" for k in splits):  # the dataset's own splits are used as they are
        for need in ("train", "val"):
            if not splits.get(need) and not (need == "train" and splits.get("unsplit")):
                problems.add("annotations.json", f"split '{need}' is empty")
    report.splits = splits
    report.images = sum(splits.values())
    report.annotations = annotations


# ---------------------------------------------------------------- YOLO


def _label_path(root: Path, image: Path) -> Path:
    """The YOLO convention: the last ``images`` component (inside the dataset) becomes
    ``labels``, the suffix .txt."""
    parts = list(image.relative_to(root).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return root.joinpath(*parts).with_suffix(".txt")


def _check_yolo_line(values: list[str], n_classes: int) -> tuple[str | None, bool]:
    """(problem or None, is_polygon) for one label line split into values."""
    polygon = len(values) > 5
    if len(values) < 5 or (polygon and (len(values) - 1) % 2 != 0) or (polygon and len(values) < 7):
        return (f"expected 'class x y w h' or 'class x1 y1 x2 y2 x3 y3 ...', got {len(values)} values",
                polygon)
    try:
        cid = int(values[0])
    except ValueError:
        return f"class id {values[0]!r} is not an integer", polygon
    try:
        coords = [float(v) for v in values[1:]]
    except ValueError:
        return "coordinates are not numbers", polygon
    if not all(math.isfinite(v) for v in coords):
        return "coordinates are not finite numbers", polygon
    if not 0 <= cid < n_classes:
        return f"class id {cid} not in names ({n_classes} classes)", polygon
    lo, hi = -YOLO_TOLERANCE, 1 + YOLO_TOLERANCE
    if polygon:
        if not all(lo <= v <= hi for v in coords):
            return "polygon outside the image (coordinates must be normalized to [0, 1])", polygon
        if polygon_area(coords) <= 0:
            return "polygon has zero area", polygon
        return None, polygon
    x, y, w, h = coords
    if w <= 0 or h <= 0:
        return f"box {x:g} {y:g} {w:g} {h:g} has zero or negative size", polygon
    if x - w / 2 < lo or y - h / 2 < lo or x + w / 2 > hi or y + h / 2 > hi:
        return f"box outside the image: {x:g} {y:g} {w:g} {h:g} (normalized x y w h)", polygon
    return None, polygon


def yolo_split_images(root: Path, data: dict[str, Any], yml_name: str,
                      problems: _Problems | None = None) -> dict[str, list[Path]]:
    """The images of each split (train, val, test) that data.yaml names, inside ``root`` only
    (a folder, or a .txt list of image paths); what lies outside or is missing is a problem."""
    problems = problems if problems is not None else _Problems()
    base = root
    if isinstance(data.get("path"), str) and data["path"]:
        candidate = root / data["path"]
        # an absolute or escaping path names where the dataset once lay, not the upload: ignore it
        if not Path(data["path"]).is_absolute() and _inside(root, candidate) and candidate.is_dir():
            base = candidate

    split_images: dict[str, list[Path]] = {}
    for split in ("train", "val", "test"):
        value = data.get(split)
        if not value:
            if split != "test":
                problems.add(yml_name, f"missing '{split}'")
            continue
        dirs = value if isinstance(value, list) else [value]
        found: list[Path] = []
        for d in dirs:
            if not isinstance(d, str):
                problems.add(yml_name, f"'{split}': {d!r} is not a path")
                continue
            target = base / d
            if Path(d).is_absolute() or not _inside(root, target):
                problems.add(yml_name, f"'{split}': {d} lies outside the dataset")
                continue
            if target.is_file() and target.suffix == ".txt":  # a list of image paths
                for line in target.read_text(encoding="utf-8", errors="replace").splitlines():
                    if line.strip():
                        p = base / line.strip()
                        if _inside(root, p) and _is_image(p):
                            found.append(p)
                        else:
                            problems.add(_rel(root, target), f"listed image {line.strip()} is missing")
            else:
                found.extend(_images_under(target))
        if not found:
            problems.add(yml_name, f"split '{split}' is empty: no images under {value}")
        split_images[split] = found
    return split_images


def _inspect_yolo(root: Path, report: ValidationReport, problems: _Problems) -> None:
    yml = root / "data.yaml" if (root / "data.yaml").is_file() else root / "data.yml"
    try:
        data = read_data_yaml(yml)
    except Exception as exc:  # unreadable YAML is the finding
        problems.add(yml.name, f"cannot read: {exc}")
        return
    names = yolo_names(data)
    report.classes = names
    if not names:
        problems.add(yml.name, "missing 'names'")
    split_images = yolo_split_images(root, data, yml.name, problems)

    seen: set[Path] = set()
    annotations = 0
    polygons = False
    for split, paths in split_images.items():
        report.splits[split] = len(paths)
        for image in paths:
            if image in seen:
                continue
            seen.add(image)
            _, why = _decode(image)
            if why:
                problems.add(_rel(root, image), why)
            label = _label_path(root, image)
            if not label.is_file():
                continue  # an image without objects
            lrel = _rel(root, label)
            try:
                lines = label.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                problems.add(lrel, f"cannot read label file: {exc}")
                continue
            for n, line in enumerate(lines, start=1):
                values = line.split()
                if not values:
                    continue
                why, is_polygon = _check_yolo_line(values, len(names))
                if why:
                    problems.add(lrel, f"line {n}: {why}")
                else:
                    annotations += 1
                    polygons = polygons or is_polygon
    report.images = len(seen)
    report.annotations = annotations
    report.task_type = "instance_segmentation" if polygons else "object_detection"


# ---------------------------------------------------------------- ImageFolder


def _inspect_imagefolder(root: Path, report: ValidationReport, problems: _Problems) -> None:
    train_classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    report.classes = train_classes
    report.task_type = "image_classification"
    known = set(train_classes)
    for split in ("train", "val", "test"):
        d = root / split
        if not d.is_dir():
            if split != "test":
                problems.add(f"{split}/", f"split '{split}' is missing: expected {split}/<class>/ folders")
            continue
        count = 0
        for entry in sorted(d.iterdir()):
            if _is_image(entry):
                problems.add(_rel(root, entry), "image outside a class folder")
                continue
            if not entry.is_dir():
                continue
            if split != "train" and entry.name not in known:
                problems.add(f"{split}/{entry.name}/", f"class {entry.name!r} is not a class of train/")
            images = _images_under(entry)
            if not images and split == "train":
                problems.add(f"{split}/{entry.name}/", "class folder has no images")
            for image in images:
                _, why = _decode(image)
                if why:
                    problems.add(_rel(root, image), why)
            count += len(images)
        if count == 0:
            problems.add(f"{split}/", f"split '{split}' is empty: no images under {split}/<class>/")
        report.splits[split] = count
    report.images = sum(report.splits.values())
    report.annotations = report.images


# ---------------------------------------------------------------- entry points


def inspect_tree(root: Path) -> ValidationReport:
    """Report on the dataset whose root is ``root``: format, task type, classes, images per
    split, annotations, and every problem with the file (relative to ``root``) it is in."""
    start = time.perf_counter()
    root = Path(root)
    report = ValidationReport()
    problems = _Problems()
    try:
        fmt: str | None = detect_format(root)
    except DatasetError as exc:
        fmt = None
        problems.add(None, str(exc).replace(f" in {root}", ""))
    truncated, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False  # must see truncation
    try:
        if fmt == DICE:
            report.format = "dice"
            _inspect_dice(root, report, problems)
        elif fmt == YOLO:
            report.format = "yolo"
            _inspect_yolo(root, report, problems)
        elif fmt == IMAGEFOLDER:
            report.format = "imagefolder"
            _inspect_imagefolder(root, report, problems)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated
    report.problems = problems.kept
    report.problems_total = problems.total
    report.seconds = time.perf_counter() - start
    return report


def _refused(problem: Problem, start: float) -> ValidationReport:
    return ValidationReport(problems=[problem], problems_total=1, seconds=time.perf_counter() - start)


def inspect_archive(archive: Path, work_dir: Path, limits: ArchiveLimits | None = None) -> ValidationReport:
    """Check ``archive`` against the SDK's safety rules, extract it into ``work_dir`` (and nowhere
    else), and report on the dataset in it. An unsafe, corrupt or non-archive file gives a report
    with that one problem (``file`` = the offending member, when there is one) and no format."""
    start = time.perf_counter()
    archive, work_dir = Path(archive), Path(work_dir)
    dest = work_dir / EXTRACT_DIR
    if dest.exists():
        shutil.rmtree(dest)
    try:
        safe_extract(archive, dest, limits)  # inspects every member before writing anything
    except ArchiveMemberError as exc:
        return _refused(Problem(file=exc.member, problem=exc.reason), start)
    except DatasetError as exc:
        return _refused(Problem(file=None, problem=str(exc)), start)
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError) as exc:  # e.g. a bad CRC mid-way
        return _refused(Problem(file=None, problem=f"archive {archive.name} is corrupt: {exc}"), start)
    report = inspect_tree(find_root(dest))
    report.seconds = time.perf_counter() - start
    return report
