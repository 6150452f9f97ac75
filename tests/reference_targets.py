"""The per-instance, host-side label assignment this project used before the assigner became
tensor-only (commit ae91aa8), kept as a reference for tests/test_training_scale.py. Verbatim
but for the smallest-area tie-break (marked below)."""

from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.structures import BitMasks, Instances, PolygonMasks

from polar_refine import polar

__all__ = ["ReferenceAssigner"]


def level_size_ranges(strides: Sequence[int], sizes_of_interest: Sequence[float]) -> List[Tuple]:
    """Per-level (low, high) object-size ranges; the last level is open-ended.

    ``sizes_of_interest`` gives the L - 1 upper bounds; with a different length the bounds are
    derived from the strides as ``8 * stride`` (FCOS's rule).
    """
    n = len(strides)
    bounds = list(sizes_of_interest)
    if len(bounds) != n - 1:
        bounds = [8.0 * s for s in strides[:-1]]
    lows = [0.0] + [float(b) for b in bounds]
    highs = [float(b) for b in bounds] + [float("inf")]
    return list(zip(lows, highs))


def instance_parts(instances: Instances) -> List[List[np.ndarray]]:
    """The polygon parts of every instance, as lists of (M, 2) float64 arrays.

    Polygon masks are used as they are (every part kept); bitmap masks are traced with
    ``cv2.findContours`` (external contours, shifted by half a pixel to the pixel-edge frame);
    without masks the box is used.
    """
    n = len(instances)
    if instances.has("gt_masks"):
        masks = instances.gt_masks
        if isinstance(masks, PolygonMasks):
            return [
                [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in ps]
                for ps in masks.polygons
            ]
        if isinstance(masks, BitMasks):
            out = []
            for m in masks.tensor.cpu().numpy().astype(np.uint8):
                cs, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                out.append([c.reshape(-1, 2).astype(np.float64) + 0.5 for c in cs])
            return out
    boxes = instances.gt_boxes.tensor.cpu().numpy().astype(np.float64)
    return [[b[[0, 1, 2, 1, 2, 3, 0, 3]].reshape(4, 2)] for b in boxes[:n]]


class ReferenceAssigner:
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
      may miss the object, and its centerness target (so its regression weight) is 0;
    * instances with ``gt_iscrowd`` set are never assigned.
    """

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        num_rays: int = 36,
        center_sample_radius: float = 1.5,
        sizes_of_interest: Sequence[float] = (64, 128, 256, 512),
    ):
        self.num_classes = num_classes
        self.num_rays = num_rays
        self.center_sample_radius = float(center_sample_radius)
        self.sizes_of_interest = list(sizes_of_interest)

    @classmethod
    def from_config(cls, cfg):
        pr = cfg.MODEL.POLAR_REFINE
        return {
            "num_classes": pr.NUM_CLASSES,
            "num_rays": pr.NUM_RAYS,
            "center_sample_radius": pr.CENTER_SAMPLE_RADIUS,
            "sizes_of_interest": pr.SIZES_OF_INTEREST,
        }

    @torch.no_grad()
    def __call__(
        self,
        points: torch.Tensor,
        strides: torch.Tensor,
        size_ranges: torch.Tensor,
        gt_instances: List[Instances],
    ) -> List[Dict[str, torch.Tensor]]:
        """
        Args:
            points: (R, 2) location centres (x, y) in input pixels, all levels concatenated.
            strides: (R,) stride of each location.
            size_ranges: (R, 2) (low, high) object size handled at each location.
            gt_instances: per image, with ``gt_boxes``, ``gt_classes`` and usually ``gt_masks``.

        Returns:
            per image a dict with
              ``labels`` (R,) long, ``num_classes`` for background;
              ``pos_idx`` (P,) long location indices of the positives;
              ``pos_inst`` (P,) long instance index of each positive;
              ``radii`` (P, K) target radii (input pixels);
              ``centerness`` (P,) polar centerness targets.
        """
        return [self._assign_single(points, strides, size_ranges, inst) for inst in gt_instances]

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
        dev = points.device
        if len(inst) == 0:
            return self._empty(points)
        keep = torch.ones(len(inst), dtype=torch.bool)
        if inst.has("gt_iscrowd"):
            keep &= inst.gt_iscrowd.cpu() == 0
        parts_all = instance_parts(inst)
        parts_all = [
            [p for p in parts if p.shape[0] >= 1 and np.isfinite(p).all()] for parts in parts_all
        ]
        keep &= torch.tensor([len(p) > 0 for p in parts_all], dtype=torch.bool)
        if not keep.any():
            return self._empty(points)
        idx = keep.nonzero().flatten()
        parts_all = [parts_all[i] for i in idx.tolist()]
        classes = inst.gt_classes.to(dev)[idx.to(dev)]
        boxes = inst.gt_boxes.tensor.to(dev)[idx.to(dev)].float()

        centers = torch.stack([polar.mass_center(p) for p in parts_all]).to(dev)  # (M, 2)
        areas = torch.tensor(
            [sum(polar._area_centroid_np(p)[0] for p in parts) for parts in parts_all],
            dtype=torch.float32,
            device=dev,
        )
        # An instance's box may disagree with its mask after augmentation/crowd edits: use the
        # union of the box and the polygon extents so the mass centre is always inside the box.
        ext = torch.tensor(
            [[*np.concatenate(p).min(0), *np.concatenate(p).max(0)] for p in parts_all],
            dtype=torch.float32,
            device=dev,
        )
        boxes = torch.cat(
            [torch.minimum(boxes[:, :2], ext[:, :2]), torch.maximum(boxes[:, 2:], ext[:, 2:])], 1
        )

        px, py = points[None, :, 0], points[None, :, 1]  # (1, R)
        x0, y0, x1, y1 = (boxes[:, i : i + 1] for i in range(4))  # (M, 1)
        ltrb = torch.stack([px - x0, py - y0, x1 - px, y1 - py], dim=2)  # (M, R, 4)
        in_box = ltrb.amin(2) > 0
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
        # the one change to the frozen code: an exact smallest-area tie-break (the float32
        # ``1e8 - area`` was quantised to ~8 px^2), which the current assigner also uses
        rank = torch.empty(len(areas), dtype=torch.long, device=dev)
        rank[torch.argsort(areas, stable=True)] = torch.arange(len(areas), device=dev)
        quality = cand * (len(areas) - rank)[:, None]
        best, matched = quality.max(0)  # (R,)
        matched = torch.where(best > 0, matched, torch.full_like(matched, -1))

        edges = polar.polygons_to_padded_edges(
            [[torch.from_numpy(p).float() for p in parts] for parts in parts_all], device=dev
        )  # (M, E, 2, 2)
        pos_idx = (matched >= 0).nonzero().flatten()
        radii = polar.edges_radii(points[pos_idx], edges[matched[pos_idx]], self.num_rays)
        inside = (radii.amin(1) > 0) & polar.edges_contain(points[pos_idx], edges[matched[pos_idx]])
        matched[pos_idx[~inside]] = -1
        pos_idx, radii = pos_idx[inside], radii[inside]

        # Fallback: an instance without a positive takes the free location nearest to its mass
        # centre among, in order of preference: locations inside the object on its own level,
        # inside the object on any level, any location of its level.
        has_pos = torch.zeros(len(parts_all), dtype=torch.bool, device=dev)
        has_pos[matched[pos_idx]] = True
        if not has_pos.all():
            extra_loc, extra_inst = [], []
            for m in torch.argsort(areas).tolist():  # smallest objects first
                if has_pos[m]:
                    continue
                loc = self._fallback_location(points, centers[m], in_box[m], in_range[m],
                                              edges[m], matched)  # fmt: skip
                if loc is None:
                    continue
                matched[loc] = m
                extra_loc.append(loc)
                extra_inst.append(m)
            if extra_loc:
                extra_loc = torch.tensor(extra_loc, dtype=torch.long, device=dev)
                extra_inst = torch.tensor(extra_inst, dtype=torch.long, device=dev)
                extra_r = polar.edges_radii(points[extra_loc], edges[extra_inst], self.num_rays)
                pos_idx = torch.cat([pos_idx, extra_loc])
                radii = torch.cat([radii, extra_r])

        labels = torch.full((points.shape[0],), self.num_classes, dtype=torch.long, device=dev)
        pos_inst = matched[pos_idx]
        labels[pos_idx] = classes[pos_inst]
        return {
            "labels": labels,
            "pos_idx": pos_idx,
            "pos_inst": idx.to(dev)[pos_inst],
            "radii": radii,
            "centerness": polar.polar_centerness(radii),
        }

    @staticmethod
    def _fallback_location(points, center, in_box, in_range, edges, matched):
        """Index of the fallback location of one instance, or None (see the class docstring)."""
        free = matched < 0
        d2 = ((points - center) ** 2).sum(-1)
        box_idx = (in_box & free).nonzero().flatten()
        if box_idx.numel():
            inside = polar.points_in_polygons(points[box_idx].cpu(), edges.cpu()).to(points.device)
            for pool in (box_idx[inside & in_range[box_idx]], box_idx[inside]):
                if pool.numel():
                    return int(pool[d2[pool].argmin()])
        pool = (in_range & free).nonzero().flatten()
        if pool.numel():
            return int(pool[d2[pool].argmin()])
        return None
