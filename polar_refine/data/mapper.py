"""`PolarDatasetMapper`: detectron2's ``DatasetMapper`` plus the annotation-only polar targets."""

import re

from detectron2.config import configurable
from detectron2.data import DatasetMapper

from ..modeling.gt_geometry import contour_target_map, ensure_polar_fields, semantic_target_map

__all__ = ["PolarDatasetMapper", "feature_stride"]


def feature_stride(name: str, default: int = 8) -> int:
    """Stride of a detectron2 FPN feature named ``p<N>`` / ``res<N>`` (2 ** N); else ``default``."""
    m = re.fullmatch(r"(?:p|res)(\d+)", name)
    return 2 ** int(m.group(1)) if m else default


class PolarDatasetMapper(DatasetMapper):
    """``DatasetMapper`` that also computes, in the data-loader workers, everything of the polar
    targets that depends only on the annotations:

    * on ``dataset_dict["instances"]`` the ``gt_polar_*`` fields (`gt_geometry.POLAR_FIELDS`:
      padded polygon edges of every part, mass centres, areas, boxes, validity);
    * ``dataset_dict["polar_contour"]``: the contour head's boundary map at
      ``contour_stride``, (ceil(H / stride), ceil(W / stride)) uint8, with
      ``"polar_contour_stride"`` and ``"polar_contour_width"`` so the model can check it drew
      the same thing it would draw;
    * ``dataset_dict["polar_semantic"]``: the semantic head's category map at
      ``semantic_stride`` (int16, category + 1, 0 for background), with
      ``"polar_semantic_stride"``.

    The model uses them when present and computes them itself otherwise, so plain
    ``DatasetMapper`` still trains (slower: the work then runs in the training loop).
    """

    @configurable
    def __init__(self, is_train: bool, *, contour_stride: int = 8, contour_width: int = 1,
                 semantic_stride: int = 0, **kwargs):  # fmt: skip
        """
        Args:
            is_train, kwargs: as detectron2's ``DatasetMapper``.
            contour_stride: stride of the feature the contour head reads (8 for ``p3``); 0 when
                the model has no contour head (no map is drawn).
            contour_width: boundary width in cells (``MODEL.POLAR_REFINE.CONTOUR.BOUNDARY_WIDTH``).
            semantic_stride: stride of the feature the semantic head reads; 0 when the model has
                no semantic head (no map is drawn).
        """
        super().__init__(is_train, **kwargs)
        self.contour_stride = int(contour_stride)
        self.contour_width = int(contour_width)
        self.semantic_stride = int(semantic_stride)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        pr = cfg.MODEL.POLAR_REFINE
        feature = pr.CONTOUR.IN_FEATURE or min(pr.IN_FEATURES, key=feature_stride)
        # the head's logits are UPSAMPLE x finer than the feature it reads
        stride = feature_stride(feature) // max(1, pr.CONTOUR.UPSAMPLE)
        ret["contour_stride"] = stride if pr.CONTOUR.ENABLED else 0
        ret["contour_width"] = pr.CONTOUR.BOUNDARY_WIDTH
        feature = pr.SEMANTIC.IN_FEATURE or min(pr.IN_FEATURES, key=feature_stride)
        ret["semantic_stride"] = feature_stride(feature) if pr.SEMANTIC.ENABLED else 0
        return ret

    def __call__(self, dataset_dict):
        dataset_dict = super().__call__(dataset_dict)
        instances = dataset_dict.get("instances")
        if instances is not None:
            ensure_polar_fields(instances)
        if instances is not None and self.contour_stride > 0:
            size = tuple(dataset_dict["image"].shape[-2:])
            dataset_dict["polar_contour"] = contour_target_map(
                instances, size, self.contour_stride, self.contour_width
            )
            dataset_dict["polar_contour_stride"] = self.contour_stride
            dataset_dict["polar_contour_width"] = self.contour_width
        if instances is not None and self.semantic_stride > 0:
            size = tuple(dataset_dict["image"].shape[-2:])
            dataset_dict["polar_semantic"] = semantic_target_map(
                instances, size, self.semantic_stride
            )
            dataset_dict["polar_semantic_stride"] = self.semantic_stride
        return dataset_dict
