# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""polar_refine: coarse-to-fine polar-contour instance segmentation for Detectron2.

``import polar_refine`` registers, as side effects:

* ``PolarRefine`` in ``detectron2.modeling.META_ARCH_REGISTRY``;
* ``PolarRefineHead`` in ``polar_refine.modeling.POLAR_HEAD_REGISTRY``;
* ``PolarCOCOEvaluator`` in ``polar_refine.evaluation.EVALUATOR_REGISTRY``;
* the embedded ``shapes_*`` and the ``dsb2018_*`` / ``coco128_seg`` datasets in
  ``DatasetCatalog`` / ``MetadataCatalog``.

Use ``add_polar_refine_config(cfg)`` before merging a PolarRefine YAML, or
``polar_refine.model_zoo.get_config(path)`` for a config shipped with the package.
"""

from . import (
    data,  # noqa: F401  (registers the datasets)
    evaluation,  # noqa: F401  (registers PolarCOCOEvaluator)
    model_zoo,  # noqa: F401  (the shipped configs: get_config_file, get_config)
    modeling,  # noqa: F401  (registers PolarRefine and PolarRefineHead)
    polar,  # noqa: F401
)
from .config import add_polar_refine_config  # noqa: F401

__version__ = "0.1.0"
