# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""The annotation-only half of the polar targets, computed on the host (numpy / cv2).

Everything here depends on the ground truth of one image alone, not on the network, so
`polar_refine.data.PolarDatasetMapper` runs it in the data-loader workers and attaches the
results to the ``Instances`` (``gt_polar_*`` fields) and the dataset dict (``polar_contour``).
The in-model assigner (`PolarTargetAssigner`) then does tensor work only. With detectron2's
plain ``DatasetMapper`` the model calls the same functions itself (`ensure_polar_fields`).

Annotation geometry, like `polar`, belongs to neither the data nor the model layer: both import
it, and ``polar_refine.data`` never imports ``polar_refine.modeling``.
"""

import math
from typing import Dict, List, Tuple

import cv2
import numpy as np
import torch
from detectron2.structures import BitMasks, Instances, PolygonMasks

from . import polar

__all__ = [
    "POLAR_FIELDS",
    "instance_parts",
    "instance_geometry",
    "ensure_polar_fields",
    "contour_target_map",
]

#: The ``Instances`` fields written by `ensure_polar_fields` (M instances, E padded edges).
POLAR_FIELDS = (
    "gt_polar_edges",  # (M, E, 2, 2) float32: every part's closed edges, zero-length padding
    "gt_polar_centers",  # (M, 2) float32: mass centre (x, y), inside the object when possible
    "gt_polar_areas",  # (M,) float32: polygon area (sum over parts)
    "gt_polar_boxes",  # (M, 4) float32: union of gt_boxes and the polygons' extents (XYXY)
    "gt_polar_valid",  # (M,) bool: not crowd and has a finite polygon with a vertex
)


#: The one-line error for instances that carry boxes but no masks.
MISSING_MASKS = (
    "PolarRefine trains on instance masks (polygons or bitmaps), but these instances have none: "
    "set MODEL.MASK_ON True (detectron2's DatasetMapper drops the masks otherwise) or train "
    "with polar_refine.data.PolarDatasetMapper, which always loads them"
)


def instance_parts(instances: Instances) -> List[List[np.ndarray]]:
    """The polygon parts of every instance, as lists of (M, 2) float64 arrays.

    Polygon masks are used as they are (every part kept); bitmap masks are traced with
    ``cv2.findContours`` (external contours, shifted by half a pixel to the pixel-edge frame).
    Instances without masks raise ``ValueError`` (`MISSING_MASKS`): a box is not a contour,
    and training on box rectangles would pass silently.
    """
    if len(instances) == 0:
        return []
    masks = instances.get("gt_masks") if instances.has("gt_masks") else None
    if isinstance(masks, PolygonMasks):
        return [
            [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in ps] for ps in masks.polygons
        ]
    if isinstance(masks, BitMasks):
        out = []
        for m in masks.tensor.cpu().numpy().astype(np.uint8):
            cs, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            out.append([c.reshape(-1, 2).astype(np.float64) + 0.5 for c in cs])
        return out
    raise ValueError(MISSING_MASKS)


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


def contour_target_map(
    instances: Instances, image_size: Tuple[int, int], stride: int, width: int = 1
) -> torch.Tensor:
    """Boundary map of one image at stride ``stride``: (ceil(H / stride), ceil(W / stride)) uint8.

    Both mask kinds follow the cell-centre convention: cell (i, j) stands for the point
    ((j + 0.5) * stride, (i + 0.5) * stride) of the image. Polygon masks are drawn as closed
    polylines (``cv2.polylines``, ``width`` cells thick, with sub-cell precision) after mapping
    to that frame; bitmap masks are read at the pixel under each cell centre and their
    morphological gradient is used. Crowd instances (``gt_iscrowd``) are skipped. The map
    covers the image; the model pads it to the (batch-padded) feature size. Instances without
    masks raise ``ValueError`` (`MISSING_MASKS`).
    """
    h = max(1, math.ceil(int(image_size[0]) / stride))
    w = max(1, math.ceil(int(image_size[1]) / stride))
    out = np.zeros((h, w), dtype=np.uint8)
    if len(instances) == 0:
        return torch.from_numpy(out)
    if not instances.has("gt_masks"):
        raise ValueError(MISSING_MASKS)
    crowd = np.zeros(len(instances))
    if instances.has("gt_iscrowd"):
        crowd = instances.gt_iscrowd.cpu().numpy()
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
            # the pixel under each cell centre ((j + 0.5) * stride in pixel-edge coordinates)
            m = m[:, stride // 2 :: stride, stride // 2 :: stride].float()[:, None].cpu()
            pool = torch.nn.functional.max_pool2d
            grad = pool(m, 3, 1, 1) + pool(-m, 3, 1, 1)
            b = (grad.amax(0)[0] > 0).numpy().astype(np.uint8)
            hh, ww = min(h, b.shape[0]), min(w, b.shape[1])
            out[:hh, :ww] |= b[:hh, :ww]
    return torch.from_numpy(out)
