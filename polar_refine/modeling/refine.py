# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""The refine regression module (the patent's coarse-to-fine strategy, formula (1)), in stages."""

from typing import List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

from ..polar import ray_directions
from .locations import Locations
from .sampling import sample_levels

__all__ = ["PolarRefiner", "PolarRefineStage", "contour_sampling_points"]

#: Bound of the sampling points, in map sizes around the map (2: up to one map size beyond each
#: border). Every such point reads zeros; the clamp also keeps NaN and huge radii finite.
GRID_CLAMP = 2.0


def contour_sampling_points(cells, radii, directions, stride, size) -> torch.Tensor:
    """The patent's formula (1) in feature cells, sanitised. (P, 2), (P, K) -> (P, K, 2) (x, y).

    ``directions``: (K, 2) unit ray directions; ``stride``: (P,) each location's level stride;
    ``size``: (P, 2) its map's (W, H). Points are clamped to `GRID_CLAMP` map sizes around the
    map (all such points read zeros); non-finite ones land outside the map.
    """
    size = size[:, None, :].to(cells.dtype)  # (P, 1, 2)
    pts = cells[:, None, :] + radii[:, :, None] * directions / stride[:, None, None]
    lo = -(GRID_CLAMP - 1.0) * size / 2 - 1.0
    hi = size - lo - 1.0
    pts = torch.nan_to_num(pts, nan=-2.0, posinf=1e6, neginf=-2.0)
    return torch.maximum(torch.minimum(pts, hi), lo)


class PolarRefineStage(nn.Module):
    """One refine stage: Δr from the features sampled on a contour.

    For a location ``(x_c, y_c)`` (feature cells) on a level of stride ``d`` and ray ``k``:
    ``x_k = x_c + r_k sin(theta_k) / d``, ``y_k = y_c + r_k cos(theta_k) / d`` (the patent's
    formula (1)); the level's map (C channels) is sampled bilinearly at the K points, the K
    vectors are stacked into a K*C contour feature, and a 1x1 convolution with K groups (one
    C->1 linear map per ray, ``self.delta``) gives ``delta_r_k``, scaled by the stride ``d``.

    Implementation: bilinear sampling and the per-ray linear map are both linear, so they
    commute: projecting the map with ray k's weights first (a 1x1 conv to K channels) and
    sampling channel k only is exactly the patent's operator, and reads 1 value per tap instead
    of C (``tests/reference_refine.py`` keeps the literal form; a test checks they agree).
    """

    def __init__(self, in_channels: int, num_rays: int):
        """
        Args:
            in_channels: C, channels of the sampled feature maps.
            num_rays: K.
        """
        super().__init__()
        self.num_rays = num_rays
        self.in_channels = in_channels
        self.delta = nn.Conv1d(num_rays * in_channels, num_rays, kernel_size=1, groups=num_rays)
        nn.init.normal_(self.delta.weight, std=0.01)
        nn.init.constant_(self.delta.bias, 0)
        self.register_buffer("directions", ray_directions(num_rays), persistent=False)
        self.register_buffer("rays", torch.arange(num_rays), persistent=False)

    def forward(
        self,
        features: List[torch.Tensor],
        locs: Locations,
        location: torch.Tensor,
        image: torch.Tensor,
        radii: torch.Tensor,
        detach: bool = True,
    ) -> torch.Tensor:
        """
        Args:
            features: per level (N, C, H_l, W_l), the levels of ``locs``.
            locs: the location grid.
            location, image: (P,) location index (into ``locs``) and image of each row.
            radii: (P, K) the contour to sample on, input pixels.
            detach: compute the sampling points from detached radii.

        Returns:
            (P, K) ``radii + delta_r`` (input pixels; may be negative).
        """
        if not torch.jit.is_tracing() and radii.shape[0] == 0:
            return radii + self.delta.bias.sum() * 0.0
        r = radii.detach() if detach else radii
        k = self.num_rays
        weight = self.delta.weight.reshape(k, self.in_channels, 1, 1)
        projected = [F.conv2d(f, weight) for f in features]  # (N, K, H_l, W_l)
        stride = locs.strides[location]
        pts = contour_sampling_points(
            locs.cells[location], r, self.directions, stride, locs.map_sizes[location]
        )
        delta = sample_levels(projected, locs, location, image, pts, channel=self.rays)
        return radii + (delta + self.delta.bias) * stride[:, None]


class PolarRefiner(nn.Module):
    """The refine stages, in order. Stage 1 corrects the coarse radii; stage s > 1 samples on
    stage s - 1's contour (its radii clamped at 0, as drawn) and adds its own correction. The
    patent has one stage; every stage holds K * (C + 1) parameters.
    """

    @configurable
    def __init__(
        self, *, in_channels: int, num_rays: int = 36, num_stages: int = 1, detach_coarse=True
    ):
        """
        Args:
            in_channels: C, channels of the sampled FPN levels.
            num_rays: K.
            num_stages: number of stages (at least 1).
            detach_coarse: sample on detached radii, so the fine losses do not train the
                previous stage through the sampling coordinates.
        """
        super().__init__()
        if num_stages < 1:
            raise ValueError(f"num_stages must be >= 1, got {num_stages}")
        self.detach_coarse = detach_coarse
        self.stages = nn.ModuleList(
            PolarRefineStage(in_channels, num_rays) for _ in range(num_stages)
        )

    @classmethod
    def from_config(cls, cfg, in_channels: int):
        pr = cfg.MODEL.POLAR_REFINE
        return {
            "in_channels": in_channels,
            "num_rays": pr.NUM_RAYS,
            "num_stages": pr.REFINE.NUM_STAGES,
            "detach_coarse": pr.REFINE.DETACH_COARSE,
        }

    def forward(
        self,
        features: List[torch.Tensor],
        locs: Locations,
        location: torch.Tensor,
        image: torch.Tensor,
        coarse: torch.Tensor,
    ) -> List[torch.Tensor]:
        """
        Args:
            features, locs, location, image: see `PolarRefineStage.forward`.
            coarse: (P, K) coarse radii, input pixels.

        Returns:
            every stage's (P, K) radii, the last one the output.
        """
        out, r = [], coarse
        for s, stage in enumerate(self.stages):
            r = stage(features, locs, location, image, r.clamp(min=0) if s else r,
                      detach=self.detach_coarse)  # fmt: skip
            out.append(r)
        return out
