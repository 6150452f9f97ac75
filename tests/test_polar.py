"""Known-answer tests for polar_refine.polar (the geometry everything else relies on)."""

import math

import pytest
import torch

from polar_refine import polar


def regular_polygon(n, radius, cx=0.0, cy=0.0):
    t = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    return torch.stack([cx + radius * t.cos(), cy + radius * t.sin()], 1)


def dist_to_boundary(points, polygon):
    """(P, 2), (M, 2) -> (P,) distance from each point to the closed polygon."""
    a = polygon.to(torch.float64)
    b = a.roll(-1, 0)
    e = b - a
    p = points.to(torch.float64)[:, None]
    s = (((p - a) * e).sum(-1) / (e * e).sum(-1)).clamp(0, 1)
    q = a + s[..., None] * e
    return (q - p).norm(dim=-1).amin(1)


def test_ray_angles_and_directions():
    th = polar.ray_angles(36)
    assert th.shape == (36,)
    assert th[1].item() == pytest.approx(math.pi / 18)
    d = polar.ray_directions(4)
    # ray 0 along +y, ray 1 along +x (the patent's formula (1): x += r sin, y += r cos)
    assert torch.allclose(
        d, torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [-1.0, 0.0]]), atol=1e-6
    )


def test_radii_to_points_seed_convention():
    pts = polar.radii_to_points(torch.tensor([[10.0, 20.0]]), torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    expected = torch.tensor([[[10.0, 21.0], [12.0, 20.0], [10.0, 17.0], [6.0, 20.0]]])
    assert torch.allclose(pts, expected, atol=1e-5)


def test_circle_gives_equal_radii():
    poly = regular_polygon(64, 50.0, cx=100, cy=80)
    r = polar.polygon_radii(poly, torch.tensor([[100.0, 80.0]]), 36)
    assert r.shape == (1, 36)
    assert (r - 50.0).abs().max().item() / 50.0 < 0.005
    assert (r.max() - r.min()).item() / 50.0 < 0.005


def test_square_known_values():
    a = 10.0
    square = torch.tensor([[-a, -a], [a, -a], [a, a], [-a, a]]) + torch.tensor([3.0, 4.0])
    r = polar.polygon_radii(square, torch.tensor([[3.0, 4.0]]), 36)[0].double()
    th = polar.ray_angles(36, dtype=torch.float64)
    expected = a / torch.maximum(th.sin().abs(), th.cos().abs())
    assert torch.allclose(r, expected, rtol=1e-5)


def test_flat_coco_list_and_orientation_agree():
    sq = [0, 0, 10, 0, 10, 10, 0, 10]
    p = torch.tensor([[5.0, 5.0], [2.0, 7.0]])
    r1 = polar.polygon_radii(sq, p, 36)
    r2 = polar.polygon_radii(torch.tensor(sq, dtype=torch.float32).reshape(-1, 2).flip(0), p, 36)
    assert torch.allclose(r1, r2, atol=1e-5)


def test_concave_keeps_farthest_crossing():
    # U shape: the ray from the left arm towards +x leaves at x=10, re-enters at x=20 and
    # leaves again at x=30: the farthest crossing (x=30) is kept.
    u = torch.tensor(
        [[0, 0], [30, 0], [30, 30], [20, 30], [20, 10], [10, 10], [10, 30], [0, 30]],
        dtype=torch.float32,
    )
    r = polar.polygon_radii(u, torch.tensor([[5.0, 20.0]]), 4)[0]
    assert r[1].item() == pytest.approx(25.0)  # +x: far wall of the right arm
    assert r[0].item() == pytest.approx(10.0)  # +y: top edge of the arm
    assert r[3].item() == pytest.approx(5.0)  # -x


def test_concave_star_farthest_crossing():
    # 5-pointed star; from a point inside one tip, the ray back through the centre crosses the
    # star boundary several times; the farthest crossing is the opposite outer edge.
    n, r_out, r_in = 5, 40.0, 12.0
    ang = torch.arange(2 * n, dtype=torch.float64) * math.pi / n
    rad = torch.where(
        torch.arange(2 * n) % 2 == 0, torch.tensor(r_out), torch.tensor(r_in)
    ).double()
    # vertices at angle ang measured like the rays: (sin, cos)
    star = torch.stack([rad * ang.sin(), rad * ang.cos()], 1)
    # from the centre: tips at the even rays of K=10, valleys at the odd ones
    r = polar.polygon_radii(star, torch.zeros(1, 2), 10)[0]
    assert torch.allclose(r[0::2], torch.full((5,), r_out, dtype=r.dtype), rtol=1e-5)
    assert torch.allclose(r[1::2], torch.full((5,), r_in, dtype=r.dtype), rtol=1e-5)
    # From a point inside the tip at theta=0, many rays leave the tip, cross a valley and enter
    # another tip. Brute force: march along each ray with an independent inside test and take
    # the last inside->outside transition; polygon_radii must agree (the farthest crossing).
    p = torch.tensor([[0.0, 30.0]])
    radii = polar.polygon_radii(star, p, 36)[0].double()
    edges = polar.polygon_edges(star)
    dirs = polar.ray_directions(36, dtype=torch.float64)
    step = 0.01
    ts = torch.arange(0, 120, step, dtype=torch.float64)
    multi = 0
    for k in range(36):
        pts = p.double() + ts[:, None] * dirs[k]
        inside = polar.points_in_polygons(pts, edges)
        exits = (inside[:-1] & ~inside[1:]).nonzero().flatten()
        multi += int(len(exits) >= 2)
        assert radii[k].item() == pytest.approx(ts[exits[-1]].item(), abs=2 * step)
    assert multi >= 4  # the concave case really happens


def test_ray_missing_polygon_gives_zero():
    sq = torch.tensor([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    r = polar.polygon_radii(sq, torch.tensor([[50.0, 5.0]]), 4)[0]
    assert r[1].item() == 0.0  # +x looks away
    assert r[3].item() == pytest.approx(50.0)  # -x reaches the far side (x=0)


def test_round_trip_points_lie_on_polygon():
    torch.manual_seed(0)
    # a star-convex random polygon around (50, 60)
    n = 40
    t = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    rad = 20 + 8 * torch.rand(n, dtype=torch.float64)
    poly = torch.stack([50 + rad * t.cos(), 60 + rad * t.sin()], 1)
    c = torch.tensor([[50.0, 60.0]], dtype=torch.float64)
    r = polar.polygon_radii(poly, c, 36)
    pts = polar.radii_to_points(c, r)[0]
    assert (r > 0).all()
    assert dist_to_boundary(pts, poly).max().item() < 1e-4  # float32 radii


def test_multi_part_object_uses_all_parts():
    left = torch.tensor([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    right = left + torch.tensor([30.0, 0.0])
    p = torch.tensor([[5.0, 5.0]])
    r = polar.polygons_radii([left, right], p, 4)[0]
    assert r[1].item() == pytest.approx(35.0)  # +x reaches the far side of the right part
    r_single = polar.polygon_radii(left, p, 4)[0]
    assert r_single[1].item() == pytest.approx(5.0)
    # padded edges: per-point edge sets with zero-length padding never hit
    edges = polar.polygons_to_padded_edges([[left], [left, right]])
    assert edges.shape == (2, 8, 2, 2)
    rr = polar.edges_radii(p.repeat(2, 1), edges, 4)
    assert rr[0, 1].item() == pytest.approx(5.0) and rr[1, 1].item() == pytest.approx(35.0)


def test_polar_iou_hand_computed():
    pred = torch.tensor([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]])
    tgt = torch.tensor([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]])
    iou = polar.polar_iou(pred, tgt)
    assert iou[0].item() == pytest.approx(5 / 7)
    assert iou[1].item() == pytest.approx(1.0)
    loss = polar.polar_iou_loss(pred, tgt, reduction="none")
    assert loss[0].item() == pytest.approx(math.log(7 / 5), rel=1e-5)
    assert loss[1].item() == pytest.approx(0.0, abs=1e-6)
    w = torch.tensor([0.5, 2.0])
    assert polar.polar_iou_loss(pred, tgt, weight=w).item() == pytest.approx(
        0.5 * math.log(7 / 5), rel=1e-5
    )


def test_polar_iou_loss_gradient_finite_with_zero_targets():
    pred = torch.tensor([[1.0, 2.0, 3.0, 0.5]], requires_grad=True)
    tgt = torch.tensor([[0.0, 2.0, 0.0, 1.0]])
    loss = polar.polar_iou_loss(pred, tgt)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    assert pred.grad.abs().sum() > 0
    pred2 = torch.tensor([[1.0, 1.0]], requires_grad=True)
    loss2 = polar.polar_iou_loss(pred2, torch.zeros(1, 2))
    loss2.backward()
    assert torch.isfinite(loss2) and torch.isfinite(pred2.grad).all()


def test_polar_centerness():
    c = polar.polar_centerness(torch.tensor([[1.0, 4.0], [3.0, 3.0], [0.0, 0.0]]))
    assert torch.allclose(c, torch.tensor([0.5, 1.0, 0.0]))


def test_mass_center_convex_is_centroid():
    sq = [0, 0, 10, 0, 10, 20, 0, 20]
    assert torch.allclose(polar.mass_center([sq]), torch.tensor([5.0, 10.0]))


def test_mass_center_c_shape_moved_inside():
    # C shape opening to the right: its area centroid lies in the empty mouth
    c_shape = torch.tensor(
        [[0, 0], [40, 0], [40, 10], [10, 10], [10, 30], [40, 30], [40, 40], [0, 40]],
        dtype=torch.float32,
    )
    area, centroid = polar.polygon_area_centroid(c_shape)
    edges = polar.polygon_edges(c_shape)
    assert not polar.points_in_polygons(centroid[None].float(), edges)[0]
    c = polar.mass_center([c_shape])
    assert polar.points_in_polygons(c[None], edges)[0]
    # nearest boundary point is on the inner wall x=10; the chord there spans x in [0, 10]
    assert c[0].item() == pytest.approx(5.0, abs=1e-4)
    assert c[1].item() == pytest.approx(centroid[1].item(), abs=1e-4)
    # and every ray from it now has a positive radius
    assert (polar.polygon_radii(c_shape, c[None], 36) > 0).all()


def test_mass_center_ring_and_degenerate():
    outer = regular_polygon(32, 30.0)
    inner = regular_polygon(32, 20.0)
    c = polar.mass_center([outer, inner])  # a ring drawn as two polygons (hole by even-odd)
    edges = torch.cat([polar.polygon_edges(outer), polar.polygon_edges(inner)], 0)
    assert polar.points_in_polygons(c[None], edges)[0]
    assert 19.0 < c.norm().item() < 31.0
    # collinear polygon: finite (mean vertex), never NaN
    c2 = polar.mass_center([[0, 0, 5, 5, 10, 10]])
    assert torch.isfinite(c2).all() and torch.allclose(c2, torch.tensor([5.0, 5.0]))
    c3 = polar.mass_center([[3, 4]])
    assert torch.allclose(c3, torch.tensor([3.0, 4.0]))
