"""Broken datasets are refused before training, with the reason naming the entry."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from ray_app.datasets import make_classification, make_detection, make_segmentation

from sdk import DatasetError, ErrorType
from sdk.datasets import convert_dataset, validate_dataset


def broken(tmp_path: Path, maker, edit: Callable[[dict[str, Any], Path], None], **kw) -> Path:
    root = maker(tmp_path / "ds", n_images=10, size=64, **kw)
    data = json.loads((root / "annotations.json").read_text())
    edit(data, root)
    (root / "annotations.json").write_text(json.dumps(data))
    return root


def refuse(root: Path, *needles: str, target: str = "yolo") -> str:
    with pytest.raises(DatasetError) as info:
        convert_dataset(root, target, root.parent / "out")
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, msg
    assert info.value.error_type is ErrorType.DATASET_ERROR
    assert not (root.parent / "out").exists()  # nothing written for a refused dataset
    return msg


def test_missing_image(tmp_path):
    root = broken(tmp_path, make_detection, lambda d, r: (r / "images" / "img_0003.png").unlink())
    refuse(root, "img_0003.png", "missing")


def test_bad_boxes(tmp_path):
    def edit(d, r):
        d["images"][1]["annotations"][0]["bbox"] = [10, 10, 0, 5]      # zero width
        d["images"][2]["annotations"][0]["bbox"] = [50, 50, 30, 30]    # outside the 64x64 image
        d["images"][3]["annotations"][0]["bbox"] = [-5, 3, 10, 10]     # negative origin
        d["images"][4]["annotations"][0]["bbox"] = [1, 2, 3]           # malformed
    msg = refuse(broken(tmp_path, make_detection, edit), "img_0001.png", "zero or negative size",
                 "img_0002.png", "outside the 64x64 image", "img_0003.png", "img_0004.png")
    assert "annotation #0" in msg and "4 problem(s)" in msg


def test_unknown_class_id(tmp_path):
    def edit(d, r):
        d["images"][5]["annotations"][0]["class_id"] = 99
    refuse(broken(tmp_path, make_detection, edit), "img_0005.png", "unknown class_id 99")


def test_unknown_class_id_classification(tmp_path):
    def edit(d, r):
        d["images"][2]["annotation"]["class_id"] = 7
    refuse(broken(tmp_path, make_classification, edit), "img_0002.png", "unknown class_id 7", target="imagefolder")


def test_bad_polygon(tmp_path):
    def edit(d, r):
        d["images"][0]["annotations"][0]["segmentation"] = [[1, 1, 5, 5]]           # two points
        d["images"][1]["annotations"][0]["segmentation"] = [[1, 1, 5, 1, 9, 1]]     # zero area
        d["images"][2]["annotations"][0]["segmentation"] = [[1, 1, 500, 1, 9, 9]]   # outside
    refuse(broken(tmp_path, make_segmentation, edit), "img_0000.png", "at least 3", "img_0001.png",
           "zero area", "img_0002.png", "outside")


def test_empty_split(tmp_path):
    def edit(d, r):
        for img in d["images"]:
            img["split"] = "train"
    refuse(broken(tmp_path, make_detection, edit), "split 'val' is empty")


def test_empty_split_imagefolder(tmp_path):
    root = tmp_path / "if"
    (root / "train" / "cat").mkdir(parents=True)
    (root / "train" / "cat" / "a.png").write_bytes(b"x")
    (root / "val" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError, match="split 'val' is empty"):
        validate_dataset(root)


def test_too_many_problems_are_summarised(tmp_path):
    def edit(d, r):
        for img in d["images"]:
            img["annotations"][0]["class_id"] = 42
    msg = refuse(broken(tmp_path, make_detection, edit), "10 problem(s)", "(and 5 more)")
    assert msg.count("unknown class_id 42") == 5


def test_malformed_annotations_file(tmp_path):
    root = make_detection(tmp_path / "ds", n_images=4, size=64)
    (root / "annotations.json").write_text("{broken")
    with pytest.raises(DatasetError, match="not valid JSON"):
        convert_dataset(root, "yolo", tmp_path / "out")
    (root / "annotations.json").unlink()
    with pytest.raises(DatasetError, match="unrecognised dataset layout"):
        convert_dataset(root, "yolo", tmp_path / "out")


def test_valid_datasets_pass(tmp_path):
    assert validate_dataset(make_detection(tmp_path / "a", n_images=6, size=64)) == "dice"
    assert validate_dataset(make_segmentation(tmp_path / "b", n_images=6, size=64)) == "dice"
    assert validate_dataset(make_classification(tmp_path / "c", n_images=6, size=64)) == "dice"
