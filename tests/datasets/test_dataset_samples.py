"""Sample thumbnails of a dataset with their labels (issue 16): ray_app/datasets/samples.py on
DICE detection and segmentation, YOLO and ImageFolder trees made on disk; no platform needed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from sdk.datasets.convert import convert_dataset

from ray_app.datasets import make_classification, make_detection, make_segmentation
from ray_app.datasets.samples import MAX_SAMPLES, THUMB_SIDE, Sample, build_samples, upload_samples
from ray_app.datasets.uploads import samples_prefix
from ray_app.datasets.validation import store_samples


def decoded(sample: Sample) -> Image.Image:
    im = Image.open(io.BytesIO(sample.jpeg))
    assert im.format == "JPEG"
    assert im.size == (sample.width, sample.height)
    assert max(im.size) <= THUMB_SIDE
    return im


def flat_points(polygon: list[list[float]]) -> list[float]:
    assert all(len(p) == 2 for p in polygon)
    return [v for p in polygon for v in p]


def as_json(samples: list[Sample]) -> str:
    return json.dumps([s.entry("k") for s in samples])


def dice_truth(root: Path) -> dict[str, dict]:
    data = json.loads((root / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in data["classes"]}
    return {f"images/{img['file_name']}": {**img, "names": names} for img in data["images"]}


def test_dice_detection_boxes_scaled_train_first_spread_over_classes_and_deterministic(tmp_path):
    root = make_detection(tmp_path / "det", n_images=40, size=300, val_fraction=0.25, max_objects=3)
    samples = build_samples(root, "dice")
    assert len(samples) == MAX_SAMPLES
    truth = dice_truth(root)
    assert len({s.file for s in samples}) == MAX_SAMPLES
    for s in samples:
        decoded(s)
        assert (s.width, s.height) == (THUMB_SIDE, THUMB_SIDE)  # 300 px squares, shrunk
        r = s.width / 300
        img = truth[s.file]
        assert img.get("split", "train") == "train"  # 30 train images: the 12 come from train
        expected = [{"class_name": img["names"][a["class_id"]],
                     "xyxy": [a["bbox"][0] * r, a["bbox"][1] * r, (a["bbox"][0] + a["bbox"][2]) * r,
                              (a["bbox"][1] + a["bbox"][3]) * r]} for a in img["annotations"]]
        assert [lab["class_name"] for lab in s.labels] == [e["class_name"] for e in expected]
        for lab, e in zip(s.labels, expected):
            assert lab["xyxy"] == pytest.approx(e["xyxy"], abs=0.01)
            assert "polygon" not in lab
    # round-robin over the classes of their first label
    assert {s.labels[0]["class_name"] for s in samples[:3]} == {"circle", "square", "triangle"}
    again = build_samples(root, "dice")
    assert as_json(again) == as_json(samples) and [s.jpeg for s in again] == [s.jpeg for s in samples]


def test_dice_segmentation_has_polygons_scaled(tmp_path):
    root = make_segmentation(tmp_path / "seg", n_images=8, size=320, seed=4)
    samples = build_samples(root, "dice")
    assert len(samples) == 8  # fewer images than MAX_SAMPLES: all of them
    truth = dice_truth(root)
    for s in samples:
        decoded(s)
        r = s.width / 320
        anns = truth[s.file]["annotations"]
        assert len(s.labels) == len(anns) > 0
        for lab, a in zip(s.labels, anns):
            flat = a["segmentation"][0]
            assert flat_points(lab["polygon"]) == pytest.approx([v * r for v in flat], abs=0.01)
            x, y, w, h = a["bbox"]
            assert lab["xyxy"] == pytest.approx([x * r, y * r, (x + w) * r, (y + h) * r], abs=0.01)


def write_yolo(root: Path) -> dict[str, list[str]]:
    """A tiny YOLO tree by hand: 1200x600 JPEGs (non-square, large enough for JPEG draft
    decoding), boxes and one polygon, an image without labels, and one that does not decode."""
    (root / "images" / "train").mkdir(parents=True)
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [cat, dog]\n")
    labels = {
        "train/a": ["0 0.5 0.5 0.25 0.5", "1 0.1 0.1 0.2 0.2"],
        "train/b": ["1 0.1 0.2 0.4 0.2 0.3 0.6"],  # a polygon
        "train/c": [],  # no label file: an image without objects
        "val/d": ["0 0.75 0.25 0.1 0.1"],
    }
    for name, lines in labels.items():
        Image.new("RGB", (1200, 600), (90, 120, 150)).save(root / "images" / f"{name}.jpg", quality=90)
        if lines:
            (root / "labels" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (root / "images" / "train" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return labels


def test_yolo_boxes_and_polygons_in_thumbnail_pixels_broken_image_skipped(tmp_path):
    root = tmp_path / "yolo"
    write_yolo(root)
    samples = build_samples(root, "yolo")
    by_file = {s.file: s for s in samples}
    # train first; round-robin over the groups "" (broken, c), cat (a), dog (b); broken.jpg skipped
    assert [s.file for s in samples] == ["images/train/a.jpg", "images/train/b.jpg", "images/train/c.jpg",
                                         "images/val/d.jpg"]
    for s in samples:
        assert (s.width, s.height) == (256, 128)
        decoded(s)
    k = 256 / 1200  # = 128 / 600
    a = by_file["images/train/a.jpg"].labels
    assert [lab["class_name"] for lab in a] == ["cat", "dog"]
    assert a[0]["xyxy"] == pytest.approx([450 * k, 150 * k, 750 * k, 450 * k], abs=0.01)
    assert a[1]["xyxy"] == pytest.approx([0, 0, 240 * k, 120 * k], abs=0.01)
    (b,) = by_file["images/train/b.jpg"].labels
    assert b["class_name"] == "dog"
    assert flat_points(b["polygon"]) == pytest.approx([v * k for v in (120, 120, 480, 120, 360, 360)], abs=0.01)
    assert b["xyxy"] == pytest.approx([120 * k, 120 * k, 480 * k, 360 * k], abs=0.01)
    assert by_file["images/train/c.jpg"].labels == []
    assert by_file["images/val/d.jpg"].labels[0]["xyxy"] == pytest.approx([840 * k, 120 * k, 960 * k, 180 * k],
                                                                          abs=0.01)
    assert as_json(build_samples(root, "yolo")) == as_json(samples)


def test_yolo_converted_from_dice_keeps_the_class_names(tmp_path):
    yolo = convert_dataset(make_detection(tmp_path / "d", n_images=10, size=64, seed=1), "yolo",
                           tmp_path / "yolo", val_fraction=0.2)
    samples = build_samples(yolo, "yolo")
    assert len(samples) == 10
    assert all(s.labels and (s.width, s.height) == (64, 64) for s in samples)  # never enlarged
    assert {lab["class_name"] for s in samples for lab in s.labels} <= {"circle", "square", "triangle"}


def test_imagefolder_class_name_only_spread_over_classes(tmp_path):
    folder = convert_dataset(make_classification(tmp_path / "c", n_images=30, size=64, seed=2),
                             "imagefolder", tmp_path / "folder", val_fraction=0.25)
    samples = build_samples(folder, "imagefolder")
    assert len(samples) == MAX_SAMPLES
    for s in samples:
        decoded(s)
        split, cls = s.file.split("/")[:2]
        assert split == "train" and s.labels == [{"class_name": cls}]
    assert [s.labels[0]["class_name"] for s in samples[:6]] == ["circle", "square", "triangle"] * 2
    assert as_json(build_samples(folder, "imagefolder")) == as_json(samples)


def test_dice_classification_and_unknown_format(tmp_path):
    root = make_classification(tmp_path / "c", n_images=5, size=40)
    samples = build_samples(root, "dice")
    assert [s.labels for s in samples] == [[{"class_name": n}] for n in
                                           ["circle", "square", "triangle", "circle", "square"]]
    assert build_samples(root, None) == []


class FakeS3:
    def __init__(self, fail: bool = False) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.fail = fail

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str) -> None:  # noqa: N803 (boto3's)
        if self.fail:
            raise ConnectionError("S3 is down")
        self.objects[Key] = (Body, ContentType)


class FakeStorage:
    def __init__(self, client: FakeS3) -> None:
        self.client, self.bucket = client, "b"


def test_samples_are_stored_beside_the_archive_and_a_failure_never_fails_validation(tmp_path):
    key = f"datasets/shapes@{'a' * 64}.tar.gz"
    assert samples_prefix(key) == f"datasets/shapes@{'a' * 64}/samples/"
    root = make_detection(tmp_path / "work" / "root", n_images=3, size=64)
    s3 = FakeS3()
    index = upload_samples(s3, "b", key, build_samples(root, "dice"))
    prefix = samples_prefix(key)
    assert sorted(s3.objects) == [f"{prefix}{i}.jpg" for i in range(3)] + [f"{prefix}samples.json"]
    assert json.loads(s3.objects[f"{prefix}samples.json"][0]) == index
    assert [e["key"] for e in index] == [f"{prefix}{i}.jpg" for i in range(3)]
    assert s3.objects[f"{prefix}0.jpg"][1] == "image/jpeg"
    # what the validation task calls: the extracted root under work_dir/root
    assert store_samples(FakeStorage(FakeS3()), key, tmp_path / "work", "dice") == 3
    assert store_samples(FakeStorage(FakeS3(fail=True)), key, tmp_path / "work", "dice") == 0
    assert store_samples(FakeStorage(FakeS3()), key, tmp_path / "work", None) == 0
