"""Training signals: fallback centre-ness, negative rays, the exact smallest-area tie-break,
and no dense zero-loss term."""

import math

import torch
from conftest import circle, make_instances, tiny_cfg
from detectron2.modeling import build_model

from polar_refine.modeling.losses import radius_loss
from polar_refine.modeling.targets import PolarTargetAssigner


def _locations(h, w):
    model = build_model(tiny_cfg())
    feats = [torch.zeros(1, 1, math.ceil(h / s), math.ceil(w / s)) for s in model.strides]
    return model.locations(feats)


def _square(x0, y0, side):
    return [x0, y0, x0 + side, y0, x0 + side, y0 + side, x0, y0 + side]


def test_fallback_positive_outside_its_object_gets_zero_centerness():
    # a 3-px disc between the stride-8 locations (4, 12, 20, ...): no location lies inside it,
    # so its positive is a location outside the object, whose rays partly miss it; its
    # centre-ness target (so its regression weight) is the polar centre-ness of its radii, 0
    inst = make_instances(64, 64, [[circle(13.0, 9.0, 1.5, n=16)]], [0])
    t = PolarTargetAssigner(num_classes=3)(_locations(64, 64), [inst])[0]
    assert t["pos_idx"].numel() == 1  # the fallback positive
    assert (t["radii"] == 0).any() and (t["radii"] > 0).any()  # some rays miss the object
    assert t["centerness"].item() == 0


def test_a_negative_ray_reads_as_zero_without_gradient():
    target = torch.full((1, 8), 10.0)
    pred = torch.full((1, 8), 9.0)
    pred[0, 3] = -5.0
    pred.requires_grad_(True)
    loss = radius_loss(pred, target, torch.ones(1))
    loss.backward()
    assert pred.grad[0, 3].item() == 0 and pred.grad[0, 0].item() < 0
    zero = pred.detach().clone()
    zero[0, 3] = 0.0
    assert loss.item() == radius_loss(zero, target, torch.ones(1)).item()


def test_smallest_area_wins_exactly_between_overlapping_instances():
    # two squares containing the same locations, areas 100 and 97 px^2: in float32,
    # 1e8 - 100 and 1e8 - 97 are the same number, so the former rule picked the larger
    big = _square(10.0, 10.0, 10.0)
    small = _square(10.0, 10.0, math.sqrt(97.0))
    inst = make_instances(32, 32, [[big], [small]], [0, 1])
    assert torch.tensor(1e8 - 100.0) == torch.tensor(1e8 - 97.0)
    locs = _locations(32, 32)
    points, strides = locs.points, locs.strides
    t = PolarTargetAssigner(num_classes=3)(locs, [inst])[0]
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
