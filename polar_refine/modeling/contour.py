"""The global contour perception head (training only) and its boundary targets."""

from typing import List

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.structures import BitMasks, Instances, PolygonMasks
from torch import nn

__all__ = ["ContourHead", "boundary_targets"]


class ContourHead(nn.Module):
    """3x3 convs (ReLU) with the given widths on the finest FPN map, then one boundary logit.

    Output: (N, 1, H, W) logits that a feature cell lies on an object boundary. The seed's global
    contour perception component: it shapes the shared features during training and is never
    run at inference (the meta-architecture only calls it when ``self.training``).
    """

    @configurable
    def __init__(
        self, *, in_channels: int, channels: List[int] = (128, 64, 64, 64), prior_prob=0.01
    ):
        """
        Args:
            in_channels: channels of the input feature map.
            channels: widths of the 3x3 convs (the seed: 128, 64, 64, 64).
            prior_prob: initial boundary probability of the logit.
        """
        super().__init__()
        layers = []
        c_in = in_channels
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
    def from_config(cls, cfg, in_channels: int):
        return {
            "in_channels": in_channels,
            "channels": list(cfg.MODEL.POLAR_REFINE.CONTOUR.CHANNELS),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 1, H, W) boundary logits."""
        return self.logits(self.tower(x))


@torch.no_grad()
def boundary_targets(
    gt_instances: List[Instances], shape_hw, stride: int, width: int = 1, device=None
) -> torch.Tensor:
    """Boundary map drawn from all instance masks of each image, at feature resolution.

    Polygon masks are drawn as closed polylines (``cv2.polylines``, ``width`` cells thick, with
    sub-cell precision) after scaling by ``1 / stride``; bitmap masks are downsampled and their
    morphological gradient is used. Instances flagged in an optional ``gt_iscrowd`` field are
    skipped.

    Args:
        gt_instances: per image, with ``gt_masks`` (PolygonMasks or BitMasks).
        shape_hw: (H, W) of the feature map.
        stride: its stride.
        width: line width in cells.

    Returns:
        (N, 1, H, W) float {0, 1}.
    """
    h, w = int(shape_hw[0]), int(shape_hw[1])
    out = np.zeros((len(gt_instances), 1, h, w), dtype=np.uint8)
    shift = 4  # cv2 fixed-point bits
    for i, inst in enumerate(gt_instances):
        if len(inst) == 0 or not inst.has("gt_masks"):
            continue
        crowd = inst.gt_iscrowd.cpu().numpy() if inst.has("gt_iscrowd") else np.zeros(len(inst))
        masks = inst.gt_masks
        if isinstance(masks, PolygonMasks):
            lines = []
            for polys, is_crowd in zip(masks.polygons, crowd):
                if is_crowd:
                    continue
                for p in polys:
                    p = np.asarray(p, dtype=np.float64).reshape(-1, 2)
                    if p.shape[0] >= 2 and np.isfinite(p).all():
                        # pixel-edge coords -> cell-centre coords of the feature map
                        cells = (p / stride - 0.5) * (1 << shift)
                        lines.append(np.round(cells).astype(np.int32))
            if lines:
                cv2.polylines(out[i, 0], lines, True, 1, thickness=width, shift=shift)
        elif isinstance(masks, BitMasks) and masks.tensor.numel() > 0:
            m = masks.tensor[torch.as_tensor(crowd == 0, device=masks.tensor.device)]
            if m.shape[0] == 0:
                continue
            m = m.float()[:, None]
            mh, mw = m.shape[-2:]
            m = nn.functional.interpolate(m, size=(max(1, mh // stride), max(1, mw // stride)))
            grad = nn.functional.max_pool2d(m, 3, 1, 1) + nn.functional.max_pool2d(-m, 3, 1, 1)
            b = (grad.amax(0)[0] > 0).cpu().numpy().astype(np.uint8)
            hh, ww = min(h, b.shape[0]), min(w, b.shape[1])
            out[i, 0, :hh, :ww] |= b[:hh, :ww]
    return torch.from_numpy(out).to(device=device, dtype=torch.float32)
