# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""Inference candidates: per-level selection, and the scores of their shapes."""

import math
from typing import List, NamedTuple, Optional

import torch

from .locations import Locations
from .sampling import sample_levels
from .shape_nms import polar_inside

__all__ = [
    "Candidates",
    "select_candidates",
    "confidence_maps",
    "covered_confidence",
    "cover_window",
]


class Candidates(NamedTuple):
    """Detection candidates of a batch, one row each (P in all)."""

    image: torch.Tensor  # (P,) long: image of the batch
    location: torch.Tensor  # (P,) long: index into the batch's `Locations`
    classes: torch.Tensor  # (P,) long: category
    cls_prob: torch.Tensor  # (P,) float: its category probability at the location
    ctr_prob: torch.Tensor  # (P,) float: centre probability at the location
    coarse: torch.Tensor  # (P, K) float: coarse radii, input pixels

    def select(self, index: torch.Tensor) -> "Candidates":
        """The rows ``index`` (a bool mask or long indices) of every field."""
        return Candidates(*(t[index] for t in self))


def select_candidates(
    cls_logits: List[torch.Tensor],
    ctr_logits: List[torch.Tensor],
    coarse: List[torch.Tensor],
    locs: Locations,
    score_thresh: float,
    topk: int,
) -> Candidates:
    """Per image and level: (location, category) pairs whose score sqrt(category x centre
    probability) exceeds ``score_thresh``, at most ``topk`` of them, by decreasing score.

    detectron2's FCOS rule: the geometric mean of the two probabilities is the score that is
    thresholded, ranked and returned (on the probability scale, so a threshold such as 0.3
    means what it means for FCOS); it orders candidates as the patent's product does. Then
    detectron2's dense-detector selection (threshold, then top-k of the kept), with k =
    min(top-k, kept) taken from tensor shapes so that a trace keeps it dynamic (no Python
    branch on values).

    Args:
        cls_logits, ctr_logits, coarse: per level (N, L, H, W), (N, 1, H, W), (N, K, H, W).
        locs: the `Locations` of those levels.
    """
    rows, start = [], 0  # start: the level's first location (a tensor while tracing)
    for cl, ct, rd in zip(cls_logits, ctr_logits, coarse):
        num_cls, h, w = cl.shape[1:]
        for i in range(cl.shape[0]):
            p = cl[i].flatten(1).sigmoid().t()  # (HW, L)
            c = ct[i, 0].flatten().sigmoid()  # (HW,)
            s = (p * c[:, None]).sqrt().flatten()  # (HW * L,) location-major
            keep = (s > score_thresh).nonzero().flatten()
            num = keep.shape[0]  # a tensor while tracing
            k = torch.clamp(num, max=topk) if isinstance(num, torch.Tensor) else min(num, topk)
            keep = keep[s[keep].topk(k)[1]]
            loc = keep // num_cls
            rows.append(
                Candidates(
                    torch.full_like(loc, i),
                    loc + start,
                    keep % num_cls,
                    p.flatten()[keep],
                    c[loc],
                    rd[i].flatten(1)[:, loc].t(),
                )
            )
        start = start + h * w
    return Candidates(*(torch.cat(x) for x in zip(*rows)))


def cover_window(strides: List[int], size_ranges: List[tuple]) -> int:
    """Half-width R, in cells, of the square of locations `covered_confidence` tests: the largest
    object size a bounded level handles, in its strides (8 for COCO's P3-P7 ranges). A polygon
    reaching farther than R cells from its centre is counted within the window only."""
    bounded = [hi / s for s, (_, hi) in zip(strides, size_ranges) if math.isfinite(hi)]
    return max(1, math.ceil(max(bounded, default=8.0)))


def confidence_maps(cls_logits: List[torch.Tensor], ctr_logits: List[torch.Tensor]):
    """Per level (N, L + 1, H, W): the L category probabilities, then the centre probability."""
    return [torch.cat([c.sigmoid(), t.sigmoid()], 1) for c, t in zip(cls_logits, ctr_logits)]


def covered_confidence(
    maps: List[torch.Tensor],
    locs: Locations,
    image: torch.Tensor,
    location: torch.Tensor,
    radii: torch.Tensor,
    window: int,
    classes: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Mean confidence over the locations a polar polygon covers, on its own level (the
    patent's "segmentation confidence level" of a candidate edge shape, and its classification
    from the covered pixels).

    The locations tested are the (2R + 1)^2 cells around the candidate's own (R = ``window``);
    a cell counts when its centre is inside the polygon (`polar_inside`, exact for a polygon
    star-shaped from its centre) and on the map. The candidate's own cell always counts.

    Args:
        maps: `confidence_maps`, per level (N, L + 1, H, W).
        locs: the `Locations` of those levels.
        image, location: (P,) image and location of each candidate.
        radii: (P, K) its polygon around the location's centre, input pixels.
        window: R.
        classes: (P,) long, or None.

    Returns:
        with ``classes``: (P,) the mean of (category ``classes[p]`` x centre) probability;
        without: (P, L) the mean of each category's probability.
    """
    r = torch.arange(-window, window + 1, device=radii.device, dtype=torch.float32)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    d = torch.stack([dx.flatten(), dy.flatten()], 1)  # (S, 2) cell offsets
    cells = locs.cells[location][:, None] + d  # (P, S, 2)
    size = locs.map_sizes[location][:, None]  # (P, 1, 2) as (W, H)
    on_map = ((cells >= 0) & (cells < size)).all(-1)
    offsets = d * locs.strides[location][:, None, None]  # (P, S, 2) input pixels
    inside = polar_inside(offsets, torch.zeros_like(offsets[:, 0]), radii.float())
    weight = (on_map & (inside | (d == 0).all(-1))).float()  # (P, S)
    count = weight.sum(1)
    if classes is not None:
        cat = sample_levels(maps, locs, location, image, cells, channel=classes[:, None])
        ctr = sample_levels(maps, locs, location, image, cells, channel=maps[0].shape[1] - 1)
        return (cat * ctr * weight).sum(1) / count
    prob = sample_levels(maps, locs, location, image, cells)[..., :-1]  # (P, S, L)
    return (prob * weight[..., None]).sum(1) / count[:, None]
