"""The refine regression module (the seed's coarse-to-fine strategy, formula (1))."""

from typing import List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

from ..polar import ray_directions

__all__ = ["PolarRefineModule"]


class PolarRefineModule(nn.Module):
    """Correct coarse radii from FPN features sampled on the coarse contour.

    For a location ``(x_c, y_c)`` (feature-map cells) on a level of stride ``d`` and ray ``k``:
    ``x_k = x_c + r_k sin(theta_k) / d``, ``y_k = y_c + r_k cos(theta_k) / d`` (seed formula (1));
    the level's map (C channels) is sampled bilinearly at the K points, the K vectors are stacked
    into a K*C contour feature, and a 1x1 convolution with K groups (one C->1 linear map per ray)
    gives ``delta_r_k``, scaled by the stride ``d``. The output is ``r = r_coarse + delta_r``.

    It runs only on the locations it is given (positives in training, top-k candidates at test
    time), never densely. Sampling coordinates are sanitised before ``grid_sample``: NaN becomes
    the centre and the normalised grid is clamped to ``[-grid_clamp, grid_clamp]`` (a NaN grid
    crashes grid_sample's CPU backward).
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_rays: int = 36,
        detach_coarse: bool = True,
        grid_clamp: float = 2.0,
    ):
        """
        Args:
            in_channels: C, channels of the sampled feature maps.
            num_rays: K.
            detach_coarse: compute sampling points from detached coarse radii.
            grid_clamp: bound of the normalised sampling grid.
        """
        super().__init__()
        self.num_rays = num_rays
        self.detach_coarse = detach_coarse
        self.grid_clamp = float(grid_clamp)
        self.delta = nn.Conv1d(num_rays * in_channels, num_rays, kernel_size=1, groups=num_rays)
        nn.init.normal_(self.delta.weight, std=0.01)
        nn.init.constant_(self.delta.bias, 0)
        self.register_buffer("directions", ray_directions(num_rays), persistent=False)

    @classmethod
    def from_config(cls, cfg, in_channels: int):
        pr = cfg.MODEL.POLAR_REFINE
        return {
            "in_channels": in_channels,
            "num_rays": pr.NUM_RAYS,
            "detach_coarse": pr.REFINE.DETACH_COARSE,
            "grid_clamp": pr.REFINE.GRID_CLAMP,
        }

    def sample_contour_features(
        self,
        feature: torch.Tensor,
        image_idx: torch.Tensor,
        cells: torch.Tensor,
        radii: torch.Tensor,
        stride: float,
    ) -> torch.Tensor:
        """Bilinear samples of one level at the K contour points of each location.

        Args:
            feature: (N, C, H, W) one FPN level.
            image_idx: (P,) image of each location.
            cells: (P, 2) location (x, y) in feature cells of this level.
            radii: (P, K) radii in input pixels.
            stride: d.

        Returns:
            (P, K, C) contour features.
        """
        n, c, h, w = feature.shape
        p = cells.shape[0]
        pts = cells[:, None, :] + radii[:, :, None] * self.directions / stride  # (P, K, 2) cells
        scale = pts.new_tensor([2.0 / w, 2.0 / h])
        grid = (pts + 0.5) * scale - 1.0  # align_corners=False: cell centres at (i + 0.5) / size
        grid = torch.nan_to_num(grid, nan=0.0).clamp(-self.grid_clamp, self.grid_clamp)
        out = feature.new_zeros(p, self.num_rays, c)
        for i in range(n):
            sel = (image_idx == i).nonzero().flatten()
            if sel.numel() == 0:
                continue
            sampled = F.grid_sample(
                feature[i : i + 1], grid[sel][None], mode="bilinear", align_corners=False
            )  # (1, C, P_i, K)
            out = out.index_put((sel,), sampled[0].permute(1, 2, 0))
        return out

    def forward(
        self,
        features: List[torch.Tensor],
        strides: List[int],
        level_idx: torch.Tensor,
        image_idx: torch.Tensor,
        cells: torch.Tensor,
        coarse_radii: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            features: per level (N, C, H_l, W_l).
            strides: per level stride d_l.
            level_idx, image_idx: (P,) level and image of each location.
            cells: (P, 2) location (x, y) in feature cells of its level.
            coarse_radii: (P, K) input pixels.

        Returns:
            (P, K) refined radii ``r_coarse + delta_r`` (input pixels; may be negative before
            clamping by the caller).
        """
        p = coarse_radii.shape[0]
        if p == 0:
            return coarse_radii + self.delta.bias.sum() * 0.0
        r = coarse_radii.detach() if self.detach_coarse else coarse_radii
        ctx = torch.zeros(
            p, self.num_rays, features[0].shape[1], dtype=features[0].dtype, device=r.device
        )
        stride_per_point = r.new_zeros(p)
        for level, (feat, stride) in enumerate(zip(features, strides)):
            sel = (level_idx == level).nonzero().flatten()
            if sel.numel() == 0:
                continue
            ctx = ctx.index_put(
                (sel,),
                self.sample_contour_features(feat, image_idx[sel], cells[sel], r[sel], stride),
            )
            stride_per_point[sel] = float(stride)
        delta = self.delta(ctx.reshape(p, -1, 1)).squeeze(-1)  # (P, K): one C->1 map per ray
        return coarse_radii + delta * stride_per_point[:, None]
