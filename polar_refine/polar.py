# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""Exact polar geometry for polar-contour instance segmentation.

Conventions (the patent's formula (1)):

* image coordinates: ``x`` to the right, ``y`` down, in pixels;
* ray ``k`` of ``K`` has angle ``theta_k = 2*pi*k/K`` and direction ``(sin theta_k, cos theta_k)``,
  so ray 0 points along ``+y`` and rays turn towards ``+x`` as ``k`` grows;
* an object is a centre ``(cx, cy)`` plus ``K`` radii; its contour is the polygon through the ray
  end points ``(cx + r_k sin theta_k, cy + r_k cos theta_k)``.

Everything here is vectorised in torch (no Python loop over points, rays or edges) and works on
any device. Functions take and return float tensors; integer inputs are promoted.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = [
    "ray_angles",
    "ray_directions",
    "radii_to_points",
    "polygon_edges",
    "polygons_to_padded_edges",
    "edges_radii",
    "edges_contain",
    "polygon_radii",
    "polygons_radii",
    "polar_iou",
    "polar_iou_loss",
    "polar_centerness",
    "polygon_area_centroid",
    "points_in_polygons",
    "mass_center",
]

Polygon = Union[torch.Tensor, Sequence[float]]

# Edges shorter than this (in pixels) and rays nearly parallel to an edge are ignored.
_EPS = 1e-6
# Bound on the number of (point, ray, edge) triples held in memory at once by `edges_radii`.
_CHUNK_ELEMENTS = 1 << 23


def ray_angles(num_rays: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Angles ``theta_k = 2*pi*k/K`` for ``k = 0..K-1``. Returns (K,)."""
    if num_rays < 1:
        raise ValueError(f"num_rays must be >= 1, got {num_rays}")
    return torch.arange(num_rays, device=device, dtype=dtype) * (2 * math.pi / num_rays)


def ray_directions(num_rays: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Unit ray directions ``(sin theta_k, cos theta_k)``. Returns (K, 2) as (dx, dy)."""
    theta = ray_angles(num_rays, device=device, dtype=torch.float64)
    return torch.stack([theta.sin(), theta.cos()], dim=1).to(dtype)


def radii_to_points(centers: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Ray end points of polar contours.

    Args:
        centers: (N, 2) as (x, y).
        radii: (N, K) lengths along the K rays (same unit as ``centers``).

    Returns:
        (N, K, 2) points ``(cx + r sin theta_k, cy + r cos theta_k)``.
    """
    dirs = ray_directions(radii.shape[-1], device=radii.device, dtype=radii.dtype)
    return centers[..., None, :].to(radii.dtype) + radii[..., None] * dirs


def polygon_edges(polygon: Polygon) -> torch.Tensor:
    """Closed-polygon edges. ``polygon`` is (M, 2) or a flat [x0, y0, x1, y1, ...] list.

    Returns (M, 2, 2): edge ``m`` runs from vertex ``m`` to vertex ``(m + 1) % M``.
    """
    poly = torch.as_tensor(polygon, dtype=torch.float32)
    if poly.dim() == 1:
        poly = poly.reshape(-1, 2)
    return torch.stack([poly, poly.roll(-1, dims=0)], dim=1)


def polygons_to_padded_edges(instances: Sequence[Sequence[Polygon]], device=None) -> torch.Tensor:
    """Pack the edges of every part of every instance into one padded tensor.

    Args:
        instances: for each of N instances, its parts, each a polygon as in `polygon_edges`.

    Returns:
        (N, E, 2, 2) edges, where E is the largest edge count; padding edges have zero length,
        which `edges_radii` never intersects. An instance's parts are simply concatenated, so
        its radii are the farthest crossing over all parts (see `polygons_radii`).
    """
    per_inst = []
    for parts in instances:
        edges = [polygon_edges(p) for p in parts if len(p) > 0]
        per_inst.append(torch.cat(edges, 0) if edges else torch.zeros(0, 2, 2))
    n_max = max([e.shape[0] for e in per_inst], default=0)
    out = torch.zeros(len(per_inst), max(n_max, 1), 2, 2)
    for i, e in enumerate(per_inst):
        out[i, : e.shape[0]] = e
    return out.to(device) if device is not None else out


def edges_radii(points: torch.Tensor, edges: torch.Tensor, num_rays: int) -> torch.Tensor:
    """Distance along each ray from each point to the **farthest** edge crossing.

    Each ray ``p + t u`` (``t >= 0``) is intersected exactly with every segment ``a + s (b - a)``
    (``0 <= s <= 1``). Of all crossings the largest ``t`` is kept: on a concave shape a ray can
    leave and re-enter the object, and, like PolarMask, we keep the far end so the contour
    encloses every part of the object the ray meets. A ray that meets no edge gives 0 (e.g. a
    point outside the object looking away from it). Zero-length edges (padding) never count.

    Args:
        points: (P, 2) ray origins (x, y).
        edges: (E, 2, 2) segments shared by all points, or (P, E, 2, 2) one edge set per point.
        num_rays: K.

    Returns:
        (P, K) radii, same dtype as ``points`` (at least float32).
    """
    dtype = torch.promote_types(points.dtype, torch.float32)
    points = points.to(dtype)
    edges = edges.to(device=points.device, dtype=dtype)
    num_points = points.shape[0]
    per_point = edges.dim() == 4
    num_edges = edges.shape[-3]
    out = points.new_zeros(num_points, num_rays)
    if num_points == 0 or num_edges == 0:
        return out

    u = ray_directions(num_rays, device=points.device, dtype=dtype)  # (K, 2)
    a = edges[..., 0, :]  # (E, 2) or (P, E, 2)
    e = edges[..., 1, :] - a

    def cross(v, w):
        return v[..., 0] * w[..., 1] - v[..., 1] * w[..., 0]

    chunk = max(1, _CHUNK_ELEMENTS // (num_rays * num_edges))
    for start in range(0, num_points, chunk):
        p = points[start : start + chunk]  # (p, 2)
        a_c = a[start : start + chunk] if per_point else a[None]  # (p|1, E, 2)
        e_c = e[start : start + chunk] if per_point else e[None]
        # Solve p + t u = a + s e:
        #   t = cross(a - p, e) / cross(u, e),  s = cross(a - p, u) / cross(u, e)
        denom = cross(u[None, :, None, :], e_c[:, None])  # (p|1, K, E)
        ok = denom.abs() > _EPS
        inv = torch.where(ok, 1.0 / torch.where(ok, denom, torch.ones_like(denom)), 0.0)
        w = a_c - p[:, None, :]  # (p, E, 2)
        t = (cross(w, e_c)[:, None, :]) * inv  # (p, K, E)
        s = cross(w[:, None, :, :], u[None, :, None, :]) * inv  # (p, K, E)
        hit = ok & (t >= 0) & (s >= -_EPS) & (s <= 1 + _EPS)
        t = torch.where(hit, t, torch.zeros_like(t))
        out[start : start + chunk] = t.amax(dim=-1)
    return out


def edges_contain(points: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Even-odd inside test of points against edge sets, vectorised in torch.

    Args:
        points: (P, 2).
        edges: (E, 2, 2) shared, or (P, E, 2, 2) one set per point (zero-length padding is
            ignored). A hole drawn as another part of the same object counts as outside.

    Returns:
        (P,) bool.
    """
    points = points.to(torch.promote_types(points.dtype, torch.float32))
    edges = edges.to(device=points.device, dtype=points.dtype)
    if edges.dim() == 3:
        edges = edges[None]
    a, b = edges[..., 0, :], edges[..., 1, :]  # (P|1, E, 2)
    px, py = points[:, None, 0], points[:, None, 1]
    straddle = (a[..., 1] > py) != (b[..., 1] > py)
    dy = b[..., 1] - a[..., 1]
    dy = torch.where(dy.abs() < 1e-12, torch.full_like(dy, 1e-12), dy)
    x_cross = a[..., 0] + (py - a[..., 1]) * (b[..., 0] - a[..., 0]) / dy
    return (straddle & (px < x_cross)).sum(-1) % 2 == 1


def polygon_radii(polygon: Polygon, points: torch.Tensor, num_rays: int) -> torch.Tensor:
    """Radii from ``points`` to one polygon's boundary along ``num_rays`` rays.

    Args:
        polygon: (M, 2) vertices in order (either orientation), or a flat COCO-style list.
        points: (P, 2) ray origins (x, y).
        num_rays: K.

    Returns:
        (P, K) distances to the farthest boundary crossing along each ray (see `edges_radii`);
        0 where a ray meets no edge.

    An object made of several polygons (parts) is handled by `polygons_radii`, which gives each
    ray the farthest crossing over all parts.
    """
    points = torch.as_tensor(points)
    return edges_radii(points, polygon_edges(polygon).to(points.device), num_rays)


def polygons_radii(parts: Iterable[Polygon], points: torch.Tensor, num_rays: int) -> torch.Tensor:
    """`polygon_radii` for a multi-part object: the farthest crossing over all parts' edges."""
    points = torch.as_tensor(points)
    edges = [polygon_edges(p) for p in parts if len(p) > 0]
    if not edges:
        return points.new_zeros(points.shape[0], num_rays, dtype=torch.float32)
    return edges_radii(points, torch.cat(edges, 0).to(points.device), num_rays)


def polar_iou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Polar IoU ``sum_k min(r_k, r*_k) / sum_k max(r_k, r*_k)``. (N, K), (N, K) -> (N,)."""
    r_min = torch.minimum(pred, target).sum(-1)
    r_max = torch.maximum(pred, target).sum(-1)
    return r_min / r_max.clamp(min=eps)


def polar_iou_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    reduction: str = "sum",
    eps: float = 1e-6,
) -> torch.Tensor:
    """Polar IoU loss ``log(sum_k max / sum_k min)`` per row (the patent's L_coarse and L_fine).

    Args:
        pred, target: (N, K) non-negative radii. Target rays of length 0 are allowed: ``eps`` in
            both sums keeps the loss and its gradient finite.
        weight: optional (N,) per-row weights (the centerness targets in the model).
        reduction: "sum", "mean" or "none".

    Negative predictions are read as 0, and the clamp passes them no gradient.

    Returns:
        scalar, or (N,) for ``reduction="none"``.
    """
    pred = pred.clamp(min=0)
    r_max = torch.maximum(pred, target).sum(-1) + eps
    r_min = torch.minimum(pred, target).sum(-1) + eps
    loss = (r_max / r_min).log()
    if weight is not None:
        loss = loss * weight
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum()
    return loss


def polar_centerness(radii: torch.Tensor) -> torch.Tensor:
    """Polar centerness ``sqrt(min_k r_k / max_k r_k)``, 0 when all radii are 0. (N, K) -> (N,)."""
    r_max = radii.amax(-1)
    r_min = radii.amin(-1).clamp(min=0)
    return torch.where(r_max > 0, (r_min / r_max.clamp(min=_EPS)).sqrt(), torch.zeros_like(r_max))


def polygon_area_centroid(polygon: Polygon) -> Tuple[float, torch.Tensor]:
    """Shoelace area (absolute) and area centroid (2,) float64 of one simple polygon.

    The centroid is NaN when the area is 0 (collinear or fewer than 3 points).
    """
    area, cent = _area_centroid_np(_as_np_poly(polygon))
    return area, torch.from_numpy(cent)


def points_in_polygons(points: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Even-odd point-in-polygon test against a set of edges (all parts of an object).

    Args:
        points: (P, 2); edges: (E, 2, 2).

    Returns:
        (P,) bool. Holes drawn as separate polygons count as outside (even-odd rule).
    """
    points = torch.as_tensor(points, dtype=torch.float64)
    edges = torch.as_tensor(edges).to(torch.float64)
    return torch.from_numpy(_in_polygons_np(points.numpy(), edges.numpy()))


def mass_center(parts: Sequence[Polygon]) -> torch.Tensor:
    """Mass centre of an object given as one or more polygons, inside the object when possible.

    Rule:
      1. area-weighted centroid of all parts (shoelace);
      2. if that is undefined (zero total area: collinear or tiny polygons), the mean vertex;
      3. if the point is not inside the object (even-odd over all parts: C shapes, rings), it is
         moved to the nearest boundary point ``q`` and then, along the same direction, to the
         middle of the chord the object spans there, so it lies strictly inside with room on
         both sides. Degenerate objects with no interior keep the point of step 2.

    Args:
        parts: polygons as (M, 2) tensors/arrays or flat COCO lists.

    Returns:
        (2,) float32 (x, y); NaN only when no part has a vertex.
    """
    polys = [_as_np_poly(p) for p in parts if len(p) > 0]
    polys = [p for p in polys if p.shape[0] > 0]
    if not polys:
        return torch.full((2,), float("nan"))
    return torch.from_numpy(_mass_center_np(polys)).float()


# ---------------------------------------------------------------------------------------------
# numpy kernels: the mass centre runs once per instance on the CPU, where numpy's small-array
# overhead is far below torch's.


def _as_np_poly(polygon) -> np.ndarray:
    if isinstance(polygon, torch.Tensor):
        polygon = polygon.detach().cpu().numpy()
    return np.asarray(polygon, dtype=np.float64).reshape(-1, 2)


def _area_centroid_np(poly: np.ndarray) -> Tuple[float, np.ndarray]:
    nan = np.full(2, np.nan)
    if poly.shape[0] < 3:
        return 0.0, nan
    x, y = poly[:, 0], poly[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    c = x * yn - xn * y
    a2 = c.sum()
    if abs(a2) < 1e-12:
        return 0.0, nan
    return float(abs(a2) / 2), np.array([((x + xn) * c).sum(), ((y + yn) * c).sum()]) / (3 * a2)


def _edges_np(polys: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.stack([p, np.roll(p, -1, 0)], 1) for p in polys], 0)


def _in_polygons_np(points: np.ndarray, edges: np.ndarray) -> np.ndarray:
    if edges.shape[0] == 0:
        return np.zeros(points.shape[0], dtype=bool)
    a, b = edges[:, 0], edges[:, 1]
    px, py = points[:, None, 0], points[:, None, 1]
    straddle = (a[None, :, 1] > py) != (b[None, :, 1] > py)
    dy = b[:, 1] - a[:, 1]
    dy = np.where(np.abs(dy) < 1e-12, 1e-12, dy)
    x_cross = a[None, :, 0] + (py - a[None, :, 1]) * (b[None, :, 0] - a[None, :, 0]) / dy[None]
    return (straddle & (px < x_cross)).sum(-1) % 2 == 1


def _mass_center_np(polys: Sequence[np.ndarray]) -> np.ndarray:
    stats = [_area_centroid_np(p) for p in polys]
    total = sum(a for a, _ in stats)
    if total > 0:
        c = sum(a * ct for a, ct in stats if a > 0) / total
    else:
        c = np.concatenate(polys, 0).mean(0)
    edges = _edges_np(polys)
    if total <= 0 or _in_polygons_np(c[None], edges)[0]:
        return c
    a, b = edges[:, 0], edges[:, 1]
    e = b - a
    s = np.clip(((c[None] - a) * e).sum(-1) / np.maximum((e * e).sum(-1), 1e-12), 0, 1)
    q_all = a + s[:, None] * e
    q = q_all[((q_all - c[None]) ** 2).sum(-1).argmin()]
    d = q - c
    dist = float(np.linalg.norm(d))
    if dist < 1e-9:
        return c
    d = d / dist
    # crossings of the line c + t d with the boundary beyond q: the chord entered at q
    denom = d[0] * e[:, 1] - d[1] * e[:, 0]
    ok = np.abs(denom) > 1e-12
    denom = np.where(ok, denom, 1.0)
    w = a - c
    t = (w[:, 0] * e[:, 1] - w[:, 1] * e[:, 0]) / denom
    s = (w[:, 0] * d[1] - w[:, 1] * d[0]) / denom
    hit = ok & (s >= 0) & (s <= 1) & (t > dist + 1e-6)
    if not hit.any():
        return q
    return c + d * (dist + t[hit].min()) / 2
