# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""Evaluation of polygon (polar-contour) predictions.

Importing this package registers `PolarCOCOEvaluator` in `EVALUATOR_REGISTRY`.
"""

from .polar_coco_evaluation import (
    PolarCOCOEvaluator,
    instances_to_coco_json_polygons,
    polar_ceiling_iou,
    polygon_parts_to_rle,
    polygons_to_rles,
)
from .registry import EVALUATOR_REGISTRY, build_evaluator

__all__ = [
    "EVALUATOR_REGISTRY",
    "build_evaluator",
    "PolarCOCOEvaluator",
    "polygons_to_rles",
    "polygon_parts_to_rle",
    "polar_ceiling_iou",
    "instances_to_coco_json_polygons",
]
