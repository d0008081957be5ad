"""DICE -> YOLO / ImageFolder round trips, checked numerically against the image pixels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ray_app.datasets import class_color, make_classification, make_detection, make_segmentation

from sdk.datasets import assign_splits, convert_dataset, detect_format, read_data_yaml


def class_mask(image: Path, class_index: int) -> np.ndarray:
    px = np.asarray(Image.open(image).convert("RGB")).astype(int)
    return (np.abs(px - np.array(class_color(class_index))).sum(axis=2) < 30)


def components_bboxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Pixel bboxes (x0, y0, x1, y1 inclusive) of the connected blobs of a mask (4-connected)."""
    seen = np.zeros_like(mask, dtype=bool)
    out = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        stack, xs, ys = [(y, x)], [], []
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            xs.append(cx), ys.append(cy)
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        out.append((min(xs), min(ys), max(xs), max(ys)))
    return out


def yolo_labels(out: Path):
    for split in ("train", "val"):
        for label in sorted((out / "labels" / split).glob("*.txt")):
            image = out / "images" / split / (label.stem + ".png")
            rows = [list(map(float, line.split())) for line in label.read_text().splitlines()]
            yield split, image, rows


def test_detection_to_yolo_matches_pixels(tmp_path):
    src = make_detection(tmp_path / "det", n_images=24, size=96, seed=3)
    out = convert_dataset(src, "yolo", tmp_path / "yolo")
    data = read_data_yaml(out / "data.yaml")
    assert data["names"] == {0: "circle", 1: "square", 2: "triangle"}
    assert (data["train"], data["val"]) == ("images/train", "images/val")
    n_boxes = 0
    for _, image, rows in yolo_labels(out):
        size = Image.open(image).size[0]
        for cls, cx, cy, w, h in rows:
            n_boxes += 1
            # the box is exactly the extent of one blob of the class colour
            x0, y0 = (cx - w / 2) * size, (cy - h / 2) * size
            x1, y1 = (cx + w / 2) * size - 1, (cy + h / 2) * size - 1
            blobs = components_bboxes(class_mask(image, int(cls)))
            assert any(max(abs(x0 - b[0]), abs(y0 - b[1]), abs(x1 - b[2]), abs(y1 - b[3])) < 0.01
                       for b in blobs), (image.name, (x0, y0, x1, y1), blobs)
        # and every blob of every class has a box
        total_blobs = sum(len(components_bboxes(class_mask(image, c))) for c in range(3))
        assert total_blobs == len(rows)
    ann = json.loads((src / "annotations.json").read_text())
    assert n_boxes == sum(len(i["annotations"]) for i in ann["images"])
    assert detect_format(out) == "yolo"
    assert convert_dataset(out, "yolo") == out  # already YOLO: validated and returned as is


def test_segmentation_to_yolo_polygons_match_pixels(tmp_path):
    src = make_segmentation(tmp_path / "seg", n_images=16, size=96, seed=5)
    out = convert_dataset(src, "yolo", tmp_path / "yolo", task_type="segmentation")
    checked = 0
    for _, image, rows in yolo_labels(out):
        size = Image.open(image).size[0]
        for row in rows:
            cls, coords = int(row[0]), np.array(row[1:]) * size
            poly = [(round(x), round(y)) for x, y in zip(coords[0::2], coords[1::2])]
            drawn = Image.new("L", (size, size), 0)
            ImageDraw.Draw(drawn).polygon(poly, fill=1)
            drawn = np.asarray(drawn).astype(bool)
            pixels = class_mask(image, cls)
            # the polygon, rasterised again, covers one blob of its class exactly
            inter = (drawn & pixels).sum()
            assert inter / drawn.sum() > 0.98 and inter > 20, image.name
            checked += 1
    assert checked > 16


def test_classification_to_imagefolder(tmp_path):
    src = make_classification(tmp_path / "cls", n_images=30, size=64, seed=1)
    out = convert_dataset(src, "imagefolder", tmp_path / "if")
    names = ["circle", "square", "triangle"]
    total = 0
    for split in ("train", "val"):
        for idx, name in enumerate(names):
            files = list((out / split / name).glob("*.png"))
            assert files, f"{split}/{name} is empty"
            for f in files:  # the folder is the class: the image holds that class's colour
                assert class_mask(f, idx).sum() > 100
                total += 1
    assert total == 30


def test_seeded_split_is_deterministic_stratified_and_complete(tmp_path):
    src = make_detection(tmp_path / "det", n_images=40, size=64, seed=2)
    images = json.loads((src / "annotations.json").read_text())["images"]
    a = assign_splits(images, 0.2, seed=0)
    assert a == assign_splits(images, 0.2, seed=0)
    assert a != assign_splits(images, 0.2, seed=1)
    assert set(a) == {i["id"] for i in images}
    val = [i for i in images if a[i["id"]] == "val"]
    assert 6 <= len(val) <= 10
    assert {an["class_id"] for i in val for an in i["annotations"]} == {0, 1, 2}


def test_existing_splits_are_kept(tmp_path):
    src = make_detection(tmp_path / "det", n_images=20, size=64, val_fraction=0.25)
    images = json.loads((src / "annotations.json").read_text())["images"]
    out = convert_dataset(src, "yolo", tmp_path / "yolo")
    expected_val = sorted(i["file_name"] for i in images if i["split"] == "val")
    assert sorted(p.name for p in (out / "images" / "val").iterdir()) == expected_val


def test_conversion_refuses_to_wipe_a_foreign_folder(tmp_path):
    src = make_detection(tmp_path / "det", n_images=8, size=64)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("x")
    with pytest.raises(Exception, match="not empty"):
        convert_dataset(src, "yolo", precious)
    assert (precious / "keep.txt").exists()
    out = convert_dataset(src, "yolo", tmp_path / "y")
    assert convert_dataset(src, "yolo", out) == out  # its own earlier output is replaced
