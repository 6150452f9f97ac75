# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""`PolarDatasetMapper`: detectron2's ``DatasetMapper`` plus the annotation-only polar targets."""

from typing import Dict, Optional

import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone

from ..config import contour_in_feature
from ..gt_geometry import contour_target_map, ensure_polar_fields

__all__ = ["PolarDatasetMapper"]


class PolarDatasetMapper(DatasetMapper):
    """``DatasetMapper`` that always loads instance masks and computes, in the data-loader
    workers, everything of the polar targets that depends only on the annotations:

    * on ``dataset_dict["instances"]`` the ``gt_polar_*`` fields (`gt_geometry.POLAR_FIELDS`:
      padded polygon edges of every part, mass centres, areas, boxes, validity);
    * ``dataset_dict["polar_contour"]``: the contour head's boundary map at
      ``contour_stride``, (ceil(H / stride), ceil(W / stride)) uint8, with
      ``"polar_contour_stride"`` and ``"polar_contour_width"``, which the contour head checks
      against its own.

    Masks are loaded whatever ``MODEL.MASK_ON`` says (it only decides whether the model draws
    ``pred_masks`` at inference): polar targets are made from contours, never from boxes.
    The model computes the targets itself when they are absent (detectron2's plain
    ``DatasetMapper``, with ``MODEL.MASK_ON True``), in the training loop.
    """

    @configurable
    def __init__(self, is_train: bool, *, contour_stride: int = 8, contour_width: int = 1,
                 **kwargs):  # fmt: skip
        """
        Args:
            is_train, kwargs: as detectron2's ``DatasetMapper``.
            contour_stride: stride of the map the contour head reads (8 for ``p3``); 0 when
                the model has no contour head (no map is drawn).
            contour_width: boundary width in cells (``MODEL.POLAR_REFINE.CONTOUR.BOUNDARY_WIDTH``).
        """
        super().__init__(is_train, **kwargs)
        self.contour_stride = int(contour_stride)
        self.contour_width = int(contour_width)

    @classmethod
    def from_config(
        cls, cfg, is_train: bool = True, input_shape: Optional[Dict[str, ShapeSpec]] = None
    ):
        """detectron2's arguments, masks always on, and the contour head's stride from the
        backbone's ``output_shape()`` (``input_shape``, built from ``cfg`` when not given)."""
        ret = super().from_config(cfg, is_train)
        ret["use_instance_mask"] = True
        pr = cfg.MODEL.POLAR_REFINE
        ret["contour_stride"] = 0
        ret["contour_width"] = pr.CONTOUR.BOUNDARY_WIDTH
        if pr.CONTOUR.ENABLED and is_train:
            if input_shape is None:
                # a backbone built only for its output_shape() must not draw from the global
                # RNG: the loader's workers take their seeds from it afterwards
                with torch.random.fork_rng(devices=[]):
                    input_shape = build_backbone(cfg).output_shape()
            stride = input_shape[contour_in_feature(cfg, input_shape)].stride
            ret["contour_stride"] = stride
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
        return dataset_dict
