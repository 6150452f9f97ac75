"""Post-processing: polygons at output size, boxes from their extents, rasterised masks."""

import cv2
import numpy as np
import torch
from detectron2.structures import Boxes, Instances

__all__ = ["polygons_to_boxes", "polygons_to_masks", "polar_postprocess"]

_SHIFT = 4  # cv2 fixed-point bits for sub-pixel rasterisation


def polygons_to_boxes(polygons: torch.Tensor) -> torch.Tensor:
    """(N, K, 2) polygons -> (N, 4) XYXY extents."""
    if polygons.shape[0] == 0:
        return polygons.new_zeros(0, 4)
    return torch.cat([polygons.amin(1), polygons.amax(1)], dim=1)


def polygons_to_masks(polygons: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Rasterise (N, K, 2) polygons into (N, height, width) bool masks.

    Coordinates are continuous pixel coordinates (pixel (i, j) covers [j, j+1) x [i, i+1), the
    COCO/pycocotools convention): a pixel is set when its centre is inside the polygon. Each
    polygon is filled only over its own extent by ``cv2.fillPoly``, so the cost grows with the
    polygons' area, not with image area x detections (beyond allocating the output).
    """
    n = polygons.shape[0]
    masks = np.zeros((n, height, width), dtype=np.uint8)
    if n:
        pts = polygons.detach().float().cpu().numpy() - 0.5  # pixel centres at integers for cv2
        pts = np.nan_to_num(pts, nan=-1.0, posinf=-1.0, neginf=-1.0)
        pts = np.clip(pts, -1.0, max(height, width) + 1.0)
        fixed = np.round(pts * (1 << _SHIFT)).astype(np.int32)
        for i in range(n):
            cv2.fillPoly(masks[i], [fixed[i]], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return torch.from_numpy(masks).to(device=polygons.device, dtype=torch.bool)


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
            ``scores``, ``pred_classes`` and optionally ``pred_coarse_polygons`` (N, K, 2).
        output_height, output_width: requested size.

    Returns:
        Instances at (output_height, output_width) with ``pred_polygons``, ``pred_boxes``,
        ``scores``, ``pred_classes``, ``pred_masks`` (N, H, W) bool if ``mask_on``, and
        ``pred_coarse_polygons`` if present.
    """
    in_h, in_w = results.image_size
    scale = torch.tensor(
        [output_width / in_w, output_height / in_h],
        dtype=torch.float32,
        device=results.scores.device,
    )
    limit = scale.new_tensor([float(output_width), float(output_height)])
    out = Instances((int(output_height), int(output_width)))
    polys = (results.pred_polygons.float() * scale).clamp(min=0).minimum(limit)
    out.pred_polygons = polys
    out.pred_boxes = Boxes(polygons_to_boxes(polys))
    out.scores = results.scores
    out.pred_classes = results.pred_classes
    if results.has("pred_coarse_polygons"):
        out.pred_coarse_polygons = (
            (results.pred_coarse_polygons.float() * scale).clamp(min=0).minimum(limit)
        )
    if mask_on:
        out.pred_masks = polygons_to_masks(polys, int(output_height), int(output_width))
    return out
