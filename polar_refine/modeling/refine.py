"""The refine regression module (the seed's coarse-to-fine strategy, formula (1))."""

from typing import List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers.wrappers import shapes_to_tensor
from torch import nn

from ..polar import ray_directions

__all__ = ["PolarRefineModule", "contour_sampling_points"]


def contour_sampling_points(cells, radii, directions, stride, size, grid_clamp: float = 2.0):
    """Seed formula (1) in feature cells, sanitised. (P, 2), (P, K) -> (P, K, 2) (x, y).

    ``directions``: (K, 2) unit ray directions; ``stride``: (P,) each location's level stride;
    ``size``: (P, 2) its map's (W, H). Points are clamped to ``grid_clamp`` map sizes around the
    map (all such points read zeros); non-finite ones land outside the map.
    """
    size = size[:, None, :].to(cells.dtype)  # (P, 1, 2)
    pts = cells[:, None, :] + radii[:, :, None] * directions / stride[:, None, None]
    lo = -(grid_clamp - 1.0) * size / 2 - 1.0
    hi = size - lo - 1.0
    # non-finite points land outside the map (and are then clamped): they read zeros
    pts = torch.nan_to_num(pts, nan=-2.0, posinf=1e6, neginf=-2.0)
    return torch.maximum(torch.minimum(pts, hi), lo)


class PolarRefineModule(nn.Module):
    """Correct coarse radii from FPN features sampled on the coarse contour.

    For a location ``(x_c, y_c)`` (feature-map cells) on a level of stride ``d`` and ray ``k``:
    ``x_k = x_c + r_k sin(theta_k) / d``, ``y_k = y_c + r_k cos(theta_k) / d`` (seed formula (1));
    the level's map (C channels) is sampled bilinearly at the K points, the K vectors are stacked
    into a K*C contour feature, and a 1x1 convolution with K groups (one C->1 linear map per ray,
    ``self.delta``) gives ``delta_r_k``, scaled by the stride ``d``. The output is
    ``r = r_coarse + delta_r``.

    Implementation: bilinear sampling and the per-ray linear map are both linear, so they
    commute: sampling C channels and then projecting them with ``w_k`` equals projecting the map
    with ``w_k`` first (a 1x1 conv to K channels) and sampling channel ``k`` only. The module
    does the latter, which reads 1 value per tap instead of C and is exactly the seed's operator
    (`forward_reference` keeps the literal sample-stack-grouped-conv form; a test checks they
    agree). It runs only on the locations it is given (positives in training, top-k candidates at
    test time). Sampling coordinates are sanitised: NaN/inf radii sample outside the map (zeros),
    so nothing non-finite reaches the gathers or their gradients.
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
            grid_clamp: bound of the sampling points in units of the map size (2.0: up to one
                map size beyond each border; all such points read zeros).
        """
        super().__init__()
        self.num_rays = num_rays
        self.in_channels = in_channels
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

    def contour_points(self, cells, radii, stride, size):
        """Seed formula (1) in feature cells, sanitised: `contour_sampling_points`."""
        return contour_sampling_points(cells, radii, self.directions, stride, size, self.grid_clamp)

    def _sample_projected(self, flat, base, size, pts: torch.Tensor) -> torch.Tensor:
        """Bilinear sample (zeros outside) of projected maps stored flat.

        flat: all levels' (N, K, H_l, W_l) projections, flattened and concatenated; base: (P, K)
        offset of each location's ray-k map in ``flat``; size: (P, 2) that map's (W, H); pts:
        (P, K, 2) in cells (cell centres at integers, the convention of
        ``grid_sample(align_corners=False)``). Returns (P, K).
        """
        w = size[:, None, 0]
        h = size[:, None, 1]
        x0 = pts[..., 0].floor()
        y0 = pts[..., 1].floor()
        fx = pts[..., 0] - x0
        fy = pts[..., 1] - y0
        x0 = x0.long()
        y0 = y0.long()
        out = pts.new_zeros(pts.shape[:2])
        for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                            (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):  # fmt: skip
            xi, yi = x0 + dx, y0 + dy
            valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            idx = base + torch.minimum(yi.clamp(min=0), h - 1) * w
            idx = idx + torch.minimum(xi.clamp(min=0), w - 1)
            out = out + flat[idx] * (wgt * valid)
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

        All levels are handled at once, with no host synchronisation: every level's map is
        projected (a 1x1 conv to K channels), the projections are concatenated flat, and each
        location gathers from its own level's block.
        """
        if not torch.jit.is_tracing() and coarse_radii.shape[0] == 0:
            return coarse_radii + self.delta.bias.sum() * 0.0
        r = coarse_radii.detach() if self.detach_coarse else coarse_radii
        k = self.num_rays
        weight = self.delta.weight.reshape(k, self.in_channels, 1, 1)
        projs = [F.conv2d(feat, weight) for feat in features]  # (N, K, H_l, W_l)
        flat = torch.cat([q.reshape(-1) for q in projs])
        # map shapes as tensors (from the maps' own shapes, so a trace keeps them dynamic)
        shapes = torch.stack([shapes_to_tensor(list(q.shape), r.device) for q in projs])  # (L, 4)
        numel = shapes.prod(1)
        offsets = torch.cat([numel.new_zeros(1), numel[:-1]]).cumsum(0)
        sizes = shapes[:, [3, 2]]  # (L, 2) as (W, H)
        size = sizes[level_idx]  # (P, 2) as (W, H)
        stride = r.new_tensor([float(s) for s in strides])[level_idx]
        pts = self.contour_points(cells, r, stride, size)
        rays = torch.arange(k, device=r.device)
        base = offsets[level_idx, None] + (image_idx[:, None] * k + rays) * (
            size[:, None, 0] * size[:, None, 1]
        )
        delta = self._sample_projected(flat, base, size, pts) + self.delta.bias
        return coarse_radii + delta * stride[:, None]

    def forward_reference(self, features, strides, level_idx, image_idx, cells, coarse_radii):
        """The seed's operator written literally (sample C channels at K points with
        ``grid_sample``, stack to K*C, grouped 1x1 conv). Same arguments and result as
        `forward`; slower, kept for tests and as documentation."""
        r = coarse_radii.detach() if self.detach_coarse else coarse_radii
        p = r.shape[0]
        out = r.new_zeros(p, self.num_rays)
        for level, (feat, stride) in enumerate(zip(features, strides)):
            sel = (level_idx == level).nonzero().flatten()
            if sel.numel() == 0:
                continue
            h, w = feat.shape[-2:]
            n = sel.numel()
            pts = self.contour_points(
                cells[sel],
                r[sel],
                r.new_full((n,), float(stride)),
                r.new_tensor([[w, h]]).expand(n, 2),
            )
            grid = (pts + 0.5) * pts.new_tensor([2.0 / w, 2.0 / h]) - 1.0
            ctx = r.new_zeros(sel.numel(), self.num_rays, feat.shape[1])
            for i in torch.unique(image_idx[sel]).tolist():
                m = (image_idx[sel] == i).nonzero().flatten()
                sampled = F.grid_sample(
                    feat[i : i + 1], grid[m][None], mode="bilinear", align_corners=False
                )  # (1, C, P_i, K)
                ctx[m] = sampled[0].permute(1, 2, 0)
            d = self.delta(ctx.reshape(sel.numel(), -1, 1)).squeeze(-1)  # one C->1 map per ray
            out[sel] = d * float(stride)
        return coarse_radii + out
