# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""Label assignment: which locations are positives, and their polar targets (no gradients).

Tensor work only, on the model's device: the annotation-only geometry (edges, mass centres,
areas, boxes) comes precomputed in the ``gt_polar_*`` fields (`gt_geometry`), normally from the
data-loader workers.
"""

from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.structures import Instances

from .. import polar
from ..gt_geometry import ensure_polar_fields
from .locations import Locations

__all__ = ["PolarTargetAssigner"]

#: Fallback: how many of the nearest free in-box locations an unassigned instance considers.
_FALLBACK_CANDIDATES = 32
#: Fallback: rounds of conflict resolution between unassigned instances claiming one location.
_FALLBACK_ROUNDS = 3


class PolarTargetAssigner:
    """Assign locations to ground-truth instances and compute their polar targets.

    Rules (PolarMask's where the patent is silent, plus this project's fixes):

    * centre sampling: a location is a candidate for an instance when it lies within
      ``center_sample_radius * stride`` of the instance's mass centre (`polar.mass_center`: always
      inside the object, even for rings and C shapes), the sampling square being clipped to
      the box, and inside the box;
    * scale: its level's size range holds the largest location-to-box distance;
    * ties: a location fitting several instances goes to the one with the smallest mask area;
    * radii: exact ray-polygon intersection over every part of the instance, farthest crossing
      (`polar.edges_radii`); a candidate whose location is outside the object (even-odd test, so
      the hole of a ring is outside) is dropped, so unmeasurable radii never reach the loss;
    * an instance left with no positive (tiny or thin objects between grid points) gets the free
      location nearest to its mass centre, preferring locations inside the object on its level,
      then inside it on any level, then any location of its level; in the last case some rays
      may miss the object, and its centerness target (so its regression weight) is 0, the
      polar centre-ness of its radii (a rule for those rays that counts only the rays that hit
      scored the same, so the simpler one stays);
    * instances with ``gt_iscrowd`` set are never assigned.
    """

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        num_rays: int = 36,
        center_sample_radius: float = 1.5,
    ):
        """
        Args:
            num_classes, num_rays, center_sample_radius: see ``MODEL.POLAR_REFINE``.
        """
        self.num_classes = num_classes
        self.num_rays = num_rays
        self.center_sample_radius = float(center_sample_radius)

    @classmethod
    def from_config(cls, cfg):
        pr = cfg.MODEL.POLAR_REFINE
        return {
            "num_classes": pr.NUM_CLASSES,
            "num_rays": pr.NUM_RAYS,
            "center_sample_radius": pr.CENTER_SAMPLE_RADIUS,
        }

    @torch.no_grad()
    def __call__(
        self, locs: Locations, gt_instances: List[Instances]
    ) -> List[Dict[str, torch.Tensor]]:
        """
        Args:
            locs: the location grid of all levels (`LocationGenerator`).
            gt_instances: per image, with ``gt_boxes``, ``gt_classes`` and the ``gt_polar_*``
                fields of `gt_geometry.POLAR_FIELDS` (computed here, on the host, when absent).

        Returns:
            per image a dict with
              ``labels`` (R,) long, ``num_classes`` for background;
              ``pos_idx`` (P,) long location indices of the positives;
              ``pos_inst`` (P,) long instance index of each positive;
              ``radii`` (P, K) target radii (input pixels);
              ``centerness`` (P,) polar centerness targets.
        """
        return [
            self._assign_single(locs.points, locs.strides, locs.size_ranges, ensure_polar_fields(i))
            for i in gt_instances
        ]

    def _empty(self, points: torch.Tensor) -> Dict[str, torch.Tensor]:
        dev = points.device
        return {
            "labels": torch.full(
                (points.shape[0],), self.num_classes, dtype=torch.long, device=dev
            ),
            "pos_idx": torch.zeros(0, dtype=torch.long, device=dev),
            "pos_inst": torch.zeros(0, dtype=torch.long, device=dev),
            "radii": points.new_zeros(0, self.num_rays),
            "centerness": points.new_zeros(0),
        }

    def _assign_single(self, points, strides, size_ranges, inst: Instances):
        num_inst, num_loc = len(inst), points.shape[0]
        if num_inst == 0:
            return self._empty(points)
        dev = points.device
        valid = inst.gt_polar_valid.to(dev)
        centers = inst.gt_polar_centers.to(dev)  # (M, 2)
        areas = inst.gt_polar_areas.to(dev)  # (M,)
        boxes = inst.gt_polar_boxes.to(dev)  # (M, 4)
        edges = inst.gt_polar_edges.to(dev)  # (M, E, 2, 2)

        px, py = points[None, :, 0], points[None, :, 1]  # (1, R)
        x0, y0, x1, y1 = (boxes[:, i : i + 1] for i in range(4))  # (M, 1)
        ltrb = torch.stack([px - x0, py - y0, x1 - px, y1 - py], dim=2)  # (M, R, 4)
        in_box = (ltrb.amin(2) > 0) & valid[:, None]
        size = ltrb.amax(2)
        in_range = (size >= size_ranges[None, :, 0]) & (size <= size_ranges[None, :, 1])
        rad = self.center_sample_radius * strides[None, :].float()  # (1, R)
        cx, cy = centers[:, 0:1], centers[:, 1:2]
        in_center = (
            (px >= torch.maximum(cx - rad, x0))
            & (px <= torch.minimum(cx + rad, x1))
            & (py >= torch.maximum(cy - rad, y0))
            & (py <= torch.minimum(cy + rad, y1))
        )
        cand = in_box & in_range & in_center  # (M, R)
        # smallest area wins: rank by area (exact; ``1e8 - area`` in float32 is quantised to
        # ~8 px^2, so between overlapping tiny objects the larger could win)
        rank = torch.empty(num_inst, dtype=torch.long, device=dev)
        rank[torch.argsort(areas, stable=True)] = torch.arange(num_inst, device=dev)
        quality = cand * (num_inst - rank)[:, None]  # (M, R) long, 0 where not a candidate
        best, matched = quality.max(0)  # (R,)
        matched = torch.where(best > 0, matched, torch.full_like(matched, -1))

        # Radii of the candidates; one whose location is outside its object (even-odd, so a
        # ring's hole is outside) or sees no edge on some ray is dropped.
        pos_idx = (matched >= 0).nonzero().flatten()
        pos_inst = matched[pos_idx]
        radii = polar.edges_radii(points[pos_idx], edges[pos_inst], self.num_rays)
        inside = (radii.amin(1) > 0) & polar.edges_contain(points[pos_idx], edges[pos_inst])
        matched = matched.index_put((pos_idx,), torch.where(inside, pos_inst, -1))

        has_pos = torch.zeros(num_inst + 1, dtype=torch.bool, device=dev)
        has_pos[torch.where(matched >= 0, matched, num_inst)] = True
        need = (valid & ~has_pos[:num_inst]).nonzero().flatten()  # usually a few, often none
        fb_loc, fb_ok = self._fallback(
            points, centers[need], areas[need], in_box[need], in_range[need], edges[need], matched
        )
        fb_inst = need
        fb_radii = polar.edges_radii(points[fb_loc], edges[fb_inst], self.num_rays)

        keep = torch.cat([inside, fb_ok])
        pos_idx = torch.cat([pos_idx, fb_loc])[keep]
        pos_inst = torch.cat([pos_inst, fb_inst])[keep]
        radii = torch.cat([radii, fb_radii])[keep]
        classes = inst.gt_classes.to(dev)
        labels = torch.full((num_loc,), self.num_classes, dtype=torch.long, device=dev)
        labels[pos_idx] = classes[pos_inst]
        return {
            "labels": labels,
            "pos_idx": pos_idx,
            "pos_inst": pos_inst,
            "radii": radii,
            "centerness": polar.polar_centerness(radii),
        }

    def _fallback(self, points, centers, areas, in_box, in_range, edges, matched):
        """A location for each of the M' instances given (those left without a positive).

        Each takes the free location nearest to its mass centre among, in order of preference:
        locations inside the object on its own level, inside it on any level (both among its
        `_FALLBACK_CANDIDATES` nearest free in-box locations), any free location of its level
        (among its `_FALLBACK_CANDIDATES` nearest).
        Instances claiming the same location are resolved by area, the smallest first, over
        `_FALLBACK_ROUNDS` rounds (the losers try their next choice). In the last case some rays
        may miss the object, and its centerness target (so its regression weight) is 0.

        Args: points (R, 2); centers (M', 2); areas (M',); in_box, in_range (M', R) bool;
            edges (M', E, 2, 2); matched (R,) instance of each location, -1 if free.

        Returns (M',) location and (M',) bool "assigned" (fixed shapes, no host synchronisation).
        """
        num_inst, num_loc = in_box.shape
        dev = points.device
        free = matched < 0  # (R,)
        d2 = ((points[None] - centers[:, None]) ** 2).sum(-1)  # (M, R)
        inf = float("inf")
        k = min(_FALLBACK_CANDIDATES, num_loc)
        # equal distances are common on a grid: break ties by location index, so the choice
        # does not depend on how topk orders them
        tie = torch.arange(num_loc, device=dev, dtype=torch.float64) * 1e-9
        box_d2 = torch.where(in_box & free, d2.double() + tie, inf)
        near_d2, near = box_d2.topk(k, dim=1, largest=False)  # (M, k)
        near_d2 = near_d2.float()
        flat_edges = edges[:, None].expand(-1, k, -1, -1, -1).flatten(0, 1)
        inside = polar.edges_contain(points[near].flatten(0, 1), flat_edges).view(num_inst, k)
        inside &= torch.isfinite(near_d2)
        # tier 0: inside and on its level; tier 1: inside; tier 2: any location of its level
        level_d2 = torch.where(in_range & free, d2.double() + tie, inf)
        lvl_d2, lvl_loc = level_d2.topk(k, dim=1, largest=False)  # (M, k)
        lvl_d2 = lvl_d2.float()
        big = 1e30  # tier offsets; every distance is far below
        in_level = torch.gather(in_range, 1, near)
        cost = torch.cat(
            [
                torch.where(inside, near_d2 + torch.where(in_level, 0.0, big), inf),
                lvl_d2 + 2 * big,
            ],
            dim=1,
        )  # (M, 2k)
        loc = torch.cat([near, lvl_loc], dim=1)
        rank = torch.empty(num_inst, dtype=torch.long, device=dev)
        rank[torch.argsort(areas, stable=True)] = torch.arange(
            num_inst, device=dev
        )  # smallest first
        claimed = torch.zeros(num_loc + 1, dtype=torch.bool, device=dev)  # last: a dummy slot
        done = torch.zeros(num_inst, dtype=torch.bool, device=dev)
        chosen = torch.zeros(num_inst, dtype=torch.long, device=dev)
        for _ in range(_FALLBACK_ROUNDS):
            c = torch.where(claimed[loc], inf, cost)
            best, j = c.min(1)
            want = torch.isfinite(best) & ~done
            pick = torch.where(want, torch.gather(loc, 1, j[:, None])[:, 0], num_loc)
            winner = torch.full((num_loc + 1,), num_inst, dtype=torch.long, device=dev)
            winner = winner.scatter_reduce(0, pick, torch.where(want, rank, num_inst), "amin")
            win = want & (winner[pick] == rank)
            claimed[torch.where(win, pick, num_loc)] = True
            chosen = torch.where(win, pick, chosen)
            done |= win
        return chosen, done
