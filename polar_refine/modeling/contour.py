# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""The global contour perception head (training only): boundary logits, targets and loss."""

import logging
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.utils.logger import log_first_n
from torch import nn

from ..config import contour_in_feature
from ..gt_geometry import contour_target_map
from .losses import contour_loss, reduce_mean

__all__ = ["ContourHead"]


class ContourHead(nn.Module):
    """3x3 convs (ReLU) with the given widths on one FPN map, then one boundary logit per cell.

    The patent's global contour perception component: it shapes the shared features during
    training and is never run at inference (the meta-architecture only calls it in training).
    Like detectron2's ``SemSegFPNHead`` it owns its targets (`targets`) and its loss:
    ``forward(features, targets) -> (logits, {"loss_contour": ...})``.

    Targets are boundary maps at the head's stride (`gt_geometry.contour_target_map`), drawn by
    `polar_refine.data.PolarDatasetMapper` in the loader workers (``polar_contour``), or here
    from the instances when the loader did not draw them (detectron2's plain ``DatasetMapper``).
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: ShapeSpec,
        in_feature: str,
        channels: List[int] = (128, 64, 64, 64),
        boundary_width: int = 1,
        loss_weight: float = 1.0,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        prior_prob: float = 0.01,
    ):
        """
        Args:
            input_shape: channels and stride of the map it reads.
            in_feature: the backbone feature it reads (the finest FPN level by default).
            channels: widths of the 3x3 convs (the patent: 128, 64, 64, 64).
            boundary_width: width of the boundary band in cells.
            loss_weight: weight of its focal loss (L_contour).
            focal_loss_alpha, focal_loss_gamma: of the focal loss.
            prior_prob: initial boundary probability of every cell.
        """
        super().__init__()
        self.in_feature = in_feature
        self.stride = int(input_shape.stride)
        self.boundary_width = int(boundary_width)
        self.loss_weight = loss_weight
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        layers = []
        c_in = input_shape.channels
        for c in channels:
            conv = nn.Conv2d(c_in, c, 3, padding=1)
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.constant_(conv.bias, 0)
            layers += [conv, nn.ReLU(inplace=True)]
            c_in = c
        self.tower = nn.Sequential(*layers)
        self.logits = nn.Conv2d(c_in, 1, 3, padding=1)
        nn.init.normal_(self.logits.weight, std=0.01)
        nn.init.constant_(self.logits.bias, float(-np.log((1 - prior_prob) / prior_prob)))

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        pr = cfg.MODEL.POLAR_REFINE
        feature = contour_in_feature(cfg, input_shape)
        return {
            "input_shape": input_shape[feature],
            "in_feature": feature,
            "channels": list(pr.CONTOUR.CHANNELS),
            "boundary_width": pr.CONTOUR.BOUNDARY_WIDTH,
            "loss_weight": pr.CONTOUR.LOSS_WEIGHT,
            "focal_loss_alpha": pr.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": pr.FOCAL_LOSS_GAMMA,
        }

    def forward(self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None):
        """
        Args:
            features: the backbone's maps by name; ``in_feature`` (N, C, H, W) is read.
            targets: (N, 1, H, W) boundary targets (`targets`), or None (no loss).

        Returns:
            logits (N, 1, H, W), and ``{"loss_contour": scalar}`` (``{}`` without targets).
        """
        logits = self.logits(self.tower(features[self.in_feature]))
        if targets is None:
            return logits, {}
        count = reduce_mean(targets.sum()).clamp(min=1.0)
        loss = contour_loss(
            logits.float(), targets, self.focal_loss_alpha, self.focal_loss_gamma, count
        )
        return logits, {"loss_contour": self.loss_weight * loss}

    def targets(self, batched_inputs, gt_instances, image_sizes, shape_hw) -> torch.Tensor:
        """(N, 1, H, W) float boundary targets, zero-padded to the batch-padded map size.

        Args:
            batched_inputs: detectron2's per-image dicts (``polar_contour`` when the loader drew
                the map).
            gt_instances: per image the ground truth, on the model's device.
            image_sizes: per image its (h, w) before batch padding.
            shape_hw: (H, W) of the map the head reads.

        The loader's map (``polar_contour``) is used when it was drawn at this head's stride
        and width; a map drawn otherwise is an error (the loader and the model disagree);
        without one the map is drawn here, on the host, and a warning says so once.
        """
        height, width = int(shape_hw[0]), int(shape_hw[1])
        device = gt_instances[0].gt_boxes.device if gt_instances else None
        out = []
        for x, inst, size in zip(batched_inputs, gt_instances, image_sizes):
            m = x.get("polar_contour")
            if m is None:
                log_first_n(
                    logging.WARNING,
                    "contour targets are drawn in the training loop; train with "
                    "polar_refine.data.PolarDatasetMapper to draw them in the loader workers",
                    n=1,
                )
                m = contour_target_map(inst, size, self.stride, self.boundary_width)
            elif (x.get("polar_contour_stride"), x.get("polar_contour_width")) != (
                self.stride,
                self.boundary_width,
            ):
                raise ValueError(
                    f"the loader drew contour targets at stride {x.get('polar_contour_stride')}, "
                    f"width {x.get('polar_contour_width')}; the contour head predicts at stride "
                    f"{self.stride}, width {self.boundary_width} (build PolarDatasetMapper from "
                    "the same config as the model)"
                )
            m = m.to(device)[:height, :width]
            out.append(F.pad(m, (0, width - m.shape[1], 0, height - m.shape[0])))
        return torch.stack(out)[:, None].float()
