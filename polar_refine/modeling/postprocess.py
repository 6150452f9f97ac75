# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""Post-processing: polygons at output size, boxes from their extents, rasterised masks."""

import math

import cv2
import numpy as np
import torch
from detectron2.structures import Boxes, Instances
from torchvision.ops import nms

__all__ = [
    "batched_nms_polygons",
    "clip_polygons",
    "polygons_to_boxes",
    "polygons_to_masks",
    "polygons_to_masks_scanline",
    "polygon_row_spans",
    "polar_postprocess",
]


def polygons_to_boxes(polygons: torch.Tensor) -> torch.Tensor:
    """(N, K, 2) polygons -> (N, 4) XYXY extents (N may be 0; no branch, so traces keep it)."""
    return torch.cat([polygons.amin(1), polygons.amax(1)], dim=1)


def batched_nms_polygons(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Class-aware NMS in one `torchvision.ops.nms` call (exports to ONNX NonMaxSuppression).

    Each class's boxes are moved into their own band, ``class * (extent + 1)`` beyond the
    previous one, after shifting all boxes to start at 0 (torchvision's "coordinate trick"
    offsets by the maximum coordinate only, which lets classes overlap when boxes reach negative
    coordinates, as polygon extents do). Empty inputs need no branch.

    Args:
        boxes: (N, 4) XYXY; scores: (N,); classes: (N,) long.

    Returns:
        (M,) long indices of the kept boxes, by decreasing score.
    """
    flat = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)])  # 0 keeps min/max defined
    lo, hi = flat.min(), flat.max()
    offsets = classes.to(boxes.dtype) * (hi - lo + 1)
    return nms(boxes - lo + offsets[:, None], scores, iou_threshold)


def clip_polygons(polygons: torch.Tensor, height, width) -> torch.Tensor:
    """Clip (N, K, 2) (x, y) polygons to [0, width] x [0, height].

    ``height`` and ``width`` are numbers or 0-dim tensors (shapes while tracing stay dynamic).
    """
    if isinstance(height, torch.Tensor) and isinstance(width, torch.Tensor):
        limit = torch.stack([width, height]).to(device=polygons.device, dtype=polygons.dtype)
    else:
        limit = polygons.new_tensor([float(width), float(height)])
    return polygons.clamp(min=0).minimum(limit)


def polygons_to_masks(polygons: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Rasterise (N, K, 2) polygons into (N, height, width) bool masks on their device.

    Coordinates are continuous pixel coordinates (pixel (i, j) covers [j, j+1) x [i, i+1), the
    COCO/pycocotools convention): a pixel is set when its centre is inside the polygon (even-odd
    rule). Each row's inside spans come from `polygon_row_spans`; on the CPU every polygon is
    filled over its own rows only (cost ~ its extent), on a GPU all polygons at once through a
    difference array summed along rows (no host synchronisation, no copy to the host).
    """
    n = polygons.shape[0]
    if n == 0 or height == 0 or width == 0 or polygons.shape[1] < 3:
        return torch.zeros(n, height, width, dtype=torch.bool, device=polygons.device)
    if polygons.device.type != "cpu":
        return polygons_to_masks_scanline(polygons, height, width)
    pts = polygons.detach().double().numpy()
    pts = np.nan_to_num(pts, nan=-0.5, posinf=-0.5, neginf=-0.5)
    masks = np.zeros((n, height, width), dtype=bool)  # lazily zeroed pages
    for i in range(n):  # each polygon over its own extent only
        (x_lo, y_lo), (x_hi, y_hi) = pts[i].min(0), pts[i].max(0)
        r0, r1 = max(0, math.ceil(y_lo - 0.5)), min(height, math.floor(y_hi - 0.5) + 1)
        c0, c1 = max(0, math.ceil(x_lo - 0.5)), min(width, math.floor(x_hi - 0.5) + 1)
        if r1 <= r0 or c1 <= c0:
            continue
        yc = np.arange(r0, r1, dtype=np.float64)[:, None] + 0.5
        start, end = _spans_np(pts[i] - (c0, 0), yc, c1 - c0)  # (R, K // 2), local columns
        keep = end > start
        if _fill_single_spans(masks[i], r0, c0, start, end, keep):
            continue
        # several spans on some rows: +1/-1 at their ends, summed along rows (non-empty spans
        # of a row never share a start, nor an end)
        rows = np.broadcast_to(np.arange(r1 - r0)[:, None], start.shape)
        diff = np.zeros((r1 - r0, c1 - c0 + 1), dtype=np.int8)
        diff[rows[keep], start[keep]] += 1
        diff[rows[keep], end[keep]] -= 1
        masks[i, r0:r1, c0:c1] = np.cumsum(diff, axis=1, dtype=np.int8)[:, :-1] > 0
    return torch.from_numpy(masks)


def _fill_single_spans(mask, r0, c0, start, end, keep) -> bool:
    """Fill ``mask`` (H, W) bool from row spans with cv2 when every row between the first and
    the last non-empty one has exactly one span and consecutive spans overlap; else return False.

    The spans become an orthogonal "staircase" polygon whose vertices are pixel centres and whose
    every edge runs through inside pixels only, so cv2's fill (interior plus boundary pixels)
    paints exactly the spans.
    """
    count = keep.sum(1)
    rows = np.flatnonzero(count)
    if rows.size == 0:
        return True
    a, b = rows[0], rows[-1] + 1
    if (count[a:b] != 1).any():
        return False
    s = np.where(keep[a:b], start[a:b], 0).max(1)  # first pixel of each row's span
    last = np.where(keep[a:b], end[a:b], 0).max(1) - 1  # last pixel
    if (np.maximum(s[:-1], s[1:]) > np.minimum(last[:-1], last[1:])).any():
        return False  # rows not 4-connected
    y = np.arange(a, b)
    # left side, top to bottom: to the next row by a step through an inside pixel
    right_step = s[1:] >= s[:-1]
    mid_l = np.stack([np.where(right_step, s[1:], s[:-1]), np.where(right_step, y[:-1], y[1:])], 1)
    left = np.empty((2 * len(y) - 1, 2), np.int64)
    left[0::2] = np.stack([s, y], 1)
    left[1::2] = mid_l
    # right side, bottom to top
    up_first = last[:-1] >= last[1:]
    mid_r = np.stack(
        [np.where(up_first, last[1:], last[:-1]), np.where(up_first, y[:-1], y[1:])], 1
    )
    right = np.empty((2 * len(y) - 1, 2), np.int64)
    right[0::2] = np.stack([last, y], 1)
    right[1::2] = mid_r
    poly = np.concatenate([left, right[::-1]]) + (c0, r0)
    view = mask.view(np.uint8)
    cv2.fillPoly(view, [poly.astype(np.int32)], 1, lineType=cv2.LINE_8)
    return True


def _spans_np(poly: np.ndarray, yc: np.ndarray, width: int):
    """`polygon_row_spans` of one (K, 2) polygon on rows with centres ``yc`` (R, 1), in numpy."""
    k = poly.shape[0]
    nxt = np.roll(poly, -1, axis=0)
    x0, y0, x1, y1 = poly[:, 0], poly[:, 1], nxt[:, 0], nxt[:, 1]
    cross = (y0 > yc) != (y1 > yc)  # (R, K)
    t = (yc - y0) / np.where(cross, y1 - y0, 1.0)
    xs = np.sort(np.where(cross, x0 + t * (x1 - x0), np.inf), axis=1)[:, : 2 * (k // 2)]
    with np.errstate(invalid="ignore"):
        start = np.clip(np.floor(xs[:, 0::2] - 0.5) + 1, 0, width)
        end = np.maximum(np.clip(np.ceil(xs[:, 1::2] - 0.5), 0, width), start)
    return start.astype(np.int64), end.astype(np.int64)


def polygon_row_spans(polygons: torch.Tensor, height: int, width: int):
    """Inside spans of (N, K, 2) polygons on every pixel row, by the even-odd rule at centres.

    For each polygon and row, the K edges' crossings with the row's centre line ``y = i + 0.5``
    are sorted; pixel j is inside when ``c_2m < j + 0.5 < c_2m+1`` for some m.

    Returns:
        start, end: (N, height, K // 2) long in [0, width], ``end >= start``; the pixels
        ``start <= j < end`` of a row are inside (empty spans have ``start == end``).
    """
    k = polygons.shape[1]
    device = polygons.device
    pts = torch.nan_to_num(polygons.detach().float(), nan=-0.5, posinf=-0.5, neginf=-0.5)
    nxt = pts.roll(-1, dims=1)
    x0, y0 = pts[:, None, :, 0], pts[:, None, :, 1]  # (N, 1, K)
    x1, y1 = nxt[:, None, :, 0], nxt[:, None, :, 1]
    yc = torch.arange(height, device=device, dtype=torch.float32)[None, :, None] + 0.5
    cross = (y0 > yc) != (y1 > yc)  # (N, H, K); half-open in y, so no vertex counts twice
    t = (yc - y0) / torch.where(cross, y1 - y0, torch.ones_like(y1 - y0))
    xs = torch.where(cross, x0 + t * (x1 - x0), torch.full_like(t, float("inf")))
    # a closed polygon crosses a line an even number of times, at most K
    xs = xs.sort(dim=-1).values[..., : 2 * (k // 2)]
    start = ((xs[..., 0::2] - 0.5).floor() + 1).clamp(0, width)
    end = torch.maximum((xs[..., 1::2] - 0.5).ceil().clamp(0, width), start)
    return start.long(), end.long()


def polygons_to_masks_scanline(
    polygons: torch.Tensor, height: int, width: int, max_elements: int = 1 << 26
) -> torch.Tensor:
    """`polygons_to_masks` without host synchronisation (its GPU path; any device works).

    Spans from `polygon_row_spans` are written as +1/-1 into a (N, H, W + 1) difference array
    and summed along rows. Polygons are processed in chunks of at most ``max_elements`` mask
    elements to bound memory.
    """
    n = polygons.shape[0]
    out = torch.zeros(n, height, width, dtype=torch.bool, device=polygons.device)
    if n == 0 or height == 0 or width == 0 or polygons.shape[1] < 3:
        return out
    chunk = max(1, max_elements // (height * (width + 1)))
    for s in range(0, n, chunk):
        start, end = polygon_row_spans(polygons[s : s + chunk], height, width)
        diff = torch.zeros(*start.shape[:2], width + 1, dtype=torch.int32, device=out.device)
        ones = torch.ones_like(start, dtype=torch.int32)
        diff.scatter_add_(2, start, ones).scatter_add_(2, end, -ones)
        out[s : s + chunk] = diff.cumsum(2)[..., :width] > 0
    return out


def polar_postprocess(
    results: Instances,
    output_height: int,
    output_width: int,
    mask_on: bool = True,
) -> Instances:
    """Rescale detections made at the network input size to the requested output size.

    detectron2's ``detector_postprocess`` assumes ROI masks inside boxes; polar detections are
    polygons, so they are scaled here, clipped to the output image, and the boxes are the clipped
    polygons' extents. Masks are rasterised at the output size when ``mask_on``.

    Args:
        results: at input size ``results.image_size``, with ``pred_polygons`` (N, K, 2),
            ``scores``, ``pred_classes`` and optionally ``pred_coarse_polygons`` and
            ``pred_polar_polygons`` (N, K', 2).
        output_height, output_width: requested size.

    Returns:
        Instances at (output_height, output_width) with ``pred_polygons``, ``pred_boxes``,
        ``scores``, ``pred_classes``, ``pred_masks`` (N, H, W) bool if ``mask_on``, and
        ``pred_coarse_polygons`` / ``pred_polar_polygons`` if present.
    """
    in_h, in_w = results.image_size
    scale = torch.tensor(
        [output_width / in_w, output_height / in_h],
        dtype=torch.float32,
        device=results.scores.device,
    )
    limit = scale.new_tensor([float(output_width), float(output_height)])
    out = Instances((int(output_height), int(output_width)))
    polygons = (results.pred_polygons.float() * scale).clamp(min=0).minimum(limit)
    out.pred_polygons = polygons
    out.pred_boxes = Boxes(polygons_to_boxes(polygons))
    out.scores = results.scores
    out.pred_classes = results.pred_classes
    for field in ("pred_coarse_polygons", "pred_polar_polygons"):
        if results.has(field):
            polys = results.get(field).float() * scale
            out.set(field, polys.clamp(min=0).minimum(limit))
    if mask_on:
        out.pred_masks = polygons_to_masks(polygons, int(output_height), int(output_width))
    return out
