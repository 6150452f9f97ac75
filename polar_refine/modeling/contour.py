"""Training-only dense heads on one FPN level: the global contour perception head and the
semantic head; their targets: `gt_geometry`."""

from typing import List

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

__all__ = ["ContourHead", "SemanticHead"]


class ContourHead(nn.Module):
    """3x3 convs (ReLU) with the given widths on the finest FPN map, then one boundary logit.

    Output: (N, 1, H, W) logits that a feature cell lies on an object boundary. The seed's global
    contour perception component: it shapes the shared features during training and is never
    run at inference (the meta-architecture only calls it when ``self.training``).
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        channels: List[int] = (128, 64, 64, 64),
        prior_prob=0.01,
        num_outputs: int = 1,
        upsample: int = 1,
    ):
        """
        Args:
            in_channels: channels of the input feature map.
            channels: widths of the 3x3 convs (the seed: 128, 64, 64, 64).
            prior_prob: initial probability of every logit.
            num_outputs: logit channels (1: the boundary).
            upsample: bilinear upsampling factor of the tower's output before the logits conv
                (the output is then (N, num_outputs, H * upsample, W * upsample)).
        """
        super().__init__()
        if int(upsample) < 1:
            raise ValueError(f"upsample must be a positive integer, got {upsample}")
        self.upsample = int(upsample)
        layers = []
        c_in = in_channels
        for c in channels:
            conv = nn.Conv2d(c_in, c, 3, padding=1)
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.constant_(conv.bias, 0)
            layers += [conv, nn.ReLU(inplace=True)]
            c_in = c
        self.tower = nn.Sequential(*layers)
        self.logits = nn.Conv2d(c_in, num_outputs, 3, padding=1)
        nn.init.normal_(self.logits.weight, std=0.01)
        nn.init.constant_(self.logits.bias, float(-np.log((1 - prior_prob) / prior_prob)))

    @classmethod
    def from_config(cls, cfg, in_channels: int):
        return {
            "in_channels": in_channels,
            "channels": list(cfg.MODEL.POLAR_REFINE.CONTOUR.CHANNELS),
            "upsample": cfg.MODEL.POLAR_REFINE.CONTOUR.UPSAMPLE,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, num_outputs, H * u, W * u) logits (u: ``upsample``; boundary
        logits for the contour head)."""
        x = self.tower(x)
        if self.upsample > 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        return self.logits(x)


class SemanticHead(ContourHead):
    """The same tower on one FPN level, with one logit per category: (N, C, H, W) ->
    (N, L, H, W) logits that a cell's centre lies inside an object of category l.

    Beyond the seed (CondInst's auxiliary semantic loss): a training-only dense category
    signal on the finest level, which teaches the shared features what each category looks
    like at every cell of an object, not only at its few positive locations. Never run at
    inference, so the exported graph and the test-time cost are unchanged.
    """

    @classmethod
    def from_config(cls, cfg, in_channels: int):
        return {
            "in_channels": in_channels,
            "channels": list(cfg.MODEL.POLAR_REFINE.SEMANTIC.CHANNELS),
            "num_outputs": cfg.MODEL.POLAR_REFINE.NUM_CLASSES,
        }
