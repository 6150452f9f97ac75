"""The contour classifier: re-classifies candidates from their own contour (beyond the seed)."""

from typing import List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers.wrappers import shapes_to_tensor
from torch import nn

from ..polar import ray_directions
from .refine import contour_sampling_points

__all__ = ["ContourClassifier", "sample_features"]


def sample_features(
    features: List[torch.Tensor],
    level_idx: torch.Tensor,
    image_idx: torch.Tensor,
    pts: torch.Tensor,
) -> torch.Tensor:
    """Bilinear samples (zeros outside the map) of every channel of each location's own level.

    Args:
        features: per level (N, C, H_l, W_l).
        level_idx, image_idx: (P,) level and image of each location.
        pts: (P, K, 2) points (x, y) in cells of that level (cell centres at integers, the
            convention of ``grid_sample(align_corners=False)``).

    Returns:
        (P, K, C). All levels at once: the maps are stored flat as one (sum N H_l W_l, C) table
        and each point gathers its 4 taps from its level's block (no host synchronisation; map
        sizes come from tensor shapes, so a trace keeps them dynamic).
    """
    c = features[0].shape[1]
    table = torch.cat([f.permute(0, 2, 3, 1).reshape(-1, c) for f in features])
    shapes = torch.stack([shapes_to_tensor(list(f.shape), pts.device) for f in features])
    numel = shapes[:, 0] * shapes[:, 2] * shapes[:, 3]
    offsets = torch.cat([numel.new_zeros(1), numel[:-1]]).cumsum(0)
    w = shapes[level_idx, 3][:, None]  # (P, 1)
    h = shapes[level_idx, 2][:, None]
    base = offsets[level_idx, None] + image_idx[:, None] * h * w  # (P, 1)
    x0 = pts[..., 0].floor()
    y0 = pts[..., 1].floor()
    fx = (pts[..., 0] - x0)[..., None]
    fy = (pts[..., 1] - y0)[..., None]
    x0 = x0.long()
    y0 = y0.long()
    out = pts.new_zeros(pts.shape[0], pts.shape[1], c)
    for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                        (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):  # fmt: skip
        xi, yi = x0 + dx, y0 + dy
        valid = ((xi >= 0) & (xi < w) & (yi >= 0) & (yi < h))[..., None]
        idx = (
            base + torch.minimum(yi.clamp(min=0), h - 1) * w + torch.minimum(xi.clamp(min=0), w - 1)
        )
        out = out + table[idx] * (wgt * valid)
    return out


class ContourClassifier(nn.Module):
    """Category logits of candidate locations from their contour (beyond the seed).

    The dense classifier decides at one location, whose receptive field rarely covers the
    corners, tips or ends that tell categories apart; this module reads them. For P locations
    with radii (P, K) on a level of stride d:

    * appearance: the level's map (C channels) is sampled bilinearly at the K contour points
      (seed formula (1), as the refine module does) and at the location itself, and the K
      samples are mean- and max-pooled over the rays: 3C values;
    * shape: the radii divided by their mean (K values, the contour's signature) and
      log(mean radius / d) (its scale);
    * an MLP (one hidden layer) maps the 3C + K + 1 values to L + 1 logits, the last one
      background.

    Trained on the positives and the hardest negatives of the dense classifier (cross-entropy),
    it rescores the top-k candidates at test time: a candidate's category becomes the argmax of
    its L category probabilities q, its score sqrt(p * q_l) x centre, p being the dense
    probability that selected it. Parameters: (3C + K + 1) * hidden + hidden * (L + 1).
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_rays: int,
        num_classes: int,
        hidden_dim: int = 128,
        grid_clamp: float = 2.0,
    ):
        """
        Args:
            in_channels: C, channels of the sampled feature maps.
            num_rays: K.
            num_classes: L.
            hidden_dim: width of the hidden layer.
            grid_clamp: as ``MODEL.POLAR_REFINE.REFINE.GRID_CLAMP``.
        """
        super().__init__()
        self.num_rays = num_rays
        self.num_classes = num_classes
        self.grid_clamp = float(grid_clamp)
        self.hidden = nn.Linear(3 * in_channels + num_rays + 1, hidden_dim)
        self.logits = nn.Linear(hidden_dim, num_classes + 1)
        for layer in (self.hidden, self.logits):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0)
        self.register_buffer("directions", ray_directions(num_rays), persistent=False)

    @classmethod
    def from_config(cls, cfg, in_channels: int):
        pr = cfg.MODEL.POLAR_REFINE
        return {
            "in_channels": in_channels,
            "num_rays": pr.NUM_RAYS,
            "num_classes": pr.NUM_CLASSES,
            "hidden_dim": pr.CONTOUR_CLASSIFIER.HIDDEN_DIM,
            "grid_clamp": pr.REFINE.GRID_CLAMP,
        }

    def forward(
        self,
        features: List[torch.Tensor],
        strides: List[int],
        level_idx: torch.Tensor,
        image_idx: torch.Tensor,
        cells: torch.Tensor,
        radii: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            features: per level (N, C, H_l, W_l).
            strides: per level stride d_l.
            level_idx, image_idx: (P,) level and image of each location.
            cells: (P, 2) location (x, y) in feature cells of its level.
            radii: (P, K) contour radii in input pixels (not differentiated through).

        Returns:
            (P, L + 1) logits, the last one background.
        """
        r = torch.nan_to_num(radii.detach(), nan=0.0, posinf=0.0, neginf=0.0).clamp(min=0)
        stride = r.new_tensor([float(s) for s in strides])[level_idx]
        sizes = torch.stack([shapes_to_tensor(list(f.shape), r.device) for f in features])
        size = sizes[level_idx][:, [3, 2]]  # (P, 2) as (W, H)
        pts = contour_sampling_points(cells, r, self.directions, stride, size, self.grid_clamp)
        pts = torch.cat([pts, cells[:, None, :]], dim=1)  # the location itself, last
        samples = sample_features(features, level_idx, image_idx, pts)  # (P, K + 1, C)
        ring = samples[:, :-1]
        mean_r = r.mean(1, keepdim=True)
        shape = torch.cat(
            [r / mean_r.clamp(min=1e-3), (mean_r.clamp(min=1e-3) / stride[:, None]).log()], dim=1
        )
        x = torch.cat([ring.mean(1), ring.amax(1), samples[:, -1], shape], dim=1)
        return self.logits(F.relu(self.hidden(x)))
