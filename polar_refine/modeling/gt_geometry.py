"""The annotation-only half of the polar targets, computed on the host (numpy / cv2).

Everything here depends on the ground truth of one image alone, not on the network, so
`polar_refine.data.PolarDatasetMapper` runs it in the data-loader workers and attaches the
results to the ``Instances`` (``gt_polar_*`` fields) and the dataset dict (``polar_contour``).
The in-model assigner (`PolarTargetAssigner`) then does tensor work only. With detectron2's
plain ``DatasetMapper`` the model calls the same functions itself (`ensure_polar_fields`).
"""

import math
from typing import Dict, List, Tuple

import cv2
import numpy as np
import torch
from detectron2.structures import BitMasks, Instances, PolygonMasks

from .. import polar

__all__ = [
    "POLAR_FIELDS",
    "instance_parts",
    "instance_geometry",
    "ensure_polar_fields",
    "contour_target_map",
    "semantic_target_map",
]

#: The ``Instances`` fields written by `ensure_polar_fields` (M instances, E padded edges).
POLAR_FIELDS = (
    "gt_polar_edges",  # (M, E, 2, 2) float32: every part's closed edges, zero-length padding
    "gt_polar_centers",  # (M, 2) float32: mass centre (x, y), inside the object when possible
    "gt_polar_areas",  # (M,) float32: polygon area (sum over parts)
    "gt_polar_boxes",  # (M, 4) float32: union of gt_boxes and the polygons' extents (XYXY)
    "gt_polar_valid",  # (M,) bool: not crowd and has a finite polygon with a vertex
)


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


def instance_geometry(instances: Instances) -> Dict[str, torch.Tensor]:
    """The `POLAR_FIELDS` of one image's instances, as CPU tensors (see the field comments).

    Crowd instances and instances without a usable polygon are kept (so indices still match
    ``instances``) with ``gt_polar_valid`` False; they are never assigned.
    """
    m = len(instances)
    parts_all = [
        [p for p in parts if p.shape[0] >= 1 and np.isfinite(p).all()]
        for parts in instance_parts(instances)
    ]
    valid = np.array([len(p) > 0 for p in parts_all], dtype=bool).reshape(m)
    if instances.has("gt_iscrowd"):
        valid &= instances.gt_iscrowd.cpu().numpy().reshape(m) == 0
    centers = np.zeros((m, 2), dtype=np.float32)
    areas = np.zeros(m, dtype=np.float32)
    boxes = instances.gt_boxes.tensor.detach().cpu().float().numpy().reshape(m, 4).copy()
    for i, parts in enumerate(parts_all):
        if not parts:
            continue
        centers[i] = polar.mass_center(parts).numpy()
        areas[i] = sum(polar._area_centroid_np(p)[0] for p in parts)
        pts = np.concatenate(parts)
        # a box may disagree with its mask after augmentation: the union keeps the mass centre
        # inside the box
        boxes[i, :2] = np.minimum(boxes[i, :2], pts.min(0))
        boxes[i, 2:] = np.maximum(boxes[i, 2:], pts.max(0))
    edges = polar.polygons_to_padded_edges(
        [[torch.from_numpy(p).float() for p in parts] for parts in parts_all]
    )
    if m == 0:
        edges = torch.zeros(0, 1, 2, 2)
    return {
        "gt_polar_edges": edges.float(),
        "gt_polar_centers": torch.from_numpy(centers),
        "gt_polar_areas": torch.from_numpy(areas),
        "gt_polar_boxes": torch.from_numpy(boxes),
        "gt_polar_valid": torch.from_numpy(valid),
    }


def ensure_polar_fields(instances: Instances) -> Instances:
    """Attach the `POLAR_FIELDS` to ``instances`` (in place) unless they are already there."""
    if all(instances.has(f) for f in POLAR_FIELDS):
        return instances
    device = instances.gt_boxes.tensor.device
    for name, value in instance_geometry(instances).items():
        instances.set(name, value.to(device))
    return instances


def _blank_map(instances: Instances, image_size, stride: int, dtype):
    """A zero (ceil(H / stride), ceil(W / stride)) map and the instances' crowd flags (None when
    there is nothing to draw: no instance or no masks)."""
    h = max(1, math.ceil(int(image_size[0]) / stride))
    w = max(1, math.ceil(int(image_size[1]) / stride))
    out = np.zeros((h, w), dtype=dtype)
    if len(instances) == 0 or not instances.has("gt_masks"):
        return out, None
    if instances.has("gt_iscrowd"):
        return out, instances.gt_iscrowd.cpu().numpy()
    return out, np.zeros(len(instances))


def contour_target_map(
    instances: Instances, image_size: Tuple[int, int], stride: int, width: int = 1
) -> torch.Tensor:
    """Boundary map of one image at stride ``stride``: (ceil(H / stride), ceil(W / stride)) uint8.

    Polygon masks are drawn as closed polylines (``cv2.polylines``, ``width`` cells thick, with
    sub-cell precision) after scaling by ``1 / stride``; bitmap masks are downsampled and their
    morphological gradient is used. Crowd instances (``gt_iscrowd``) are skipped. The map
    covers the image; the model pads it to the (batch-padded) feature size.
    """
    out, crowd = _blank_map(instances, image_size, stride, np.uint8)
    if crowd is None:
        return torch.from_numpy(out)
    h, w = out.shape
    masks = instances.gt_masks
    shift = 4  # cv2 fixed-point bits
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
            cv2.polylines(out, lines, True, 1, thickness=width, shift=shift)
    elif isinstance(masks, BitMasks) and masks.tensor.numel() > 0:
        keep = torch.as_tensor(crowd == 0, device=masks.tensor.device)
        m = masks.tensor[keep]
        if m.shape[0]:
            m = m.float()[:, None].cpu()
            mh, mw = m.shape[-2:]
            m = torch.nn.functional.interpolate(
                m, size=(max(1, mh // stride), max(1, mw // stride))
            )
            pool = torch.nn.functional.max_pool2d
            grad = pool(m, 3, 1, 1) + pool(-m, 3, 1, 1)
            b = (grad.amax(0)[0] > 0).numpy().astype(np.uint8)
            hh, ww = min(h, b.shape[0]), min(w, b.shape[1])
            out[:hh, :ww] |= b[:hh, :ww]
    return torch.from_numpy(out)


def _fill_even_odd(out: np.ndarray, polys: List[np.ndarray], value: int) -> None:
    """Set ``out[i, j] = value`` where the point (j, i) is inside the polygons (even-odd over all
    of them, the rule of `polar.edges_contain`): an exact scanline fill, one row of cells at a
    time (each row's crossings sorted; cells from each odd crossing to the next)."""
    h, w = out.shape
    edges = polar._edges_np(polys)
    a, b = edges[:, 0], edges[:, 1]
    lo = max(0, math.ceil(float(min(a[:, 1].min(), b[:, 1].min()))))
    hi = min(h - 1, math.floor(float(max(a[:, 1].max(), b[:, 1].max()))))
    if hi < lo:
        return
    ys = np.arange(lo, hi + 1, dtype=np.float64)[:, None]  # (rows, 1)
    straddle = (a[None, :, 1] > ys) != (b[None, :, 1] > ys)  # (rows, E)
    dy = b[:, 1] - a[:, 1]
    dy = np.where(np.abs(dy) < 1e-12, 1e-12, dy)
    xs = a[None, :, 0] + (ys - a[None, :, 1]) * (b[None, :, 0] - a[None, :, 0]) / dy[None]
    for row, (cross, ok) in enumerate(zip(xs, straddle)):
        cross = np.sort(cross[ok])  # an even count: every row enters and leaves
        # a cell j is inside when an odd number of crossings lie strictly right of it, i.e.
        # cross[2k] <= j < cross[2k + 1]
        starts = np.clip(np.ceil(cross[0::2]), 0, w).astype(np.int64)
        ends = np.clip(np.ceil(cross[1::2]), 0, w).astype(np.int64)
        for j0, j1 in zip(starts, ends):
            out[lo + row, j0:j1] = value


def semantic_target_map(
    instances: Instances, image_size: Tuple[int, int], stride: int
) -> torch.Tensor:
    """Category map of one image at stride ``stride``: (ceil(H / stride), ceil(W / stride))
    int16, ``gt_classes + 1`` on the cells whose centre lies inside an instance, 0 elsewhere.

    Polygon masks are filled exactly (even-odd over an instance's parts, so holes stay out) in
    annotation order, so a later instance overwrites an earlier one where they overlap; bitmap
    masks are read at the cell centres. Crowd instances (``gt_iscrowd``) are skipped. The target of
    the training-only semantic head (``MODEL.POLAR_REFINE.SEMANTIC``).
    """
    out, crowd = _blank_map(instances, image_size, stride, np.int16)
    if crowd is None:
        return torch.from_numpy(out)
    h, w = out.shape
    classes = instances.gt_classes.cpu().numpy()
    masks = instances.gt_masks
    if isinstance(masks, PolygonMasks):
        for polys, cls, is_crowd in zip(masks.polygons, classes, crowd):
            if is_crowd:
                continue
            parts = []
            for p in polys:
                p = np.asarray(p, dtype=np.float64).reshape(-1, 2)
                if p.shape[0] >= 3 and np.isfinite(p).all():
                    parts.append(p / stride - 0.5)  # pixel-edge coords -> cell-centre coords
            if parts:
                _fill_even_odd(out, parts, int(cls) + 1)
    elif isinstance(masks, BitMasks) and masks.tensor.numel() > 0:
        # the pixel under each cell centre ((j + 0.5) * stride in pixel-edge coordinates)
        m = masks.tensor.cpu().numpy()[:, stride // 2 :: stride, stride // 2 :: stride] > 0
        hh, ww = min(h, m.shape[1]), min(w, m.shape[2])
        for mi, cls, is_crowd in zip(m, classes, crowd):
            if not is_crowd:
                out[:hh, :ww][mi[:hh, :ww]] = int(cls) + 1
    return torch.from_numpy(out)
