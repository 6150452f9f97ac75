# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""The exportable inference graph: one image tensor in, polygon detections out."""

from typing import Tuple

import torch
from torch import nn

from ..modeling.postprocess import polygons_to_boxes

__all__ = ["INPUT_NAME", "OUTPUT_NAMES", "PolarRefineExportGraph"]

INPUT_NAME = "image"
OUTPUT_NAMES = ("polygons", "scores", "classes", "boxes", "coarse_polygons")


class PolarRefineExportGraph(nn.Module):
    """A `PolarRefine` model's whole inference path as a tensor-in, tensors-out module.

    ``forward`` runs the model's own methods (``preprocess_image``: normalisation and padding to
    the size divisibility; backbone; head; ``forward_inference``: candidates, refine, polygons,
    class-aware NMS; polygons clipped to the input image). Everything that depends on the
    image (its size, the number of candidates and of detections) comes from tensor shapes, so a
    trace (TorchScript, ONNX) stays valid for other sizes and contents. Masks are not part of
    the graph: `polar_refine.modeling.polygons_to_masks` draws them from the polygons.
    """

    def __init__(self, model: nn.Module):
        """
        Args:
            model: a `PolarRefine` in eval mode (a batch of one image is exported).
        """
        super().__init__()
        if getattr(model, "nms_type", "box") != "box":
            raise ValueError(
                f"MODEL.POLAR_REFINE.NMS_TYPE {model.nms_type!r} cannot be exported yet (its "
                "greedy loop is data-dependent, a trace would fix it to the sample image); "
                "export with MODEL.POLAR_REFINE.NMS_TYPE box"
            )
        self.model = model

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """
        Args:
            image: (3, H, W) float32 in the model's ``input_format`` (e.g. BGR, 0-255), at the
                network input size (already resized; no padding needed).

        Returns:
            polygons (N, K, 2) float32 (x, y) in input pixels, clipped to the image;
            scores (N,) float32 (``MODEL.POLAR_REFINE.SCORE_FROM``), by decreasing score;
            classes (N,) int64;
            boxes (N, 4) float32 XYXY, the polygons' extents;
            coarse_polygons (N, K, 2) float32, the contours before refinement, clipped.
        """
        model = self.model
        images = model.preprocess_image([{"image": image}])
        all_features = model.backbone(images.tensor)
        features = [all_features[f] for f in model.head_in_features]
        res = model.forward_inference(images, features, model.head(features))[0]
        polygons = res.pred_polygons  # clipped to the image by the model
        boxes = polygons_to_boxes(polygons)
        return polygons, res.scores, res.pred_classes, boxes, res.pred_coarse_polygons
