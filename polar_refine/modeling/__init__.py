"""PolarRefine modeling. Importing registers ``PolarRefine`` and ``PolarRefineHead``."""

from .contour import ContourHead  # noqa: F401
from .gt_geometry import contour_target_map, ensure_polar_fields, instance_geometry  # noqa: F401
from .head import POLAR_HEAD_REGISTRY, PolarRefineHead, build_polar_head  # noqa: F401
from .meta_arch import PolarRefine  # noqa: F401
from .postprocess import polar_postprocess, polygons_to_boxes, polygons_to_masks  # noqa: F401
from .refine import PolarRefineModule  # noqa: F401
from .targets import PolarTargetAssigner, instance_parts, level_size_ranges  # noqa: F401
