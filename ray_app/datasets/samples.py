"""Sample images of an uploaded dataset with their labels drawn, for the console's dataset page
(issue 16).

After validation has extracted an archive, ``build_samples`` picks up to MAX_SAMPLES images of the
dataset (its train split first, then val and test; within a split round-robin over the classes
of their first label, each class's images in path order), so the same dataset gives the same
samples. Each becomes a JPEG thumbnail of at most THUMB_SIDE px on its longest side, with its
labels in the thumbnail's pixels: ``{"class_name", "xyxy": [x1, y1, x2, y2]}`` plus ``"polygon":
[[x, y], ...]`` for a segmented object, or ``{"class_name"}`` alone for classification. An image
that does not decode is skipped. ``upload_samples`` stores the thumbnails and a samples.json
index beside the archive (uploads.samples_prefix), where GET .../versions/{version}/samples
reads them.
"""
from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, NamedTuple

from PIL import Image, ImageFile
from sdk.datasets.formats import DICE, IMAGEFOLDER, YOLO, load_dice, read_data_yaml, yolo_names

from ray_app.datasets.inspect import (
    _SPLIT_NAMES,
    _check_yolo_line,
    _images_under,
    _inside,
    _label_path,
    _rel,
    yolo_split_images,
)
from ray_app.datasets.uploads import SAMPLES_INDEX, samples_prefix

log = logging.getLogger("ray_app.datasets")

MAX_SAMPLES = 12
THUMB_SIDE = 256
CANDIDATES_PER_SPLIT = 500  # images considered per split (and label files read): big datasets stay quick
SPLIT_RANK = {"train": 0, "unsplit": 0, "val": 1, "test": 2}

Label = dict[str, Any]
# labels of an image in its own pixels, given its decoded (width, height)
LabelsOf = Callable[[int, int], list[Label]]


class _Candidate(NamedTuple):
    rank: int     # SPLIT_RANK of its split
    rel: str      # path relative to the dataset root
    path: Path
    group: str    # the class name of its first label ("" without any): what the round-robin spreads
    labels: LabelsOf


@dataclass
class Sample:
    file: str                 # relative to the dataset root
    width: int                # of the thumbnail
    height: int
    labels: list[Label] = field(default_factory=list)  # in the thumbnail's pixels
    jpeg: bytes = b""

    def entry(self, key: str) -> dict[str, Any]:
        """Its line in samples.json."""
        return {"file": self.file, "width": self.width, "height": self.height, "labels": self.labels, "key": key}


# ---------------------------------------------------------------- labels per format


def _box(class_name: str, x1: float, y1: float, x2: float, y2: float,
         polygon: list[list[float]] | None = None) -> Label:
    label: Label = {"class_name": class_name, "xyxy": [x1, y1, x2, y2]}
    if polygon:
        label["polygon"] = polygon
    return label


def _fixed(labels: list[Label]) -> LabelsOf:
    """Labels that do not depend on the image's size (DICE's are in pixels already)."""
    return lambda w, h: labels


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _dice_label(ann: Any, names: dict[Any, str]) -> Label | None:
    if not isinstance(ann, dict):
        return None
    try:
        name = names.get(ann.get("class_id"), str(ann.get("class_id")))
    except TypeError:  # an unhashable class_id
        return None
    polygon: list[list[float]] | None = None
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        parts = [p for p in seg if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(map(_num, p))]
        if parts:
            flat = max(parts, key=len)
            polygon = [[float(flat[i]), float(flat[i + 1])] for i in range(0, len(flat), 2)]
    bbox = ann.get("bbox")
    if isinstance(bbox, list) and len(bbox) == 4 and all(map(_num, bbox)):
        x, y, w, h = (float(v) for v in bbox)
        return _box(name, x, y, x + w, y + h, polygon)
    if polygon:
        xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
        return _box(name, min(xs), min(ys), max(xs), max(ys), polygon)
    return None


def _dice_candidates(root: Path) -> list[_Candidate]:
    data = load_dice(root)
    classes = data.get("classes")
    classes = classes if isinstance(classes, list) else []
    names: dict[Any, str] = {}
    for c in classes:
        if isinstance(c, dict) and "id" in c:
            try:
                names[c["id"]] = str(c.get("name", c["id"]))
            except TypeError:
                continue
    images = data.get("images")
    images = images if isinstance(images, list) else []
    out: list[_Candidate] = []
    per_split: dict[int, int] = {}
    for img in sorted((i for i in images if isinstance(i, dict) and isinstance(i.get("file_name"), str)),
                      key=lambda i: i["file_name"]):
        name = img["file_name"]
        if not name or name.startswith("/") or ".." in PurePosixPath(name).parts:
            continue
        path = root / "images" / name
        split = img.get("split")
        rank = SPLIT_RANK.get(_SPLIT_NAMES.get(split, "unsplit") if isinstance(split, str) else "unsplit", 0)
        if per_split.get(rank, 0) >= CANDIDATES_PER_SPLIT or not (_inside(root, path) and path.is_file()):
            continue
        per_split[rank] = per_split.get(rank, 0) + 1
        labels: list[Label] = []
        if isinstance(img.get("annotation"), dict):  # classification: one class for the image
            try:
                cid = img["annotation"].get("class_id")
                labels = [{"class_name": names.get(cid, str(cid))}]
            except TypeError:
                labels = []
        elif isinstance(img.get("annotations"), list):
            labels = [lab for a in img["annotations"] if (lab := _dice_label(a, names)) is not None]
        group = labels[0]["class_name"] if labels else ""
        out.append(_Candidate(rank, f"images/{name}", path, group, _fixed(labels)))
    return out


def _yolo_labels(label_file: Path, names: list[str]) -> list[tuple[str, list[float]]]:
    """(class name, normalized coordinates) of each well-formed line (as validation checks them)."""
    if not label_file.is_file():
        return []
    try:
        lines = label_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    out = []
    for line in lines:
        values = line.split()
        if values and _check_yolo_line(values, len(names))[0] is None:
            out.append((names[int(values[0])], [float(v) for v in values[1:]]))
    return out


def _yolo_pixels(parsed: list[tuple[str, list[float]]]) -> LabelsOf:
    def labels(w: int, h: int) -> list[Label]:
        out = []
        for name, c in parsed:
            if len(c) == 4:
                cx, cy, bw, bh = c
                out.append(_box(name, (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h))
            else:
                poly = [[c[i] * w, c[i + 1] * h] for i in range(0, len(c), 2)]
                xs, ys = [p[0] for p in poly], [p[1] for p in poly]
                out.append(_box(name, min(xs), min(ys), max(xs), max(ys), poly))
        return out
    return labels


def _yolo_candidates(root: Path) -> list[_Candidate]:
    yml = root / "data.yaml" if (root / "data.yaml").is_file() else root / "data.yml"
    data = read_data_yaml(yml)
    names = yolo_names(data)
    out: list[_Candidate] = []
    seen: set[Path] = set()
    for split, paths in yolo_split_images(root, data, yml.name).items():
        for image in sorted(paths)[:CANDIDATES_PER_SPLIT]:
            if image in seen:
                continue
            seen.add(image)
            parsed = _yolo_labels(_label_path(root, image), names)
            out.append(_Candidate(SPLIT_RANK[split], _rel(root, image), image, parsed[0][0] if parsed else "",
                                  _yolo_pixels(parsed)))
    return out


def _imagefolder_candidates(root: Path) -> list[_Candidate]:
    out: list[_Candidate] = []
    for split in ("train", "val", "test"):
        d = root / split
        if not d.is_dir():
            continue
        for folder in sorted(p for p in d.iterdir() if p.is_dir()):
            labels = [{"class_name": folder.name}]
            for image in _images_under(folder)[:CANDIDATES_PER_SPLIT]:
                out.append(_Candidate(SPLIT_RANK[split], _rel(root, image), image, folder.name, _fixed(labels)))
    return out


# ---------------------------------------------------------------- picking and thumbnails


def _spread(candidates: list[_Candidate]) -> list[_Candidate]:
    """Split by split (train first); within one, round-robin over the groups (sorted by name),
    each group's images in path order."""
    ordered: list[_Candidate] = []
    for rank in sorted({c.rank for c in candidates}):
        groups: dict[str, list[_Candidate]] = {}
        for c in sorted((c for c in candidates if c.rank == rank), key=lambda c: c.rel):
            groups.setdefault(c.group, []).append(c)
        queues = [groups[g] for g in sorted(groups)]
        for i in range(max(map(len, queues), default=0)):
            ordered.extend(q[i] for q in queues if i < len(q))
    return ordered


def thumbnail(path: Path, side: int = THUMB_SIDE) -> tuple[bytes, tuple[int, int], tuple[int, int]]:
    """(JPEG bytes, the image's (width, height), the thumbnail's): at most ``side`` px on its
    longest side, never enlarged. Raises when the image does not decode."""
    with Image.open(path) as im:
        size = im.size
        if im.format == "JPEG":
            im.draft("RGB", (side, side))  # DCT scaling: decodes a large JPEG at a fraction of its size
        im.load()
        rgb = im.convert("RGB")
    rgb.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=85, optimize=True)
    return buf.getvalue(), size, rgb.size


def _scaled(label: Label, sx: float, sy: float) -> Label:
    out: Label = {"class_name": label["class_name"]}
    if "xyxy" in label:
        x1, y1, x2, y2 = label["xyxy"]
        out["xyxy"] = [round(x1 * sx, 2), round(y1 * sy, 2), round(x2 * sx, 2), round(y2 * sy, 2)]
    if "polygon" in label:
        out["polygon"] = [[round(x * sx, 2), round(y * sy, 2)] for x, y in label["polygon"]]
    return out


def build_samples(root: Path, fmt: str | None, limit: int = MAX_SAMPLES, side: int = THUMB_SIDE) -> list[Sample]:
    """Up to ``limit`` samples of the dataset at ``root`` in format ``fmt`` (the report's:
    dice, yolo or imagefolder). Images that do not decode are skipped."""
    root = Path(root)
    if fmt == YOLO:
        candidates = _yolo_candidates(root)
    elif fmt == IMAGEFOLDER:
        candidates = _imagefolder_candidates(root)
    elif fmt == DICE:
        candidates = _dice_candidates(root)
    else:
        return []
    samples: list[Sample] = []
    truncated, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False  # a cut file is skipped
    try:
        for c in _spread(candidates):
            if len(samples) >= limit:
                break
            try:
                jpeg, (w, h), (tw, th) = thumbnail(c.path, side)
            except Exception as exc:  # any image that does not decode is left out
                log.debug("sample %s skipped: %s", c.rel, exc)
                continue
            sx, sy = tw / w, th / h
            samples.append(Sample(file=c.rel, width=tw, height=th, jpeg=jpeg,
                                  labels=[_scaled(label, sx, sy) for label in c.labels(w, h)]))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated
    return samples


def upload_samples(client: Any, bucket: str, archive_key: str, samples: list[Sample]) -> list[dict[str, Any]]:
    """Put each thumbnail at ``<prefix><i>.jpg`` and the index at ``<prefix>samples.json`` (the
    prefix: uploads.samples_prefix of the archive's key); returns the index."""
    prefix = samples_prefix(archive_key)
    index = []
    for i, sample in enumerate(samples):
        key = f"{prefix}{i}.jpg"
        client.put_object(Bucket=bucket, Key=key, Body=sample.jpeg, ContentType="image/jpeg")
        index.append(sample.entry(key))
    client.put_object(Bucket=bucket, Key=prefix + SAMPLES_INDEX, Body=json.dumps(index).encode(),
                      ContentType="application/json")
    return index
