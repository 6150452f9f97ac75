# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""NMS on the edge shapes (the patent's NMS): IoU of polar polygons, not of their boxes.

A polar polygon joins the end points of K rays from its centre, so it is star-shaped from that
centre, and a point is inside it exactly when it lies, within its angular sector, on the
centre's side of that sector's edge: one ``atan2`` and one dot product per point (no loop over
edges, `polar_inside`).

The IoU of a pair is ``I / (A_a + A_b - I)``, with the areas exact (shoelace) and only the
intersection ``I`` counted, at ``resolution x resolution`` cell centres of the pair's
*intersection box* (the intersection lies inside it), so every sample point can count.

A pair's IoU is needed only where it could pass the threshold: ``I <= m = min(box
intersection, A_a, A_b)`` and the IoU grows with ``I``, so ``IoU <= m / (A_a + A_b - m)``, and
every other pair is skipped without error. Greedy NMS then needs a candidate's IoU only with
the candidates kept before it: `shape_nms` walks the score order in blocks, comparing a block
with what is kept so far and then within itself, and stops once ``max_keep`` are kept.
"""

import math
from typing import Optional

import torch

from ..polar import radii_to_points, ray_angles
from .postprocess import polygons_to_boxes

__all__ = ["polar_inside", "polar_pair_iou", "polygon_areas", "shape_nms"]


def polygon_areas(polygons: torch.Tensor) -> torch.Tensor:
    """Shoelace areas of (N, K, 2) polygons -> (N,)."""
    x, y = polygons[..., 0], polygons[..., 1]
    return 0.5 * (x * y.roll(-1, 1) - x.roll(-1, 1) * y).sum(1).abs()


def _sector_halfplanes(radii: torch.Tensor) -> torch.Tensor:
    """Per polygon and sector k (between rays k and k + 1), ``(a_x, a_y, b)`` such that a point
    at offset ``d`` from the centre, in sector k, is inside iff ``a . d < b``.

    Ray k has angle ``theta_k = 2 pi k / K`` and direction ``(sin, cos)`` (the project's
    convention). With ``phi`` the angle of ``d`` past ray k and ``rho = |d|``, the sector's edge is
    at distance ``r0 r1 sin(s) / (r0 sin(phi) + r1 sin(s - phi))`` (``s = 2 pi / K``), and
    ``rho sin(phi)``, ``rho sin(s - phi)`` are cross products of ``d`` with the two rays, so
    the test is linear in ``d``. A collapsed ray (radius 0) makes ``b = 0``: nothing is inside
    its sectors, as for the polygon itself.

    Args:
        radii: (P, K), negative read as 0.

    Returns:
        (P, K, 3).
    """
    k = radii.shape[1]
    r0 = radii.clamp(min=0)
    r1 = r0.roll(-1, 1)
    t0 = ray_angles(k, radii.device, radii.dtype)
    t1 = t0 + 2 * math.pi / k
    ax = r0 * t0.cos() - r1 * t1.cos()
    ay = r1 * t1.sin() - r0 * t0.sin()
    b = r0 * r1 * math.sin(2 * math.pi / k)
    return torch.stack([ax, ay, b], -1)


def _inside(points: torch.Tensor, centers: torch.Tensor, planes: torch.Tensor) -> torch.Tensor:
    """(P, S, 2) points, (P, 2) centres, (P, K, 3) sector half-planes -> (P, S) bool."""
    k = planes.shape[1]
    d = points - centers[:, None, :]
    theta = torch.atan2(d[..., 0], d[..., 1])  # in (-pi, pi]; ray k at 2 pi k / K
    idx = (theta * (k / (2 * math.pi))).floor().long() % k
    p = torch.gather(planes, 1, idx[..., None].expand(-1, -1, 3))  # (P, S, 3)
    return d[..., 0] * p[..., 0] + d[..., 1] * p[..., 1] < p[..., 2]


def polar_inside(points: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Whether points lie inside polar polygons (star-shaped from their centres).

    Args:
        points: (P, S, 2) (x, y); centers: (P, 2); radii: (P, K), negative read as 0.

    Returns:
        (P, S) bool.
    """
    return _inside(points, centers, _sector_halfplanes(radii))


def _grid(lo: torch.Tensor, hi: torch.Tensor, resolution: int) -> torch.Tensor:
    """Cell centres of a ``resolution``^2 grid over each (P, 2) box ``lo``-``hi`` -> (P, R*R, 2)."""
    t = (torch.arange(resolution, device=lo.device, dtype=lo.dtype) + 0.5) / resolution
    gx = lo[:, None, 0] + (hi - lo)[:, None, 0] * t  # (P, R)
    gy = lo[:, None, 1] + (hi - lo)[:, None, 1] * t
    return torch.stack(
        [gx[:, None, :].expand(-1, resolution, -1), gy[:, :, None].expand(-1, -1, resolution)],
        dim=-1,
    ).flatten(1, 2)


def _pair_iou(c, planes, boxes, areas, i, j, resolution):
    """IoU of the pairs (i, j) of prepared polygons (see `polar_pair_iou`) -> (P,)."""
    lo = torch.maximum(boxes[i, :2], boxes[j, :2])
    hi = torch.minimum(boxes[i, 2:], boxes[j, 2:]).maximum(lo)
    pts = _grid(lo, hi, resolution)
    both = _inside(pts, c[i], planes[i]) & _inside(pts, c[j], planes[j])
    inter = both.float().mean(1) * (hi - lo).prod(1)
    union = areas[i] + areas[j] - inter
    return inter / union.clamp(min=1e-12)


def _prepare(centers: torch.Tensor, radii: torch.Tensor):
    r = radii.clamp(min=0)
    polys = radii_to_points(centers, r)
    return _sector_halfplanes(r), polygons_to_boxes(polys), polygon_areas(polys)


def polar_pair_iou(
    centers_a: torch.Tensor,
    radii_a: torch.Tensor,
    centers_b: torch.Tensor,
    radii_b: torch.Tensor,
    resolution: int = 16,
) -> torch.Tensor:
    """IoU of P pairs of polar polygons: exact areas, the intersection counted at
    ``resolution**2`` cell centres of the pair's intersection box. (P, 2), (P, K) x 2 -> (P,)."""
    p = centers_a.shape[0]
    c = torch.cat([centers_a, centers_b])
    planes, boxes, areas = _prepare(c, torch.cat([radii_a, radii_b]))
    i = torch.arange(p, device=centers_a.device)
    return _pair_iou(c, planes, boxes, areas, i, i + p, resolution)


def _iou_bound(boxes, areas, i, j):
    """Exact upper bound of the IoU of pairs (i, j): ``m / (A_i + A_j - m)``, with ``m`` the
    smallest of the box intersection and the two areas."""
    lt = torch.maximum(boxes[i, :2], boxes[j, :2])
    rb = torch.minimum(boxes[i, 2:], boxes[j, 2:])
    m = (rb - lt).clamp(min=0).prod(-1).minimum(areas[i]).minimum(areas[j])
    return m / (areas[i] + areas[j] - m).clamp(min=1e-12)


def shape_nms(
    centers: torch.Tensor,
    radii: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    iou_threshold: float,
    resolution: int = 16,
    max_keep: Optional[int] = None,
    block: int = 64,
) -> torch.Tensor:
    """Class-aware greedy NMS on the IoU of polar polygons.

    Candidates are taken by decreasing score; one is removed when its shape IoU with a kept,
    higher-scored candidate of its class exceeds ``iou_threshold``. Pairs whose bound rules
    that out (see the module docstring) are never sampled.

    Args:
        centers: (N, 2); radii: (N, K); scores, classes: (N,).
        max_keep: stop once this many are kept (the result is the same as truncating).

    Returns:
        (M,) long indices of the kept candidates, by decreasing score.
    """
    n = scores.shape[0]
    order = scores.argsort(descending=True)
    if n <= 1:
        return order
    dev = scores.device
    c, cls = centers[order], classes[order]
    planes, boxes, areas = _prepare(c, radii[order])
    max_keep = n if max_keep is None else max_keep

    def suppressing_pairs(i, j):
        """Pairs (i, j) of the same class whose shape IoU exceeds the threshold."""
        sel = (cls[i] == cls[j]) & (_iou_bound(boxes, areas, i, j) > iou_threshold)
        i, j = i[sel], j[sel]
        hit = _pair_iou(c, planes, boxes, areas, i, j, resolution) > iou_threshold
        return i[hit], j[hit]

    kept = torch.zeros(0, dtype=torch.long, device=dev)
    for start in range(0, n, block):
        idx = torch.arange(start, min(start + block, n), device=dev)
        if kept.numel():  # against what is kept so far
            i, j = torch.cartesian_prod(kept, idx).unbind(1)
            _, j = suppressing_pairs(i, j)
            idx = idx[~torch.isin(idx, j)]
        m = idx.numel()
        if m > 1:  # within the block, greedy: j goes iff a kept i < j suppresses it
            a, b = torch.triu_indices(m, m, 1, device=dev)
            src, dst = suppressing_pairs(idx[a], idx[b])
            src, dst = src - start, dst - start  # block-local
            local = torch.zeros(block, dtype=torch.bool, device=dev)
            local[idx - start] = True
            keep = local.clone()
            for _ in range(m):  # each pass settles one more level of the suppression chains
                removed = torch.zeros_like(keep)
                removed[dst[keep[src]]] = True
                new_keep = local & ~removed
                if torch.equal(new_keep, keep):
                    break
                keep = new_keep
            idx = idx[keep[idx - start]]
        kept = torch.cat([kept, idx])
        if kept.numel() >= max_keep:
            break
    return order[kept[:max_keep]]
