# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""Datasets of polar_refine.

Importing this package registers (lazily, see `polar_refine.data.datasets`) the synthetic
``shapes_*`` splits and the ``dsb2018_train`` / ``dsb2018_val`` / ``coco128_seg`` datasets.
`register_coco_folder` (and the ``--coco-dataset`` flag of `add_dataset_arguments`) registers a
user's COCO-format folder.
"""

from .datasets import register_all
from .mapper import PolarDatasetMapper
from .shapes import SHAPE_CLASSES, ensure_shapes, generate_shapes
from .user_datasets import (
    add_dataset_arguments,
    check_num_classes,
    register_coco_folder,
    register_datasets_from_args,
)

__all__ = [
    "register_all",
    "PolarDatasetMapper",
    "SHAPE_CLASSES",
    "ensure_shapes",
    "generate_shapes",
    "register_coco_folder",
    "add_dataset_arguments",
    "register_datasets_from_args",
    "check_num_classes",
]

register_all()
