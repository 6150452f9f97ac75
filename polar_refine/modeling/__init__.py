# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""PolarRefine modeling. Importing registers ``PolarRefine`` and ``PolarRefineHead``."""

from .candidates import Candidates, covered_confidence, select_candidates  # noqa: F401
from .contour import ContourHead  # noqa: F401
from .deform import ContourDeformer  # noqa: F401
from .head import POLAR_HEAD_REGISTRY, PolarRefineHead, build_polar_head  # noqa: F401
from .locations import LocationGenerator, Locations, level_size_ranges  # noqa: F401
from .meta_arch import PolarRefine  # noqa: F401
from .postprocess import polar_postprocess, polygons_to_boxes, polygons_to_masks  # noqa: F401
from .refine import PolarRefiner, PolarRefineStage  # noqa: F401
from .sampling import sample_levels  # noqa: F401
from .targets import PolarTargetAssigner  # noqa: F401
