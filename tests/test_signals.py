"""Issue 11, training signals: fallback centre-ness, gradients of negative rays, the exact
smallest-area tie-break, and no dense zero-loss term."""

import math

import torch
from conftest import circle, make_instances, tiny_cfg
from detectron2.modeling import build_model

from polar_refine.modeling.losses import radius_loss
from polar_refine.modeling.targets import PolarTargetAssigner


def _locations(h, w):
    model = build_model(tiny_cfg())
    feats = [torch.zeros(1, 1, math.ceil(h / s), math.ceil(w / s)) for s in model.strides]
    points, _, strides, _, ranges = model.locations(feats)
    return points, strides, ranges


def _square(x0, y0, side):
    return [x0, y0, x0 + side, y0, x0 + side, y0 + side, x0, y0 + side]


def test_fallback_positive_outside_its_object_gets_a_nonzero_centerness():
    # a 3-px disc between the stride-8 locations (4, 12, 20, ...): no location lies inside it,
    # so its positive is a location outside the object, whose rays partly miss it
    inst = make_instances(64, 64, [[circle(13.0, 9.0, 1.5, n=16)]], [0])
    points, strides, ranges = _locations(64, 64)
    zero = PolarTargetAssigner(num_classes=3)(points, strides, ranges, [inst])[0]
    hit = PolarTargetAssigner(num_classes=3, fallback_centerness="hit_rays")(
        points, strides, ranges, [inst]
    )[0]
    assert zero["pos_idx"].numel() == hit["pos_idx"].numel() == 1  # the fallback positive
    assert (zero["radii"] == 0).any()  # some rays miss the object
    assert zero["centerness"].item() == 0  # the former rule: suppressed at test time
    assert hit["centerness"].item() > 0  # the fix
    r = hit["radii"][0]
    expect = math.sqrt(r[r > 0].min() / r.max())
    assert abs(hit["centerness"].item() - expect) < 1e-6


def test_both_centerness_rules_agree_for_positives_inside_their_object():
    polys = [[circle(30, 30, 14)], [circle(80, 40, 20)]]
    inst = make_instances(96, 128, polys, [0, 1])
    points, strides, ranges = _locations(96, 128)
    a = PolarTargetAssigner(num_classes=3)(points, strides, ranges, [inst])[0]
    b = PolarTargetAssigner(num_classes=3, fallback_centerness="hit_rays")(
        points, strides, ranges, [inst]
    )[0]
    assert (a["radii"] > 0).all()
    torch.testing.assert_close(a["centerness"], b["centerness"])


def test_a_negative_ray_still_gets_a_gradient():
    target = torch.full((1, 8), 10.0)
    weight = torch.ones(1)
    for straight_through in (False, True):
        pred = torch.full((1, 8), 9.0)
        pred[0, 3] = -5.0
        pred.requires_grad_(True)
        loss = radius_loss(pred, target, weight, negative_ray_gradient=straight_through)
        loss.backward()
        g = pred.grad[0, 3].item()
        if straight_through:
            assert g < 0  # gradient descent pushes the dead ray out, towards its target
            assert g == pred.grad[0, 0].item()  # as a ray of length 0 (below target) would get
        else:
            assert g == 0  # the clamp kills it: the former behaviour
    # the value is the clamped loss either way
    p = torch.tensor([[9.0, -5.0, 9.0]])
    t = torch.full((1, 3), 10.0)
    a = radius_loss(p, t, weight, negative_ray_gradient=False)
    b = radius_loss(p, t, weight, negative_ray_gradient=True)
    assert a.item() == b.item()


def test_smallest_area_wins_exactly_between_overlapping_instances():
    # two squares containing the same locations, areas 100 and 97 px^2: in float32,
    # 1e8 - 100 and 1e8 - 97 are the same number, so the former rule picked the larger
    big = _square(10.0, 10.0, 10.0)
    small = _square(10.0, 10.0, math.sqrt(97.0))
    inst = make_instances(32, 32, [[big], [small]], [0, 1])
    assert torch.tensor(1e8 - 100.0) == torch.tensor(1e8 - 97.0)
    points, strides, ranges = _locations(32, 32)
    t = PolarTargetAssigner(num_classes=3)(points, strides, ranges, [inst])[0]
    # the stride-8 location (12, 12) is centre-sampled for both: the smaller owns it
    # (the larger then takes another location through the fallback)
    shared = ((points == torch.tensor([12.0, 12.0])).all(1) & (strides == 8)).nonzero()[0, 0]
    owner = t["pos_inst"][t["pos_idx"] == shared]
    assert owner.tolist() == [1]


def test_an_inf_prediction_does_not_make_the_losses_nan():
    """No dense ``x.sum() * 0`` term: an inf in a radius map away from the positives leaves
    every loss finite (the former zero_loss_like turned it into NaN)."""
    from conftest import draw_image
    from detectron2.utils.events import EventStorage

    polys = [[circle(30, 30, 12)]]
    batch = [{"image": draw_image(64, 64, polys), "instances": make_instances(64, 64, polys, [0])}]
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    model.train()

    def poison(module, inputs, outputs):
        cls, ctr, coarse = outputs
        coarse = [c.clone() for c in coarse]
        coarse[-1][..., -1, -1] = float("inf")  # far corner of the coarsest level
        return cls, ctr, coarse

    model.head.register_forward_hook(poison)
    with EventStorage(1):
        losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values()), losses
