# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""Contour deformation: free 2-D moves of the contour points, for shapes no polar polygon draws.

A polar polygon is star-shaped from its centre, and refine stages only move points along their
rays, so a C, a U or a crescent cannot be drawn. `ContourDeformer` takes the refined polar
polygon, resamples it to N points evenly spaced along its length, and in each of its stages
samples the finest FPN level at the points (whatever the object's own level: a C's opening spans
a cell or two of its own level) and the input image around each point: a 3 x 3 window (the exact
edge, finer than any FPN level) and a profile along the contour's inward normal, up to 3/4 of
the object's size deep (how far in the object's colour goes: a point across a C's opening sees
the hole), adds each point's position relative to the centre
(normalised by the object's size), mixes neighbours along the contour with circular 1-D
convolutions and predicts a 2-D offset per point, scaled by the stride. Between stages the
contour is resampled evenly along its length again, so that a notch one stage carves gets the
points its sides need.

Training signal, two terms per stage, both distances normalised by the object's size and passed
through a Huber function (quadratic below ``beta``, so that the pixel noise of a contour already
on the boundary does not drown the large moves a concave shape needs):

* a matching loss that tolerates sliding along the contour (as E2EC's dynamic matching): every
  predicted point is pulled to its nearest point of the ground-truth contour (every part's
  edges), and every ground-truth vertex pulls the nearest predicted edge;
* a one-to-one term that keeps the points' order (E2EC's targets, `one_to_one_targets`): point n
  is pulled to point n of the ground truth resampled by arc length, started where it fits best.
  Matching alone pulled neighbouring points to opposite edges of thin parts: the contours
  crossed themselves (every person contour of the coco128 fit; docs/BENCHMARKS.md).

The stages train alone on a trained model (`PolarRefine.forward_deform_alone`: the rest is
frozen), and read the FPN features detached, so that their loss never pulls the features
shared with the classification and polar branches: trained through them, with the rest, the
stages pulled them away from the polar task.
"""

from typing import List, Optional, Sequence

import torch
from detectron2.config import configurable
from fvcore.nn import smooth_l1_loss
from torch import nn

from ..polar import radii_to_points
from .locations import Locations
from .sampling import sample_images, sample_levels

__all__ = [
    "ContourDeformer",
    "contour_match_loss",
    "one_to_one_targets",
    "point_segment_distance",
    "positive_edges",
    "resample_polygons",
    "self_crossing",
]


def resample_polygons(polygons: torch.Tensor, num_points: int) -> torch.Tensor:
    """(P, K, 2) closed polygons -> (P, N, 2) points evenly spaced along each one's length,
    the first at vertex 0. Degenerate (zero-length) polygons give N copies of vertex 0.

    Vectorised without ``searchsorted`` (so that it exports): each target arc position finds
    its edge by counting the cumulative lengths below it.
    """
    nxt = polygons.roll(-1, dims=1)
    seg = (nxt - polygons).norm(dim=-1)  # (P, K)
    cum = torch.cat([torch.zeros_like(seg[:, :1]), seg.cumsum(1)], 1)  # (P, K + 1)
    total = cum[:, -1:]  # (P, 1)
    steps = torch.arange(num_points, device=polygons.device, dtype=polygons.dtype) / num_points
    target = steps[None] * total  # (P, N)
    k = polygons.shape[1]
    edge = ((cum[:, None, 1:] <= target[:, :, None]).sum(-1)).clamp(max=k - 1)  # (P, N)
    start = torch.gather(cum[:, :-1], 1, edge)
    length = torch.gather(seg, 1, edge)
    t = ((target - start) / length.clamp(min=1e-6)).clamp(0, 1)[..., None]
    a = torch.gather(polygons, 1, edge[..., None].expand(-1, -1, 2))
    b = torch.gather(nxt, 1, edge[..., None].expand(-1, -1, 2))
    return a + t * (b - a)


def point_segment_distance(points: torch.Tensor, a: torch.Tensor, b: torch.Tensor):
    """Euclidean distance of points to segments, broadcast: (..., 2) each -> (...)."""
    ab = b - a
    t = ((points - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-12)
    proj = a + t.clamp(0, 1)[..., None] * ab
    return (points - proj).norm(dim=-1)


def _huber(x: torch.Tensor, beta: float) -> torch.Tensor:
    """Huber of non-negative distances ``x`` (fvcore's smooth L1 against 0; ``beta`` = 0: x)."""
    return smooth_l1_loss(x, torch.zeros_like(x), beta, reduction="none")


def contour_match_loss(
    points: torch.Tensor, gt_edges: torch.Tensor, size: torch.Tensor, beta: float = 0.0
):
    """The matching loss of predicted contours against ground-truth edge sets, per row.

    Args:
        points: (P, N, 2) predicted closed contours (input pixels).
        gt_edges: (P, E, 2, 2) each row's ground-truth edges (every part; zero-length edges are
            padding and are ignored).
        size: (P,) the object's size (pixels) that normalises the distances.
        beta: the Huber threshold (a fraction of ``size``); 0: plain distances.

    Returns:
        (P,) mean Huber distance (over ``size``) of the predicted points to the ground-truth
        contour plus that of the ground-truth vertices to the predicted contour.
    """
    size = size.clamp(min=1.0)[:, None]
    a, b = gt_edges[:, :, 0], gt_edges[:, :, 1]  # (P, E, 2)
    real = (b - a).abs().sum(-1) > 0  # (P, E)
    d = point_segment_distance(points[:, :, None], a[:, None], b[:, None])  # (P, N, E)
    d = torch.where(real[:, None], d, torch.full_like(d, float("inf")))
    to_gt = d.amin(-1)  # (P, N)
    to_gt = torch.where(torch.isfinite(to_gt), to_gt, torch.zeros_like(to_gt))
    nxt = points.roll(-1, dims=1)
    e = point_segment_distance(a[:, :, None], points[:, None], nxt[:, None])  # (P, E, N)
    from_gt = e.amin(-1)  # (P, E)
    count = real.sum(1).clamp(min=1)
    to_gt = _huber(to_gt / size, beta).mean(1)
    from_gt = (_huber(from_gt / size, beta) * real).sum(1) / count
    return to_gt + from_gt


class _CircularConv(nn.Module):
    """Conv1d over the points of closed contours, padded circularly by concatenation (which
    exports to ONNX as Concat + Conv). (P, C, N) -> (P, C', N)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int):
        super().__init__()
        self.pad = kernel // 2
        self.conv = nn.Conv1d(in_channels, out_channels, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[..., -self.pad :], x, x[..., : self.pad]], -1)
        return self.conv(x)


class InitContour(nn.Module):
    """A free contour regressed at each location, as E2EC's initial contour: N points as 2-D
    offsets from the location (in strides, around a circle of two strides), from the 3 x 3
    cells of the location's own level. Trained with the rest of the model, it is not bound to
    be star-shaped from the location: the deformation stages can start from it.
    (P,) locations -> (P, N, 2) input pixels."""

    def __init__(self, in_channels: int, num_points: int, hidden: int):
        super().__init__()
        self.num_points = num_points
        window = torch.tensor([(dx, dy) for dy in (-1.0, 0.0, 1.0) for dx in (-1.0, 0.0, 1.0)])
        self.register_buffer("window", window, persistent=False)
        t = torch.arange(num_points, dtype=torch.float32) * (2 * torch.pi / num_points)
        self.register_buffer("circle", 2.0 * torch.stack([t.sin(), t.cos()], -1), persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(9 * in_channels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * num_points),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, features, locs: Locations, location, image):
        cells = locs.cells[location][:, None] + self.window  # (P, 9, 2)
        x = sample_levels(features, locs, location, image, cells)  # (P, 9, C)
        off = self.mlp(x.flatten(1)).view(-1, self.num_points, 2) + self.circle
        return locs.points[location][:, None] + off * locs.strides[location][:, None, None]


def init_contour_loss(pts, gt_edges, weight, normalizer, beta):
    """The deformation stages' loss (matching plus one-to-one, Huber) of (P, N, 2) contours."""
    size = _polygon_size_from_edges(gt_edges)
    pts = pts.float()
    match = contour_match_loss(pts, gt_edges, size, beta)
    target = one_to_one_targets(pts.detach(), gt_edges)
    dist = (pts - target).norm(dim=-1) / size.clamp(min=1.0)[:, None]
    match = match + _huber(dist, beta).mean(1)
    return (match * weight).sum() / normalizer


class _GlobalStage(nn.Module):
    """The whole contour's shape -> every point's move: an MLP over the N points' positions
    relative to the centre (in object sizes), as E2EC's global deformation. A local stage moves
    a point by what it and its neighbours see, which cannot carve a C's hole out of its polar
    contour (points deep in the hole see background all around); the shape of the whole polar
    contour (a wedge where the opening is) says where the hole is. (P, N, 2) -> (P, N, 2)
    offsets in object sizes."""

    def __init__(self, num_points: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(2 * num_points, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * num_points),
        )
        nn.init.zeros_(self.mlp[-1].weight)  # starts as the identity: the polar contour
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, rel):
        return self.mlp(rel.flatten(1)).view(rel.shape)


class _DeformStage(nn.Module):
    def __init__(self, in_channels: int, hidden: int, kernel: int, depth: int):
        super().__init__()
        self.embed = nn.Linear(in_channels, hidden)
        layers = []
        for i in range(depth):
            layers += [_CircularConv(hidden + 2 if i == 0 else hidden, hidden, kernel), nn.ReLU()]
        self.mix = nn.Sequential(*layers)
        # no bias: a shift shared by every point of every contour has no meaning here
        self.offset = nn.Conv1d(hidden, 2, 1, bias=False)
        nn.init.zeros_(self.offset.weight)  # starts as the identity: the polar contour

    def forward(self, sampled, rel):
        """sampled (P, N, C), rel (P, N, 2) -> (P, N, 2) offsets in strides."""
        x = torch.cat([self.embed(sampled), rel], -1).transpose(1, 2)  # (P, H + 2, N)
        return self.offset(self.mix(x)).transpose(1, 2)


# The image each point reads: a 3 x 3 window, 2 px apart ((x, y) offsets in input pixels), and a
# profile along the contour's inward normal (distances in object sizes, negative: outwards).
_WINDOW = tuple((dx, dy) for dy in (-2.0, 0.0, 2.0) for dx in (-2.0, 0.0, 2.0))
_PROFILE = (-0.25, -0.125, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75)


class ContourDeformer(nn.Module):
    """The deformation stages (``MODEL.POLAR_REFINE.DEFORM``).

    Each stage holds ``(C + 51) * H + (H + 2) * H * kernel + (depth - 1) * H * H * kernel + 2 * H``
    parameters or so (H = ``hidden``; 51 = RGB at the 9 + 8 image samples); the default two stages
    stay under 1 % of the R-50-FPN model.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_points: int = 64,
        num_stages: int = 2,
        global_dim: int = 0,
        hidden: int = 64,
        kernel: int = 9,
        depth: int = 2,
        loss_weight: float = 20.0,
        huber_beta: float = 0.05,
        pixel_std: Sequence[float] = (1.0, 1.0, 1.0),
    ):
        """
        Args:
            in_channels: C, channels of the sampled FPN levels.
            num_points: N, points of the deformed contour.
            num_stages: local stages applied in turn.
            global_dim: width of the global stage that moves the points first (`_GlobalStage`);
                0: none.
            hidden: width of the point features.
            kernel: size of the circular convolutions along the contour.
            depth: circular convolutions per stage.
            loss_weight: weight of each stage's loss (matching plus one-to-one).
            huber_beta: Huber threshold of both terms, a fraction of the object's size.
            pixel_std: ``MODEL.PIXEL_STD``, per input channel: the preprocessed image times
                ``pixel_std / 64`` is read, about [-2, 2] whatever the normalisation. (Raw
                values of +-128, with ``PIXEL_STD`` 1, stalled the stages' training.)
        """
        super().__init__()
        self.num_points = num_points
        self.loss_weight = loss_weight
        self.huber_beta = huber_beta
        self.register_buffer("window", torch.tensor(_WINDOW), persistent=False)
        self.register_buffer("profile", torch.tensor(_PROFILE), persistent=False)
        scale = torch.tensor([float(s) / 64.0 for s in pixel_std])
        self.register_buffer("pixel_scale", scale, persistent=False)
        width = in_channels + (len(_WINDOW) + len(_PROFILE)) * len(pixel_std)
        self.global_stage = _GlobalStage(num_points, global_dim) if global_dim > 0 else None
        self.stages = nn.ModuleList(
            _DeformStage(width, hidden, kernel, depth) for _ in range(num_stages)
        )

    @classmethod
    def from_config(cls, cfg, in_channels: int):
        d = cfg.MODEL.POLAR_REFINE.DEFORM
        return {
            "in_channels": in_channels,
            "num_points": d.NUM_POINTS,
            "num_stages": d.NUM_STAGES,
            "global_dim": d.GLOBAL_DIM,
            "hidden": d.HIDDEN_DIM,
            "kernel": d.KERNEL_SIZE,
            "depth": d.NUM_CONVS,
            "loss_weight": d.LOSS_WEIGHT,
            "huber_beta": d.HUBER_BETA,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    def forward(
        self,
        features: List[torch.Tensor],
        pixels: torch.Tensor,
        locs: Locations,
        location: torch.Tensor,
        image: torch.Tensor,
        radii: torch.Tensor,
        start: Optional[torch.Tensor] = None,
    ) -> List[torch.Tensor]:
        """
        Args:
            features: per level (N, C, H_l, W_l), the levels of ``locs``, finest first (only
                the finest is read, detached).
            pixels: (N, 3, H, W) the preprocessed (normalised, padded) input images.
            locs, location, image: each contour's location (its centre and level) and image.
            radii: (P, K) the refined polar radii around the location's centre (the polar
                contours to start from; not trained through here).

        Returns:
            every stage's (P, N, 2) contour (the global stage's first), input pixels; the last
            one is the output.
        """
        stride = locs.strides[location][:, None, None]  # (P, 1, 1)
        centre = locs.points[location][:, None]  # (P, 1, 2)
        polygons = radii_to_points(centre[:, 0], radii.detach().float().clamp(min=0))
        if start is not None:
            polygons = start.detach().float()
        pts = resample_polygons(polygons, self.num_points)
        size = _polygon_size(polygons)[:, None, None]  # (P, 1, 1)
        features = [f.detach() for f in features]
        # every contour reads the finest level (location 0 is on it), whatever its own level:
        # a concave part spans a cell or two of the object's level, several of the finest
        finest = torch.zeros_like(location)
        finest_stride = locs.strides[:1]
        out = []
        if self.global_stage is not None:
            pts = pts + self.global_stage((pts - centre) / size) * size
            out.append(pts)
            pts = resample_polygons(pts.detach(), self.num_points)
        for stage in self.stages:
            cells = pts / finest_stride - 0.5  # pixel -> cell coordinates (centres at integers)
            levels = sample_levels(features, locs, finest, image, cells)
            sampled = torch.cat([levels, self._image_samples(pixels, image, pts, size)], -1)
            offset = stage(sampled, (pts - centre) / size)
            pts = pts + offset * stride
            out.append(pts)
            # evenly spaced again: a notch a stage carved gets the points its sides need
            pts = resample_polygons(pts.detach(), self.num_points)
        return out

    def _image_samples(self, pixels, image, pts, size):
        """(P, N, 51): the image (scaled RGB) at each of the (P, N, 2) points' 3 x 3 window and
        inward profile, ``size`` (P, 1, 1) the objects' sizes."""
        p, n = pts.shape[:2]
        inward = _inward_normals(pts)  # (P, N, 2)
        profile = inward[:, :, None] * (self.profile[:, None] * size[..., None])  # (P, N, 8, 2)
        where = pts[:, :, None] + torch.cat([self.window.expand(p, n, -1, -1), profile], 2)
        values = sample_images(pixels.detach(), image, where.flatten(1, 2) - 0.5)
        return (values.view(p, n, where.shape[2], pixels.shape[1]) * self.pixel_scale).flatten(2)

    def losses(self, contours: List[torch.Tensor], gt_edges, weight, normalizer):
        """``loss_deform``, ``loss_deform2``, ...: each stage's matching plus one-to-one loss
        (positives weighted by ``weight``, summed, divided by ``normalizer``)."""
        size = _polygon_size_from_edges(gt_edges)
        losses = {}
        for s, pts in enumerate(contours):
            pts = pts.float()
            match = contour_match_loss(pts, gt_edges, size, self.huber_beta)
            target = one_to_one_targets(pts.detach(), gt_edges)
            dist = (pts - target).norm(dim=-1) / size.clamp(min=1.0)[:, None]
            match = match + _huber(dist, self.huber_beta).mean(1)
            loss = (match * weight).sum()
            key = "loss_deform" if s == 0 else f"loss_deform{s + 1}"
            losses[key] = self.loss_weight * loss / normalizer
        return losses


@torch.no_grad()
def one_to_one_targets(points: torch.Tensor, gt_edges: torch.Tensor) -> torch.Tensor:
    """Order-keeping targets (E2EC's one-to-one matching): each row's largest ground-truth part,
    resampled to N points by arc length, turned the way the prediction turns, and started at
    the cyclic shift nearest to it on average.

    Args:
        points: (P, N, 2) predicted closed contours.
        gt_edges: (P, E, 2, 2) ground-truth edges, parts one after another (zero-length edges
            are padding).

    Returns:
        (P, N, 2): target n of row p is the one point n of that row is pulled to.
    """
    a, b = gt_edges[:, :, 0], gt_edges[:, :, 1]
    real = (b - a).abs().sum(-1) > 0  # (P, E)
    starts = torch.ones_like(real)
    starts[:, 1:] = (a[:, 1:] - b[:, :-1]).abs().sum(-1) > 1e-4  # a new part begins
    part = starts.long().cumsum(1)  # (P, E) part ids, from 1
    twice_area = (a[..., 0] * b[..., 1] - b[..., 0] * a[..., 1]) * real
    areas = torch.zeros(part.shape[0], part.shape[1] + 1, device=part.device)
    areas = areas.scatter_add(1, part, twice_area)
    best = areas.abs().argmax(1, keepdim=True)
    keep = (part == best) & real  # (P, E): the largest part's edges
    seg = (b - a).norm(dim=-1) * keep
    cum = torch.cat([torch.zeros_like(seg[:, :1]), seg.cumsum(1)], 1)  # (P, E + 1)
    n = points.shape[1]
    arc = torch.arange(n, device=points.device, dtype=seg.dtype) / n * cum[:, -1:]  # (P, N)
    # the first kept edge that ends beyond each arc position
    after = (cum[:, None, 1:] > arc[:, :, None]) & keep[:, None]  # (P, N, E)
    index = torch.arange(seg.shape[1], device=points.device)
    edge = torch.where(after, index, seg.shape[1]).amin(-1).clamp(max=seg.shape[1] - 1)
    t = (arc - cum.gather(1, edge)) / seg.gather(1, edge).clamp(min=1e-6)
    pa = a.gather(1, edge[..., None].expand(-1, -1, 2))
    pb = b.gather(1, edge[..., None].expand(-1, -1, 2))
    target = pa + t.clamp(0, 1)[..., None] * (pb - pa)  # (P, N, 2)
    x, y = points[..., 0], points[..., 1]
    turn = (x * y.roll(-1, 1) - x.roll(-1, 1) * y).sum(1)
    flip = turn * areas.gather(1, best)[:, 0] < 0
    target = torch.where(flip[:, None, None], target.flip(1), target)
    ring = torch.arange(n, device=points.device)
    shifts = target[:, (ring[:, None] + ring[None]) % n]  # (P, N shifts, N, 2): k -> roll(-k)
    cost = (shifts - points[:, None]).norm(dim=-1).mean(-1)  # (P, N)
    return shifts[torch.arange(points.shape[0], device=points.device), cost.argmin(1)]


def self_crossing(contours: torch.Tensor) -> torch.Tensor:
    """(P, N, 2) closed contours -> (P,) bool: two of a contour's non-adjacent edges cross
    (a tangled contour, which the even-odd fill draws with holes). (P, N, N) memory."""

    def turn(o, p, q):  # > 0 when o -> p -> q turns counter-clockwise
        return (p[..., 0] - o[..., 0]) * (q[..., 1] - o[..., 1]) - (p[..., 1] - o[..., 1]) * (
            q[..., 0] - o[..., 0]
        )

    a, b = contours[:, :, None], contours.roll(-1, 1)[:, :, None]  # edge i: (P, N, 1, 2)
    c, d = a.transpose(1, 2), b.transpose(1, 2)  # edge j: (P, 1, N, 2)
    cross = (turn(a, b, c) * turn(a, b, d) < 0) & (turn(c, d, a) * turn(c, d, b) < 0)
    n = contours.shape[1]
    gap = (torch.arange(n)[:, None] - torch.arange(n)[None]).abs()
    apart = (gap > 1) & (gap < n - 1)  # edges that share no vertex
    return (cross & apart.to(contours.device)).flatten(1).any(1)


def _inward_normals(pts: torch.Tensor) -> torch.Tensor:
    """(P, N, 2) closed contours -> (P, N, 2) unit normals (of the chord between each point's
    neighbours), turned towards the inside: the side of the contour's mean point, on average."""
    tangent = pts.roll(-1, 1) - pts.roll(1, 1)
    normal = torch.stack([-tangent[..., 1], tangent[..., 0]], -1)
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    towards = ((pts.mean(1, keepdim=True) - pts) * normal).sum(-1).mean(1)  # (P,)
    return normal * torch.where(towards >= 0, 1.0, -1.0)[:, None, None]


def _polygon_size(polygons: torch.Tensor) -> torch.Tensor:
    """sqrt(area) of (P, K, 2) polygons (shoelace), at least 1 px."""
    x, y = polygons[..., 0], polygons[..., 1]
    area = 0.5 * (x * y.roll(-1, 1) - x.roll(-1, 1) * y).sum(1).abs()
    return area.clamp(min=1.0).sqrt()


def _polygon_size_from_edges(edges: torch.Tensor) -> torch.Tensor:
    """sqrt(|area|) of (P, E, 2, 2) edge sets (shoelace over every edge; padding adds 0)."""
    a, b = edges[:, :, 0], edges[:, :, 1]
    area = 0.5 * (a[..., 0] * b[..., 1] - b[..., 0] * a[..., 1]).sum(1).abs()
    return area.clamp(min=1.0).sqrt()


def positive_edges(gt_instances, targets) -> torch.Tensor:
    """(P, E, 2, 2) the ground-truth edges of every positive, images concatenated in order,
    zero-padded to the largest edge count (zero-length edges are ignored by the loss)."""
    edges = [inst.gt_polar_edges[t["pos_inst"]] for inst, t in zip(gt_instances, targets)]
    width = max([e.shape[1] for e in edges] + [1])
    return torch.cat(
        [torch.nn.functional.pad(e, (0, 0, 0, 0, 0, width - e.shape[1])) for e in edges]
    )
