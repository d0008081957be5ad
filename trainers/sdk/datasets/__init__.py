"""Dataset handling for trainers: formats, validation, conversion, safe archives, node cache."""
from .archive import ArchiveLimits, inspect_archive, safe_extract
from .cache import DatasetCache, materialize
from .convert import convert_dataset, dice_to_imagefolder, dice_to_yolo
from .fetch import DatasetSource, fetch_into_cache, resolve_source
from .formats import DICE, IMAGEFOLDER, YOLO, detect_format, find_root, load_dice, read_data_yaml
from .validate import assign_splits, check_splits, validate_dataset, validate_dice

__all__ = [
    "ArchiveLimits", "inspect_archive", "safe_extract", "DatasetCache", "materialize",
    "convert_dataset", "dice_to_imagefolder", "dice_to_yolo", "DatasetSource", "fetch_into_cache",
    "resolve_source", "DICE", "IMAGEFOLDER", "YOLO", "detect_format", "find_root", "load_dice",
    "read_data_yaml", "assign_splits", "check_splits", "validate_dataset", "validate_dice",
]
