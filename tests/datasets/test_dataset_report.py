"""The platform's dataset validation report (ray_app.datasets.inspect): pure, no Ray, no S3."""
from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from ray_app.datasets import make_classification, make_detection, make_segmentation, zip_dataset
from ray_app.datasets.inspect import inspect_archive, inspect_tree
from ray_app.datasets.models import MAX_REPORTED_PROBLEMS
from sdk.datasets.archive import ArchiveLimits


def _jpeg(path: Path, size: tuple[int, int] = (32, 24), color: tuple[int, int, int] = (200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "JPEG")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit_dice(root: Path, edit) -> None:
    data = json.loads((root / "annotations.json").read_text())
    edit(data)
    (root / "annotations.json").write_text(json.dumps(data))


def _files(d: Path) -> set[str]:
    return {p.relative_to(d).as_posix() for p in d.rglob("*")}


def _by_file(report) -> dict[str | None, list[str]]:
    out: dict[str | None, list[str]] = {}
    for p in report.problems:
        out.setdefault(p.file, []).append(p.problem)
    return out


# ---------------------------------------------------------------- valid datasets


def test_valid_dice_detection_zip(tmp_path):
    root = make_detection(tmp_path / "shapes", n_images=20, size=64, val_fraction=0.25)
    data = json.loads((root / "annotations.json").read_text())
    want_splits = {"train": 0, "val": 0}
    for img in data["images"]:
        want_splits[img["split"]] += 1
    n_ann = sum(len(img["annotations"]) for img in data["images"])
    archive = zip_dataset(root, tmp_path / "shapes.zip")
    work = tmp_path / "work"

    report = inspect_archive(archive, work)

    assert report.problems == [] and report.problems_total == 0 and report.valid
    assert report.format == "dice"
    assert report.task_type == "object_detection"
    assert report.classes == ["circle", "square", "triangle"]
    assert report.splits == want_splits and want_splits["val"] > 0
    assert report.images == 20
    assert report.annotations == n_ann > 20 - 1
    assert report.seconds > 0
    assert (work / "root" / "annotations.json").is_file()


def test_dice_without_splits_counts_unsplit_and_classes_in_id_order(tmp_path):
    root = make_segmentation(tmp_path / "seg", n_images=6, size=64)
    # classes listed out of id order: the report gives them in class-id order
    _edit_dice(root, lambda d: d["classes"].reverse())
    report = inspect_tree(root)
    assert report.valid, report.problems
    assert report.task_type == "instance_segmentation"
    assert report.classes == ["circle", "square", "triangle"]
    assert report.splits == {"unsplit": 6}


def test_dice_classification_in_a_wrapping_folder_of_a_tar(tmp_path):
    root = make_classification(tmp_path / "cls", n_images=9, size=48, val_fraction=0.3)
    archive = tmp_path / "cls.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(root, arcname="wrapped")
    report = inspect_archive(archive, tmp_path / "work")
    assert report.valid, report.problems
    assert (report.format, report.task_type) == ("dice", "image_classification")
    assert report.images == 9 and report.annotations == 9


def _yolo(root: Path, lines: dict[str, list[str]], names=("cat", "dog"), yaml_name="data.yaml") -> Path:
    """images/{train,val}/<name>.jpg and labels/{train,val}/<name>.txt for each key 'split/name'."""
    (root).mkdir(parents=True, exist_ok=True)
    names_yaml = "\n".join(f"  {i}: {n}" for i, n in enumerate(names))
    (root / yaml_name).write_text(f"path: .\ntrain: images/train\nval: images/val\nnames:\n{names_yaml}\n")
    for key, label_lines in lines.items():
        split, name = key.split("/")
        _jpeg(root / "images" / split / f"{name}.jpg")
        if label_lines is not None:
            lbl = root / "labels" / split / f"{name}.txt"
            lbl.parent.mkdir(parents=True, exist_ok=True)
            lbl.write_text("\n".join(label_lines) + "\n")
    return root


def test_valid_yolo_folder(tmp_path):
    root = _yolo(tmp_path / "y", {
        "train/a": ["0 0.5 0.5 0.2 0.2", "1 0.3 0.3 0.1 0.1"],
        "train/b": ["1 0.5 0.5 1.0 1.0"],  # the whole image is inside
        "train/c": None,                    # no label file: an image without objects
        "val/d": ["0 0.1 0.1 0.2 0.2", ""],
    })
    report = inspect_tree(root)
    assert report.valid, report.problems
    assert report.format == "yolo"
    assert report.task_type == "object_detection"
    assert report.classes == ["cat", "dog"]
    assert report.splits == {"train": 3, "val": 1}
    assert report.images == 4
    assert report.annotations == 4


def test_yolo_polygons_make_instance_segmentation(tmp_path):
    root = _yolo(tmp_path / "y", {
        "train/a": ["0 0.1 0.1 0.5 0.1 0.5 0.5"],
        "val/b": ["1 0.2 0.2 0.8 0.2 0.8 0.8 0.2 0.8"],
    }, yaml_name="data.yml")
    report = inspect_tree(root)
    assert report.valid, report.problems
    assert report.task_type == "instance_segmentation"
    assert report.annotations == 2


def test_valid_imagefolder_tree(tmp_path):
    root = tmp_path / "if"
    for split, n in (("train", 3), ("val", 1)):
        for cls in ("zebra", "apple"):
            for i in range(n):
                _jpeg(root / split / cls / f"{i}.jpg")
    report = inspect_tree(root)
    assert report.valid, report.problems
    assert (report.format, report.task_type) == ("imagefolder", "image_classification")
    assert report.classes == ["apple", "zebra"]
    assert report.splits == {"train": 6, "val": 2}
    assert report.images == 8 and report.annotations == 8


# ---------------------------------------------------------------- problems


def test_broken_images_are_named_in_every_format(tmp_path):
    dice = make_detection(tmp_path / "d", n_images=4, size=64, val_fraction=0.5)
    _truncate(dice / "images" / "img_0002.png")
    report = inspect_tree(dice)
    assert report.format == "dice" and report.images == 4
    assert [p.file for p in report.problems] == ["images/img_0002.png"]
    assert report.problems[0].problem.startswith("cannot decode image:")

    yolo = _yolo(tmp_path / "y", {"train/a": ["0 0.5 0.5 0.2 0.2"], "val/b": None})
    _truncate(yolo / "images" / "val" / "b.jpg")  # a truncated JPEG: header fine, data cut
    report = inspect_tree(yolo)
    assert _by_file(report) == {"images/val/b.jpg": [report.problems[0].problem]}
    assert "cannot decode image" in report.problems[0].problem

    folder = tmp_path / "if"
    for split in ("train", "val"):
        _jpeg(folder / split / "a" / "0.jpg")
    (folder / "train" / "a" / "1.jpg").write_bytes(b"not an image at all")
    report = inspect_tree(folder)
    assert [p.file for p in report.problems] == ["train/a/1.jpg"]
    assert report.problems[0].problem.startswith("cannot decode image:")


def test_dice_bbox_outside_missing_class_and_size_mismatch(tmp_path):
    root = make_detection(tmp_path / "d", n_images=5, size=64, val_fraction=0.4)

    def edit(d):
        d["images"][1]["annotations"][0]["bbox"] = [50, 50, 30, 30]  # 80 > 64
        d["images"][3]["annotations"][0]["class_id"] = 99
        d["images"][4]["width"] = 65
        del d["format_version"]
    _edit_dice(root, edit)

    report = inspect_tree(root)
    got = _by_file(report)
    assert report.problems_total == 4 == len(report.problems)
    assert got["annotations.json"] == ["missing 'format_version'"]
    assert got["images/img_0001.png"] == ["annotation #0: bbox [50, 50, 30, 30] lies outside the 64x64 image"]
    assert got["images/img_0003.png"] == ["annotation #0: unknown class_id 99"]
    assert got["images/img_0004.png"] == ["decoded size 64x64 differs from the declared width x height 65x64"]
    assert report.classes == ["circle", "square", "triangle"]  # still filled in


def test_dice_bbox_within_tolerance_and_unused_class_are_fine(tmp_path):
    root = make_detection(tmp_path / "d", n_images=6, size=64, val_fraction=0.5)

    def edit(d):
        d["images"][0]["annotations"][0]["bbox"] = [0, -0.4, 64.3, 10]  # inside the 0.5 px tolerance
        d["classes"].append({"id": 7, "name": "never-used"})
    _edit_dice(root, edit)
    report = inspect_tree(root)
    assert report.valid, report.problems
    assert report.classes[-1] == "never-used"


def test_dice_missing_file_and_document_problems(tmp_path):
    root = make_detection(tmp_path / "d", n_images=6, size=64, val_fraction=0.5)
    (root / "images" / "img_0001.png").unlink()

    def edit(d):
        d["images"][2]["split"] = "holdout"
        d["images"][0]["id"] = d["images"][2]["id"]
    _edit_dice(root, edit)
    got = _by_file(inspect_tree(root))
    assert got["images/img_0001.png"] == ["file images/img_0001.png is missing"]
    assert got["images/img_0002.png"] == ["duplicate image id", "unknown split 'holdout'"]


def test_dice_splits_without_val_are_a_problem(tmp_path):
    root = make_detection(tmp_path / "d", n_images=6, size=64, val_fraction=0.5)
    _edit_dice(root, lambda d: [img.__setitem__("split", "train") for img in d["images"]])
    report = inspect_tree(root)
    assert [(p.file, p.problem) for p in report.problems] == [("annotations.json", "split 'val' is empty")]


def test_yolo_label_problems(tmp_path):
    root = _yolo(tmp_path / "y", {
        "train/a": ["0 0.95 0.5 0.2 0.2",      # x + w/2 = 1.05: outside
                    "2 0.5 0.5 0.1 0.1",       # 2 classes only
                    "0 0.5 0.5",               # too few values
                    "x 0.5 0.5 0.1 0.1",       # class not an integer
                    "1 0.5 0.5 abc 0.1",       # coordinate not a number
                    "1 0.9995 0.5 0.001 0.1"],  # within the 1e-3 tolerance: fine
        "val/b": ["1 0.5 0.5 0.2 0.2"],
    })
    report = inspect_tree(root)
    assert report.problems_total == 5
    assert {p.file for p in report.problems} == {"labels/train/a.txt"}
    msgs = [p.problem for p in report.problems]
    assert msgs[0].startswith("line 1: box outside the image")
    assert msgs[1] == "line 2: class id 2 not in names (2 classes)"
    assert msgs[2].startswith("line 3: expected 'class x y w h'")
    assert msgs[3] == "line 4: class id 'x' is not an integer"
    assert msgs[4] == "line 5: coordinates are not numbers"
    assert report.annotations == 2


def test_yolo_data_yaml_problems(tmp_path):
    root = tmp_path / "y"
    _jpeg(root / "images" / "train" / "a.jpg")
    (root / "data.yaml").write_text("train: images/train\nval: ../elsewhere\n")
    report = inspect_tree(root)
    assert report.format == "yolo"
    got = _by_file(report)["data.yaml"]
    assert "missing 'names'" in got
    assert "'val': ../elsewhere lies outside the dataset" in got
    assert "split 'val' is empty: no images under ../elsewhere" in got
    assert report.splits == {"train": 1, "val": 0}


def test_imagefolder_val_class_not_in_train(tmp_path):
    root = tmp_path / "if"
    _jpeg(root / "train" / "a" / "0.jpg")
    _jpeg(root / "val" / "a" / "0.jpg")
    _jpeg(root / "val" / "b" / "0.jpg")
    report = inspect_tree(root)
    assert report.classes == ["a"]
    assert [(p.file, p.problem) for p in report.problems] == [("val/b/", "class 'b' is not a class of train/")]


def test_imagefolder_without_val(tmp_path):
    root = tmp_path / "if"
    _jpeg(root / "train" / "a" / "0.jpg")
    report = inspect_tree(root)
    assert [p.file for p in report.problems] == ["val/"]
    assert report.splits == {"train": 1}


def test_unknown_layout(tmp_path):
    (tmp_path / "stuff.txt").write_text("hello")
    report = inspect_tree(tmp_path)
    assert report.format is None and report.problems_total == 1
    assert "unrecognised dataset layout" in report.problems[0].problem
    assert str(tmp_path) not in report.problems[0].problem


def test_problem_list_is_truncated_but_counted(tmp_path):
    n = MAX_REPORTED_PROBLEMS + 30
    root = _yolo(tmp_path / "y", {"train/a": ["5 0.5 0.5 0.1 0.1" for _ in range(n)], "val/b": None})
    report = inspect_tree(root)
    assert len(report.problems) == MAX_REPORTED_PROBLEMS
    assert report.problems_total == n
    assert report.problems[-1].problem.startswith(f"line {MAX_REPORTED_PROBLEMS}:")
    assert not report.valid


# ---------------------------------------------------------------- hostile archives


@pytest.fixture()
def sandbox(tmp_path):
    """(archive dir, work dir) under tmp_path/box; the test checks nothing appears beside them."""
    box = tmp_path / "box"
    (box / "in").mkdir(parents=True)
    return box / "in", box / "work"


def _refused(report, member, reason):
    assert report.format is None
    assert report.problems_total == 1 and len(report.problems) == 1
    assert report.problems[0].file == member
    assert reason in report.problems[0].problem
    assert not report.valid


def test_zip_with_path_traversal(sandbox, tmp_path):
    src, work = sandbox
    archive = src / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("annotations.json", "{}")
        zf.writestr("../evil.txt", "pwned")
    before = _files(tmp_path)
    _refused(inspect_archive(archive, work), "../evil.txt", "path traversal")
    assert not (work / "evil.txt").exists() and not (work.parent / "evil.txt").exists()
    assert _files(tmp_path) - before <= {"box/work", "box/work/root"}


def test_zip_with_absolute_path(sandbox, tmp_path):
    src, work = sandbox
    archive = src / "abs.zip"
    target = tmp_path / "absolute-evil.txt"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr(zipfile.ZipInfo(str(target)), "pwned")  # a ZipInfo keeps the leading '/'
    before = _files(tmp_path)
    _refused(inspect_archive(archive, work), str(target), "absolute path")
    assert not target.exists()
    assert not (work / "root" / "ok.txt").exists()
    assert _files(tmp_path) - before <= {"box/work", "box/work/root"}


def test_tar_with_symlink(sandbox, tmp_path):
    src, work = sandbox
    archive = src / "link.tar"
    with tarfile.open(archive, "w") as tf:
        data = b"{}"
        info = tarfile.TarInfo("annotations.json")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("images/passwd")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    before = _files(tmp_path)
    _refused(inspect_archive(archive, work), "images/passwd", "symbolic link")
    assert not (work / "root" / "images" / "passwd").exists()
    assert not (work / "root" / "annotations.json").exists()  # nothing is written before the check
    assert _files(tmp_path) - before <= {"box/work", "box/work/root"}


def test_zip_bomb(sandbox):
    src, work = sandbox
    archive = src / "bomb.zip"
    chunk = b"\0" * (1024 * 1024)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("zeros.bin", "w", force_zip64=True) as f:
            for _ in range(200):  # 200 MB of zeros: about 200 KB compressed
                f.write(chunk)
    report = inspect_archive(archive, work)
    _refused(report, "zeros.bin", "zip bomb")
    assert not (work / "root" / "zeros.bin").exists()


def test_total_size_bound(sandbox):
    src, work = sandbox
    root = make_detection(src / "ds", n_images=3, size=64)
    archive = zip_dataset(root, src / "ds.zip")
    report = inspect_archive(archive, work, ArchiveLimits(max_total_bytes=1000))
    assert report.format is None and report.problems_total == 1
    assert report.problems[0].file is None
    assert "exceeds the bound of 1000 bytes" in report.problems[0].problem
    assert not (work / "root" / "annotations.json").exists()


def test_not_an_archive(sandbox):
    src, work = sandbox
    bogus = src / "data.zip"
    bogus.write_bytes(b"this is plain text, not a zip")
    report = inspect_archive(bogus, work)
    assert report.format is None and report.problems_total == 1
    assert report.problems[0].file is None
    assert "neither a zip nor a tar archive" in report.problems[0].problem


def test_corrupt_zip_member(sandbox):
    src, work = sandbox
    root = make_detection(src / "ds", n_images=2, size=64)
    archive = zip_dataset(root, src / "ds.zip")
    raw = bytearray(archive.read_bytes())
    name = b"images/img_0000.png"
    at = raw.index(name) + len(name) + 200  # inside the first image's compressed data
    raw[at:at + 20] = bytes(20)
    archive.write_bytes(bytes(raw))
    report = inspect_archive(archive, work)
    assert report.format is None and report.problems_total == 1
    assert "corrupt" in report.problems[0].problem or "CRC" in report.problems[0].problem
