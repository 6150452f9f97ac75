"""The contour deformation stage (MODEL.POLAR_REFINE.DEFORM): resampling, the matching loss,
training and inference end to end, and a C shape the polar polygon cannot draw."""

import math

import numpy as np
import pytest
import torch
from conftest import circle, draw_image, make_instances, tiny_cfg
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from polar_refine import polar
from polar_refine.modeling import LocationGenerator
from polar_refine.modeling.deform import (
    ContourDeformer,
    _inward_normals,
    contour_match_loss,
    one_to_one_targets,
    point_segment_distance,
    resample_polygons,
    self_crossing,
)

SQUARE = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]]])


def test_resampling_a_square_gives_known_points():
    pts = resample_polygons(SQUARE, 8)
    want = [[0, 0], [5, 0], [10, 0], [10, 5], [10, 10], [5, 10], [0, 10], [0, 5]]
    assert torch.allclose(pts[0], torch.tensor(want, dtype=torch.float32), atol=1e-5)


def test_resampling_is_even_along_the_length():
    poly = polar.radii_to_points(torch.tensor([[50.0, 40.0]]), 5 + 20 * torch.rand(1, 36))
    pts = resample_polygons(poly, 97)
    step = (pts.roll(-1, 1) - pts).norm(dim=-1)[0]
    length = (poly.roll(-1, 1) - poly).norm(dim=-1).sum()
    # each step is at most the arc length between points (a chord cuts corners), and the
    # points lie on the polygon: their distance to its edges is 0
    assert (step <= length / 97 + 1e-4).all()
    d = point_segment_distance(pts[0][:, None], poly[0][None], poly[0].roll(-1, 0)[None])
    assert d.amin(1).max() < 1e-4
    degenerate = resample_polygons(torch.zeros(1, 36, 2), 16)  # a point: no NaN
    assert torch.equal(degenerate, torch.zeros(1, 16, 2))


def test_point_segment_distance_known_values():
    a, b = torch.tensor([0.0, 0.0]), torch.tensor([10.0, 0.0])
    pts = torch.tensor([[5.0, 3.0], [-4.0, 3.0], [13.0, -4.0], [7.0, 0.0]])
    d = point_segment_distance(pts, a, b)
    assert torch.allclose(d, torch.tensor([3.0, 5.0, 5.0, 0.0]))


def test_matching_loss_zero_on_the_contour_and_pulls_back():
    edges = torch.stack([SQUARE[0], SQUARE[0].roll(-1, 0)], 1)[None]  # (1, 4, 2, 2)
    size = torch.tensor([10.0])
    on = resample_polygons(SQUARE, 16)
    assert contour_match_loss(on, edges, size).abs().item() < 1e-6
    # sliding along the contour costs nothing: the same points started elsewhere
    assert contour_match_loss(on.roll(3, 1), edges, size).abs().item() < 1e-6
    # padding edges (zero length) change nothing
    padded = torch.cat([edges, torch.zeros(1, 5, 2, 2)], 1)
    shifted = (on + torch.tensor([1.0, 0.0])).requires_grad_(True)
    loss = contour_match_loss(shifted, padded, size)
    assert torch.allclose(loss, contour_match_loss(shifted, edges, size))
    assert loss.item() > 0
    loss.sum().backward()
    assert shifted.grad[..., 0].sum() > 0  # descent moves the contour back, to -x


def _c_shape(cx, cy, r_out, r_in, gap_deg=70, n=40):
    """A C (an annulus sector) opening to +x: not star-shaped from any centre."""
    half = math.radians(gap_deg) / 2
    t = np.linspace(half, 2 * math.pi - half, n)
    outer = np.stack([cx + r_out * np.cos(t), cy + r_out * np.sin(t)], 1)
    inner = np.stack([cx + r_in * np.cos(t[::-1]), cy + r_in * np.sin(t[::-1])], 1)
    return np.concatenate([outer, inner]).reshape(-1).tolist()


def _iou(poly_a, poly_b, h=128, w=128):
    from polar_refine.modeling import polygons_to_masks

    a = polygons_to_masks(poly_a[None], h, w)[0]
    b = polygons_to_masks(poly_b[None], h, w)[0]
    return (a & b).sum().item() / max(1, (a | b).sum().item())


def test_a_deformer_learns_a_c_shape_the_polar_contour_cannot_draw():
    """Overfit the stages alone on one C shape (its mask as the feature they sample): the
    deformed contour's IoU with the C rises well above the polar contour's."""
    torch.manual_seed(0)
    c = _c_shape(64, 64, 40, 22)
    gt = torch.tensor(c).reshape(-1, 2)
    edges = torch.stack([gt, gt.roll(-1, 0)], 1)[None]
    from polar_refine.modeling import polygons_to_masks

    mask = polygons_to_masks(gt[None], 128, 128).float()[None]  # (1, 1, 128, 128)
    feats = [torch.nn.functional.avg_pool2d(mask, 8)]  # one level, stride 8
    locs = LocationGenerator([8], [])(feats)
    centre_cell = (torch.tensor([64.0 - 31, 64.0]) / 8 - 0.5).round()  # inside the C's body
    location = (centre_cell[1] * 16 + centre_cell[0]).long()[None]
    centre = locs.points[location]
    radii = polar.polygon_radii(gt, centre, 36)  # the polar target: the farthest crossings
    polar_mask = polar.radii_to_points(centre, radii)[0]
    deformer = ContourDeformer(in_channels=1, num_points=64, num_stages=2, hidden=32)
    opt = torch.optim.Adam(deformer.parameters(), lr=3e-3)
    img = torch.zeros(1, dtype=torch.long)
    pixels = (mask * 255 - 128).expand(1, 3, -1, -1)  # the image: a C on black, PIXEL_STD 1
    for _ in range(300):
        out = deformer(feats, pixels, locs, location, img, radii)
        losses = deformer.losses(out, edges, torch.ones(1), 1.0)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    with torch.no_grad():
        deformed = deformer(feats, pixels, locs, location, img, radii)[-1][0]
    iou_polar, iou_deformed = _iou(polar_mask, gt), _iou(deformed, gt)
    print(f"C shape: polar IoU {iou_polar:.3f}, deformed IoU {iou_deformed:.3f}")
    assert iou_polar < 0.8 and iou_deformed > iou_polar + 0.1


def _batch():
    polys = [[circle(40, 44, 20)], [_c_shape(100, 80, 26, 14)]]
    return [
        {
            "image": draw_image(128, 144, polys),
            "instances": make_instances(128, 144, polys, [0, 5]),
        },
        {"image": draw_image(96, 96, [], seed=1), "instances": make_instances(96, 96, [], [])},
    ]


def test_model_with_deform_trains_and_infers():
    torch.manual_seed(0)
    cfg = tiny_cfg(MODEL__POLAR_REFINE__DEFORM__ENABLED=True)
    model = build_model(cfg)
    model.train()
    with EventStorage():
        losses = model(_batch())
        assert set(losses) == {"loss_deform", "loss_deform2"}
        assert all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
    grads = [p.grad for p in model.deformer.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    model.eval()
    with torch.no_grad():
        model.test_score_thresh = 0.0
        out = model([{"image": b["image"], "height": 200, "width": 180} for b in _batch()])
    inst = out[0]["instances"]
    assert len(inst) > 0 and inst.image_size == (200, 180)
    assert inst.pred_polygons.shape[1:] == (64, 2)
    assert inst.pred_polar_polygons.shape[1:] == (36, 2)
    assert inst.pred_masks.shape[1:] == (200, 180)
    assert (inst.pred_polygons[..., 0] <= 180).all() and (inst.pred_polygons[..., 1] <= 200).all()


def test_the_stages_train_alone_on_a_frozen_model(tmp_path):
    """With DEFORM, training returns the stages' losses only, only the stages hold trainable
    parameters, and steps move the stages and nothing else."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg(MODEL__POLAR_REFINE__DEFORM__ENABLED=True))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"deformer.{n}" for n, _ in model.deformer.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model.train()
    assert model.training and model.deformer.training
    assert not any(m.training for n, m in model.named_modules() if n and "deformer" not in n)
    with EventStorage():
        for _ in range(2):  # two steps: the offsets start at zero, the layers below them move next
            losses = model(_batch())
            assert set(losses) == {"loss_deform", "loss_deform2"}
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) != n.startswith("deformer."), n


def test_training_the_stages_needs_a_model_to_start_from(tmp_path):
    from polar_refine.engine import PolarRefineTrainer

    cfg = tiny_cfg(
        MODEL__POLAR_REFINE__DEFORM__ENABLED=True,
        OUTPUT_DIR=str(tmp_path),
        DATALOADER__NUM_WORKERS=0,
    )
    trainer = PolarRefineTrainer(cfg)
    with pytest.raises(ValueError, match="MODEL.WEIGHTS"):
        trainer.resume_or_load(resume=False)
    torch.save({"model": trainer.model.state_dict()}, tmp_path / "trained.pth")
    trainer.cfg.MODEL.WEIGHTS = str(tmp_path / "trained.pth")
    trainer.resume_or_load(resume=False)  # a model to start from: no error


def test_huber_matching_loss_is_quadratic_near_the_contour():
    edges = torch.tensor([[[[0.0, 0.0], [100.0, 0.0]]]])  # one edge on y = 0
    size = torch.tensor([100.0])
    for y, beta, want in [(2.0, 0.05, 0.5 * 0.02**2 / 0.05), (20.0, 0.05, 0.2 - 0.025)]:
        pts = torch.tensor([[[50.0, y], [50.0, y]]])
        to_gt = contour_match_loss(pts, edges, size, beta)
        # both ground-truth vertices see the predicted segment at their distance sqrt(50^2+y^2)
        far = (50.0**2 + y**2) ** 0.5 / 100.0
        far = 0.5 * far**2 / beta if far < beta else far - 0.5 * beta
        assert torch.allclose(to_gt, torch.tensor([want + far]), atol=1e-6)


def test_deform_parameters_under_one_percent_of_r50():
    import os

    from conftest import ROOT
    from detectron2.config import get_cfg

    import polar_refine

    cfg = get_cfg()
    polar_refine.add_polar_refine_config(cfg)
    cfg.merge_from_file(
        os.path.join(ROOT, "configs/COCO-InstanceSegmentation/polar_refine_plus_R_50_FPN_1x.yaml")
    )
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.POLAR_REFINE.DEFORM.ENABLED = True
    model = build_model(cfg)
    total = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("contour."))
    share = sum(p.numel() for p in model.deformer.parameters()) / total
    print(f"deformation stages: {100 * share:.3f} % of the inference parameters")
    assert share < 0.01


@pytest.mark.parametrize("n", [0, 1])
def test_deformer_on_few_contours(n):
    feats = [torch.randn(1, 8, 8, 8)]
    locs = LocationGenerator([8], [])(feats)
    d = ContourDeformer(in_channels=8, num_points=16)
    index = torch.zeros(n, dtype=torch.long)
    out = d(feats, torch.zeros(1, 3, 64, 64), locs, index, index, torch.full((n, 36), 10.0))
    assert len(out) == 2 and out[-1].shape == (n, 16, 2)


def test_each_stage_starts_from_an_evenly_spaced_contour(monkeypatch):
    """A first stage that bunches the points up hands the second an evenly spaced contour
    (the same outline, resampled along its length)."""
    feats = [torch.randn(1, 8, 8, 8)]
    locs = LocationGenerator([8], [])(feats)
    d = ContourDeformer(in_channels=8, num_points=16)
    index = torch.zeros(1, dtype=torch.long)
    bunch = torch.zeros(1, 16, 2)
    bunch[0, :8, 0] = 0.5  # half the points slide half a stride to the right
    monkeypatch.setattr(d.stages[0], "forward", lambda sampled, rel: bunch)
    seen = []
    monkeypatch.setattr(d.stages[1], "forward", lambda sampled, rel: seen.append(rel) or 0 * rel)
    out = d(feats, torch.zeros(1, 3, 64, 64), locs, index, index, torch.full((1, 36), 20.0))
    first = out[0][0]
    gaps = (first.roll(-1, 0) - first).norm(dim=-1)
    assert gaps.max() > 1.2 * gaps.min()  # the first stage's contour is uneven
    second = seen[0][0]
    gaps = (second.roll(-1, 0) - second).norm(dim=-1)
    assert torch.allclose(gaps, gaps.mean().expand_as(gaps), rtol=0.05)
    assert torch.allclose(out[1], resample_polygons(out[0], 16), atol=1e-4)


def test_deformer_reads_the_finest_level_for_every_contour():
    """Contours on a coarse level sample the finest map: changing any other level changes
    nothing, changing the finest moves the points."""
    torch.manual_seed(0)
    feats = [torch.randn(1, 8, 16, 16), torch.randn(1, 8, 8, 8)]
    locs = LocationGenerator([8, 16], [32])(feats)
    d = ContourDeformer(in_channels=8, num_points=16)
    for stage in d.stages:
        torch.nn.init.normal_(stage.offset.weight, std=0.1)
    location = torch.tensor([16 * 16 + 3 * 8 + 4])  # a location of the coarse level
    assert locs.levels[location].item() == 1
    pixels = torch.randn(1, 3, 128, 128)
    args = (locs, location, torch.zeros(1, dtype=torch.long), torch.full((1, 36), 30.0))
    with torch.no_grad():
        out = d(feats, pixels, *args)[-1]
        same = d([feats[0], torch.randn(1, 8, 8, 8)], pixels, *args)[-1]
        moved = d([torch.randn(1, 8, 16, 16), feats[1]], pixels, *args)[-1]
    assert torch.equal(out, same)
    assert (moved - out).abs().max() > 1e-3


def test_deformer_reads_the_image_at_each_point():
    """Each point reads the input image (scaled by PIXEL_STD / 64) in a 3 x 3 window and along
    its inward normal: changing the pixels under the contour moves the points, changing pixels
    away from every sample changes nothing."""
    torch.manual_seed(0)
    feats = [torch.randn(1, 8, 16, 16)]
    locs = LocationGenerator([8], [])(feats)
    d = ContourDeformer(in_channels=8, num_points=16, pixel_std=(2.0, 2.0, 2.0))
    for stage in d.stages:
        torch.nn.init.normal_(stage.offset.weight, std=0.1)
    location = torch.tensor([8 * 16 + 8])  # centre (68, 68)
    args = (locs, location, torch.zeros(1, dtype=torch.long), torch.full((1, 36), 20.0))
    pixels = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        out = d(feats, pixels, *args)[-1]
        far = pixels.clone()
        far[..., :20, :20] = 50.0  # beyond the samples (radius 20 around (68, 68), size 35)
        ring = pixels.clone()
        ring[..., 40:96, 40:96] = 50.0  # under every point of the first stage
        same = d(feats, far, *args)[-1]
        moved = d(feats, ring, *args)[-1]
        # a constant image reads as the constant times the scale, at every sample
        square = torch.tensor([[[8.0, 8.0], [24.0, 8.0], [24.0, 24.0], [8.0, 24.0]]])
        samples = d._image_samples(torch.full((1, 3, 32, 32), 3.0), torch.zeros(1).long(),
                                   square, torch.full((1, 1, 1), 16.0))  # fmt: skip
    assert torch.equal(out, same)
    assert (moved - out).abs().max() > 1e-3
    assert samples.shape == (1, 4, 51)
    assert torch.allclose(samples, torch.full_like(samples, 3.0 * 2.0 / 64))


@pytest.mark.parametrize("flip", [False, True])
def test_inward_normals_point_inside_either_way_round(flip):
    square = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0]]])
    square = square.flip(1) if flip else square
    normals = _inward_normals(square)[0]
    # each corner's normal (of its neighbours' chord) points to the centre (1, 1), diagonally
    expected = (torch.tensor([1.0, 1.0]) - square[0]) / 2**0.5
    assert torch.allclose(normals, expected, atol=1e-6)


def test_deformed_ceiling_draws_a_c_shape_the_polar_one_cannot():
    from polar_refine.evaluation.polar_coco_evaluation import (
        deformed_ceiling_iou,
        polar_ceiling_iou,
    )

    c = [_c_shape(64, 64, 40, 22)]
    polar_iou = polar_ceiling_iou(c, 128, 128)
    deformed_iou = deformed_ceiling_iou(c, 128, 128, 64)
    assert polar_iou < 0.8 < 0.95 < deformed_iou
    disc = [circle(64, 64, 30, n=64)]
    assert deformed_ceiling_iou(disc, 128, 128, 64) > 0.97


def test_demo_draws_the_polar_contours_under_deformed_ones(monkeypatch):
    """With show_coarse, a deformed detection also gets its polar contour (cyan, dashed)."""
    from detectron2.structures import Instances

    from demo import predictor as demo_predictor

    drawn = []
    monkeypatch.setattr(
        demo_predictor, "draw_coarse_polygons", lambda vis, polys, color=None: drawn.append(color)
    )

    def fake(image):
        inst = Instances(image.shape[:2])
        centre = torch.tensor([[40.0, 40.0]])
        inst.pred_polar_polygons = polar.radii_to_points(centre, torch.full((1, 36), 15.0))
        inst.pred_coarse_polygons = inst.pred_polar_polygons.clone()
        inst.pred_polygons = resample_polygons(inst.pred_polar_polygons, 64)
        inst.scores = torch.tensor([0.9])
        inst.pred_classes = torch.tensor([0])
        return {"instances": inst}

    cfg = tiny_cfg()
    demo = demo_predictor.VisualizationDemo(cfg, show_coarse=True, predictor=fake)
    demo.run_on_image(np.zeros((80, 80, 3), np.uint8))
    assert drawn == [None, demo_predictor.POLAR_COLOR]


def test_self_crossing_finds_a_bow_tie_and_not_a_square_or_a_c():
    bow_tie = torch.tensor([[0.0, 0.0], [10.0, 10.0], [10.0, 0.0], [0.0, 10.0]])
    assert self_crossing(torch.stack([SQUARE[0], bow_tie])).tolist() == [False, True]
    c = torch.tensor(_c_shape(64, 64, 40, 22), dtype=torch.float32).view(1, -1, 2)
    dense = resample_polygons(torch.cat([c, resample_polygons(bow_tie[None], 80)]), 64)
    assert self_crossing(dense).tolist() == [False, True]


@pytest.mark.parametrize("flip", [False, True])
def test_one_to_one_targets_keep_the_order_of_a_square(flip):
    """The targets of a square's own resampled points, either way round and from any start,
    are those points (the square's edges, with a small second part that is ignored)."""
    square = SQUARE[0] + 5.0
    edges = torch.stack([square, square.roll(-1, 0)], 1)  # (4, 2, 2)
    small = torch.tensor([[[30.0, 30.0], [31.0, 30.0]], [[31.0, 30.0], [30.0, 30.0]]])
    gt = torch.cat([edges, small])[None]
    pts = resample_polygons(square[None], 8)[0].roll(3, 0)
    pts = pts.flip(0) if flip else pts
    target = one_to_one_targets(pts[None] + 0.3, gt)[0]
    assert torch.allclose(target, pts, atol=1e-5)
