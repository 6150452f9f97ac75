# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""The polar head: classification tower (category + centre) and coarse radius regression tower."""

import math
from typing import List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, get_norm
from detectron2.utils.registry import Registry
from torch import nn

__all__ = ["POLAR_HEAD_REGISTRY", "PolarRefineHead", "build_polar_head"]

POLAR_HEAD_REGISTRY = Registry("POLAR_HEAD")
POLAR_HEAD_REGISTRY.__doc__ = """
Registry for the dense polar head of PolarRefine. A head is built as
``head(cfg, input_shape: List[ShapeSpec])`` and its ``forward(features)`` returns three lists (one
entry per level) ``(cls_logits (N, L, H, W), ctr_logits (N, 1, H, W), coarse_radii (N, K, H, W))``,
the radii positive and in input-image pixels.
"""


def build_polar_head(cfg, input_shape: List[ShapeSpec]) -> nn.Module:
    """Build the head named by ``cfg.MODEL.POLAR_REFINE.HEAD_NAME``."""
    return POLAR_HEAD_REGISTRY.get(cfg.MODEL.POLAR_REFINE.HEAD_NAME)(cfg, input_shape)


def _tower(in_channels: int, channels: int, num_convs: int, norm: str) -> nn.Sequential:
    layers = []
    for i in range(num_convs):
        conv = nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=not norm)
        nn.init.normal_(conv.weight, std=0.01)
        if conv.bias is not None:
            nn.init.constant_(conv.bias, 0)
        layers.append(conv)
        if norm:
            # GN with 32 groups needs >= 32 channels; narrow towers use fewer groups.
            layers.append(
                nn.GroupNorm(min(32, channels), channels)
                if norm == "GN"
                else get_norm(norm, channels)
            )
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


@POLAR_HEAD_REGISTRY.register()
class PolarRefineHead(nn.Module):
    """Shared-across-levels dense head.

    * classification tower: ``num_convs`` x (3x3 conv, norm, ReLU), then the category logits
      (L channels) and the centre-confidence logit (1 channel): the patent's classification
      component;
    * regression tower: ``num_convs`` x (3x3 conv, norm, ReLU), then K radii
      ``r = stride_l * exp(min(scale_l * x, max_log_radius))`` in input pixels, with a learnable
      ``scale_l`` per level (PolarMask's exp(scale * x), expressed in units of the level stride
      so every level starts with radii of about one stride).

    The radius conv, its scale and ``exp`` always run in float32, also under autocast: in
    bf16 a radius of 501.3 px reads 502.0, and the polar IoU and the contour points inherit
    that error. The towers follow autocast.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        num_classes: int,
        num_rays: int = 36,
        num_convs: int = 4,
        channels: int = 0,
        norm: str = "GN",
        prior_prob: float = 0.01,
        max_log_radius: float = 10.0,
    ):
        """
        Args:
            input_shape: one ShapeSpec per level (same channel count on every level).
            num_classes: L.
            num_rays: K.
            num_convs: convs per tower.
            channels: tower width; 0 means the input channel count.
            norm: "GN", "BN", "" ...
            prior_prob: initial foreground probability of the category logits.
            max_log_radius: clamp of ``scale_l * x`` before exp().
        """
        super().__init__()
        in_channels = {s.channels for s in input_shape}
        assert len(in_channels) == 1, f"all levels need the same channel count, got {in_channels}"
        in_channels = in_channels.pop()
        channels = channels or in_channels
        self.num_classes = num_classes
        self.num_rays = num_rays
        self.strides = [s.stride for s in input_shape]
        self.max_log_radius = float(max_log_radius)

        self.cls_tower = _tower(in_channels, channels, num_convs, norm)
        self.reg_tower = _tower(in_channels, channels, num_convs, norm)
        self.cls_logits = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.ctr_logits = nn.Conv2d(channels, 1, 3, padding=1)
        self.radius_pred = nn.Conv2d(channels, num_rays, 3, padding=1)
        for layer in (self.cls_logits, self.ctr_logits, self.radius_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))
        self.scales = nn.Parameter(torch.ones(len(input_shape)))

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        pr = cfg.MODEL.POLAR_REFINE
        return {
            "input_shape": input_shape,
            "num_classes": pr.NUM_CLASSES,
            "num_rays": pr.NUM_RAYS,
            "num_convs": pr.NUM_CONVS,
            "channels": pr.HEAD_CHANNELS,
            "norm": pr.NORM,
            "prior_prob": pr.PRIOR_PROB,
            "max_log_radius": pr.MAX_LOG_RADIUS,
        }

    def forward(self, features: List[torch.Tensor]):
        """
        Args:
            features: per level (N, C, H_l, W_l).

        Returns:
            cls_logits: per level (N, L, H_l, W_l);
            ctr_logits: per level (N, 1, H_l, W_l);
            coarse_radii: per level (N, K, H_l, W_l), > 0, input pixels, float32.
        """
        assert len(features) == len(self.strides), (len(features), len(self.strides))
        cls_logits, ctr_logits, radii = [], [], []
        for level, x in enumerate(features):
            c = self.cls_tower(x)
            cls_logits.append(self.cls_logits(c))
            ctr_logits.append(self.ctr_logits(c))
            radii.append(self._radii(self.reg_tower(x), level))
        return cls_logits, ctr_logits, radii

    def _radii(self, t: torch.Tensor, level: int) -> torch.Tensor:
        """Regression-tower output (N, C, H, W) -> (N, K, H, W) float32 radii in input pixels."""
        if torch.is_autocast_enabled(t.device.type):
            with torch.autocast(t.device.type, enabled=False):
                return self._radii(t.float(), level)
        w, b = self.radius_pred.weight, self.radius_pred.bias
        r = F.conv2d(t.float(), w.float(), b.float(), padding=1) * self.scales[level].float()
        return r.clamp(max=self.max_log_radius).exp() * self.strides[level]
