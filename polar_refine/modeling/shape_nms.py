"""NMS on the edge shapes (the seed's NMS): IoU of polar polygons, not of their boxes.

A polar polygon joins the end points of K rays from its centre, so it is star-shaped from that
centre, and a point is inside it exactly when its distance from the centre is below the
boundary's distance in its direction. That test costs O(1) per point and polygon (no loop over
edges), so the IoU of a pair is counted on a ``resolution x resolution`` grid of sample points
over the pair's union box. The pair IoU is needed only where the boxes could let it pass the
threshold: shapes lie inside their boxes, so ``IoU <= box intersection / max(area_a, area_b)``
(areas exact, by the shoelace formula), and every other pair is skipped without error.
"""

import math

import torch

from ..polar import radii_to_points

__all__ = ["polar_inside", "polar_pair_iou", "polygon_areas", "shape_nms"]


def polygon_areas(polygons: torch.Tensor) -> torch.Tensor:
    """Shoelace areas of (N, K, 2) polygons -> (N,)."""
    x, y = polygons[..., 0], polygons[..., 1]
    return 0.5 * (x * y.roll(-1, 1) - x.roll(-1, 1) * y).sum(1).abs()


def polar_inside(points: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Whether points lie inside polar polygons (star-shaped from their centres).

    Ray ``k`` has angle ``theta_k = 2 pi k / K`` and direction ``(sin, cos)`` (the project's
    convention); between rays ``k`` and ``k + 1`` the boundary is the segment joining their end
    points, at distance ``r_k r_k1 sin(d) / (r_k sin(phi) + r_k1 sin(d - phi))`` from the centre
    in the direction at angle ``phi`` past ray ``k`` (``d = 2 pi / K``).

    Args:
        points: (P, S, 2) (x, y); centers: (P, 2); radii: (P, K), negative read as 0.

    Returns:
        (P, S) bool.
    """
    k = radii.shape[1]
    step = 2 * math.pi / k
    r = radii.clamp(min=0)
    d = points - centers[:, None, :]
    dist = d.norm(dim=-1)  # (P, S)
    theta = torch.atan2(d[..., 0], d[..., 1]) % (2 * math.pi)
    idx = (theta / step).floor().long().clamp(0, k - 1)
    phi = theta - idx * step
    r0 = torch.gather(r, 1, idx)
    r1 = torch.gather(r, 1, (idx + 1) % k)
    den = r0 * torch.sin(phi) + r1 * torch.sin(step - phi)
    bound = r0 * r1 * math.sin(step) / den.clamp(min=1e-12)
    return dist < torch.where(den > 0, bound, torch.zeros_like(bound))


def polar_pair_iou(
    centers_a: torch.Tensor,
    radii_a: torch.Tensor,
    centers_b: torch.Tensor,
    radii_b: torch.Tensor,
    resolution: int = 32,
) -> torch.Tensor:
    """IoU of P pairs of polar polygons, counted at ``resolution**2`` sample points (cell
    centres of a grid over each pair's union box). (P, 2), (P, K) x 2 -> (P,)."""
    pa = radii_to_points(centers_a, radii_a.clamp(min=0))
    pb = radii_to_points(centers_b, radii_b.clamp(min=0))
    lo = torch.minimum(pa.amin(1), pb.amin(1))
    hi = torch.maximum(pa.amax(1), pb.amax(1))
    t = (torch.arange(resolution, device=lo.device, dtype=lo.dtype) + 0.5) / resolution
    gx = lo[:, None, 0] + (hi - lo)[:, None, 0] * t  # (P, G)
    gy = lo[:, None, 1] + (hi - lo)[:, None, 1] * t
    pts = torch.stack(
        [gx[:, None, :].expand(-1, resolution, -1), gy[:, :, None].expand(-1, -1, resolution)],
        dim=-1,
    ).flatten(1, 2)  # (P, G*G, 2)
    ina = polar_inside(pts, centers_a, radii_a)
    inb = polar_inside(pts, centers_b, radii_b)
    inter = (ina & inb).sum(1).to(lo.dtype)
    union = (ina | inb).sum(1).to(lo.dtype)
    return inter / union.clamp(min=1)


def shape_nms(
    centers: torch.Tensor,
    radii: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    iou_threshold: float,
    resolution: int = 32,
    max_pairs: int = 1 << 20,
) -> torch.Tensor:
    """Class-aware greedy NMS on the IoU of polar polygons.

    Candidates are taken by decreasing score; one is removed when its shape IoU with a kept,
    higher-scored candidate of its class exceeds ``iou_threshold``. Pairs whose boxes rule it
    out (see the module docstring) are never rasterised.

    Args:
        centers: (N, 2); radii: (N, K); scores, classes: (N,).

    Returns:
        (M,) long indices of the kept candidates, by decreasing score.
    """
    n = scores.shape[0]
    order = scores.argsort(descending=True)
    if n <= 1:
        return order
    c, r, cls = centers[order], radii[order].clamp(min=0), classes[order]
    polys = radii_to_points(c, r)
    boxes = torch.cat([polys.amin(1), polys.amax(1)], 1)
    areas = polygon_areas(polys)
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter_box = (rb - lt).clamp(min=0).prod(-1)  # (N, N)
    bound = inter_box / torch.maximum(areas[:, None], areas[None, :]).clamp(min=1e-12)
    upper = torch.ones(n, n, dtype=torch.bool, device=scores.device).triu(1)
    cand = upper & (cls[:, None] == cls[None, :]) & (bound > iou_threshold)
    i, j = cand.nonzero(as_tuple=True)  # i scores higher than j
    suppress = torch.zeros(0, 2, dtype=torch.long, device=scores.device)
    for s in range(0, i.numel(), max_pairs):
        ii, jj = i[s : s + max_pairs], j[s : s + max_pairs]
        iou = polar_pair_iou(c[ii], r[ii], c[jj], r[jj], resolution)
        hit = iou > iou_threshold
        suppress = torch.cat([suppress, torch.stack([ii[hit], jj[hit]], 1)])
    # greedy order: j is removed iff some kept i < j suppresses it; iterate to the fixed point
    # (each pass settles at least one more level of the suppression chains)
    keep = torch.ones(n, dtype=torch.bool, device=scores.device)
    src, dst = suppress[:, 0], suppress[:, 1]
    for _ in range(n):
        removed = torch.zeros(n, dtype=torch.bool, device=scores.device)
        removed[dst[keep[src]]] = True
        new_keep = ~removed
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return order[keep]
