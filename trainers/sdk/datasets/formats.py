"""Dataset formats: detection of DICE v1.0, YOLO (data.yaml) and ImageFolder trees."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
DICE = "dice"
YOLO = "yolo"
IMAGEFOLDER = "imagefolder"


def _looks_like(d: Path) -> str | None:
    if (d / "annotations.json").is_file():
        return DICE
    if (d / "data.yaml").is_file() or (d / "data.yml").is_file():
        return YOLO
    if (d / "train").is_dir() and any(p.is_dir() for p in (d / "train").iterdir()):
        return IMAGEFOLDER
    return None


def find_root(path: str | Path) -> Path:
    """The dataset root: ``path`` itself, or its single top-level folder (zips often wrap one)."""
    path = Path(path)
    if _looks_like(path):
        return path
    subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX"))]
    if len(subdirs) == 1 and _looks_like(subdirs[0]):
        return subdirs[0]
    return path


def detect_format(path: str | Path) -> str:
    fmt = _looks_like(Path(path))
    if fmt is None:
        raise DatasetError(
            f"unrecognised dataset layout in {path}: expected annotations.json (DICE), "
            "data.yaml (YOLO) or train/<class>/ folders (ImageFolder)")
    return fmt


def load_dice(root: str | Path) -> dict[str, Any]:
    p = Path(root) / "annotations.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"annotations.json not found in {root}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"annotations.json is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DatasetError("annotations.json must hold a JSON object")
    return data


def _scalar(v: str) -> Any:
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        return v[1:-1]
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def read_data_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YOLO data.yaml. Uses PyYAML when present; otherwise a small reader for the
    subset YOLO files use (``key: value``, ``names:`` as a mapping, block list or flow list),
    because the SDK itself depends only on the standard library, boto3 and httpx."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        import yaml
        loaded = yaml.safe_load(text)
        return loaded if isinstance(loaded, dict) else {}
    except ImportError:
        pass
    data: dict[str, Any] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.split(" #")[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] not in " \t-":
            key, _, value = line.partition(":")
            current = key.strip()
            value = value.strip()
            if value.startswith("[") and value.endswith("]"):
                data[current] = [_scalar(x) for x in value[1:-1].split(",") if x.strip()]
            elif value:
                data[current] = _scalar(value)
            else:
                data[current] = None
            continue
        item = line.strip()
        if current is None:
            continue
        if item.startswith("- "):
            if not isinstance(data.get(current), list):
                data[current] = []
            data[current].append(_scalar(item[2:]))
        elif ":" in item:
            if not isinstance(data.get(current), dict):
                data[current] = {}
            k, _, v = item.partition(":")
            data[current][_scalar(k)] = _scalar(v)
    return data


def yolo_names(data: dict[str, Any]) -> list[str]:
    names = data.get("names")
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, list):
        return [str(n) for n in names]
    return []
