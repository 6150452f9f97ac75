# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""The one bilinear sampler: per-level maps (or the input images) read at points."""

from typing import List, Union

import torch

from .locations import Locations

__all__ = ["sample_images", "sample_levels"]


def sample_levels(
    maps: List[torch.Tensor],
    locs: Locations,
    location: torch.Tensor,
    image: torch.Tensor,
    pts: torch.Tensor,
    channel: Union[torch.Tensor, int, None] = None,
) -> torch.Tensor:
    """Bilinear samples (zeros outside the map) of each location's own level.

    Args:
        maps: per level (N, C, H_l, W_l), laid out as ``locs``.
        locs: the `Locations` of those levels.
        location, image: (P,) the location (an index into ``locs``) and the image of each row.
        pts: (P, S, 2) points (x, y) in cells of that location's level, cell centres at integers
            (the convention of ``grid_sample(align_corners=False)``).
        channel: optional long, broadcastable to (P, S) (an int, (S,) or (P, 1)): point (p, s)
            reads channel ``channel[p, s]`` only.

    Returns:
        (P, S, C), or (P, S) with ``channel``.

    All levels and images at once: the maps are stored flat as one table, rows ordered by
    (level, image, y, x), and each point gathers its 4 taps from its level's block. No host
    synchronisation, and map sizes come from ``locs`` (tensor shapes while tracing).
    """
    table = torch.cat([m.permute(0, 2, 3, 1).reshape(-1) for m in maps])
    num_images = maps[0].shape[0]
    size = locs.map_sizes[location][:, None]  # (P, 1, 2) as (W, H)
    w, h = size[..., 0], size[..., 1]
    base = num_images * locs.level_starts[location][:, None] + image[:, None] * (w * h)
    return _bilinear(table, maps[0].shape[1], base, w, h, pts, channel)


def sample_images(images: torch.Tensor, image: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Bilinear samples (zeros outside) of one (N, C, H, W) batch, e.g. the input images.

    Args:
        images: (N, C, H, W).
        image: (P,) the image of each row.
        pts: (P, S, 2) points (x, y) in pixels, pixel centres at integers.

    Returns:
        (P, S, C).
    """
    c = images.shape[1]
    # 0-dim tensors either way (traced from the shape while tracing), as ``torch.minimum`` needs
    h, w = (torch.as_tensor(s, device=images.device) for s in images.shape[-2:])
    table = images.permute(0, 2, 3, 1).reshape(-1)
    base = image[:, None] * (h * w)
    return _bilinear(table, c, base, w, h, pts)


def _bilinear(table, num_channels, base, w, h, pts, channel=None):
    """The 4 taps of each point gathered from a flat table of ``num_channels``-wide rows: point
    (p, s) reads the (h, w) block starting at row ``base[p]`` (``w``, ``h``: tensors
    broadcastable to (P, S))."""
    x0 = pts[..., 0].floor()
    y0 = pts[..., 1].floor()
    fx = pts[..., 0] - x0
    fy = pts[..., 1] - y0
    if channel is None:
        fx, fy = fx[..., None], fy[..., None]
    x0 = x0.long()
    y0 = y0.long()
    out = 0
    for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                        (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):  # fmt: skip
        xi, yi = x0 + dx, y0 + dy
        valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        row = base + torch.minimum(yi.clamp(min=0), h - 1) * w
        row = row + torch.minimum(xi.clamp(min=0), w - 1)
        if channel is None:
            values = table.view(-1, num_channels)[row]  # (P, S, C)
            valid = valid[..., None]
        else:
            values = table[row * num_channels + channel]  # (P, S)
        out = out + values * (wgt * valid)
    return out
