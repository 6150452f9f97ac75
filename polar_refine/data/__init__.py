"""Datasets of polar_refine.

Importing this package registers (lazily, see `polar_refine.data.datasets`) the synthetic
``shapes_*`` splits and the ``dsb2018_train`` / ``dsb2018_val`` / ``coco128_seg`` datasets.
"""

from .datasets import register_all
from .mapper import PolarDatasetMapper
from .shapes import SHAPE_CLASSES, ensure_shapes, generate_shapes

__all__ = [
    "register_all",
    "PolarDatasetMapper",
    "SHAPE_CLASSES",
    "ensure_shapes",
    "generate_shapes",
]

register_all()
