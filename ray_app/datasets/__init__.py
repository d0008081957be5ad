"""Datasets on the platform side: the API's shapes (models), uploads to S3 (uploads), validation
on arrival (inspect, validation), and the synthetic DICE generator for tests and the demo.

The generator's names are loaded on first use (it brings numpy and Pillow), so a client that
imports only the models stays light."""

from typing import Any

_SYNTHETIC = ("make_detection", "make_segmentation", "make_classification", "zip_dataset", "class_color",
              "shape_polygon")
__all__ = list(_SYNTHETIC)


def __getattr__(name: str) -> Any:
    if name in _SYNTHETIC:
        from ray_app.datasets import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module 'ray_app.datasets' has no attribute {name!r}")
