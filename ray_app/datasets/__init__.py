"""Datasets on the platform side: the synthetic DICE generator for tests and the demo."""
from .synthetic import (class_color, make_classification, make_detection, make_segmentation, shape_polygon,
                        zip_dataset)

__all__ = ["make_detection", "make_segmentation", "make_classification", "zip_dataset", "class_color",
           "shape_polygon"]
