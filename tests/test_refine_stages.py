"""Issue 11: iterative refinement, REFINE.NUM_STAGES = 1, 2, 3."""

import pytest
import torch
from conftest import circle, draw_image, make_instances, tiny_cfg
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage


def _batch():
    polys = [[circle(30, 30, 14)], [circle(70, 40, 20)]]
    return [
        {"image": draw_image(80, 112, polys), "instances": make_instances(80, 112, polys, [0, 1])},
        {"image": draw_image(64, 64, [], seed=2), "instances": make_instances(64, 64, [], [])},
    ]


@pytest.mark.parametrize("stages", [1, 2, 3])
def test_n_stage_refine_builds_trains_and_infers(stages):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(MODEL__POLAR_REFINE__REFINE__NUM_STAGES=str(stages)))
    assert len(model.refine_stages()) == stages
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    keys = {"loss_fine"} | {f"loss_fine{s}" for s in range(2, stages + 1)}
    with EventStorage() as storage:
        for _ in range(2):
            losses = model(_batch())
            assert keys <= set(losses) and not {f"loss_fine{stages + 1}"} & set(losses)
            assert all(torch.isfinite(v) for v in losses.values())
            opt.zero_grad()
            sum(losses.values()).backward()
            for stage in model.refine_stages():  # every stage learns
                assert stage.delta.weight.grad is not None
                assert stage.delta.weight.grad.abs().sum() > 0
            opt.step()
            storage.step()
    model.eval()
    with torch.no_grad():
        out = model([{"image": b["image"]} for b in _batch()])
    assert len(out) == 2 and out[0]["instances"].pred_polygons.shape[1:] == (36, 2)


def test_each_stage_is_a_chained_correction():
    """Stage s starts from stage s-1's radii (clamped at 0): with stage 2's weights at zero
    its output equals stage 1's."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg(MODEL__POLAR_REFINE__REFINE__NUM_STAGES="2"))
    model.eval()
    feats = [torch.randn(1, 64, 8, 8), torch.randn(1, 64, 4, 4)]
    model.strides = [8, 16]
    cells = torch.tensor([[3.0, 3.0], [1.0, 2.0]])
    level, img = torch.tensor([0, 1]), torch.zeros(2, dtype=torch.long)
    coarse = torch.full((2, 36), 12.0)
    with torch.no_grad():
        model.extra_refine[0].delta.weight.zero_()
        model.extra_refine[0].delta.bias.zero_()
        r1, r2 = model.refine_radii(feats, level, img, cells, coarse)
    torch.testing.assert_close(r2, r1.clamp(min=0))
    assert not torch.equal(r1, coarse)


def test_parameters_per_stage_are_under_a_thousandth_of_the_model():
    import os

    from detectron2.config import get_cfg

    import polar_refine

    cfg = get_cfg()
    polar_refine.add_polar_refine_config(cfg)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg.merge_from_file(
        os.path.join(
            root, "configs/COCO-InstanceSegmentation/polar_refine_contour_R_50_FPN_1x.yaml"
        )
    )
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.POLAR_REFINE.REFINE.NUM_STAGES = 3
    model = build_model(cfg)
    total = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("contour."))
    for stage in model.refine_stages():
        share = sum(p.numel() for p in stage.parameters()) / total
        assert share < 1e-3, share
    print(f"one refine stage: {sum(p.numel() for p in model.refine.parameters())} of {total}")


@pytest.mark.parametrize("features", ["['reg_tower']", "['fpn', 'reg_tower']"])
def test_refine_can_read_the_regression_tower(features):
    """REFINE.FEATURES: with "reg_tower" the stages sample the head's regression tower output
    (concatenated after the FPN levels with both), it trains and infers."""
    torch.manual_seed(0)
    model = build_model(
        tiny_cfg(MODEL__POLAR_REFINE__REFINE__NUM_STAGES="2",
                 MODEL__POLAR_REFINE__REFINE__FEATURES=features)
    )  # fmt: skip
    both = "fpn" in features
    assert model.refine.in_channels == 64 * (2 if both else 1)
    model.eval()
    feats = [torch.randn(1, 64, s, s) for s in (8, 4, 2, 1, 1)]  # P3-P7 of a 64-px image
    preds = model.run_head(feats)
    assert len(preds) == 4 and preds[3][0].shape == (1, 64, 8, 8)
    maps = model.refine_inputs(feats, preds)
    for lvl in range(2):
        want = torch.cat([feats[lvl], preds[3][lvl]], 1) if both else preds[3][lvl]
        torch.testing.assert_close(maps[lvl], want)
    # the radii follow the tower: changing only the FPN maps changes nothing without "fpn"
    cells = torch.tensor([[3.0, 3.0], [1.0, 2.0]])
    level, img = torch.tensor([0, 1]), torch.zeros(2, dtype=torch.long)
    coarse = torch.full((2, 36), 12.0)
    with torch.no_grad():
        model.refine.delta.weight.normal_()
        r = model.refine_radii(model.refine_inputs(feats, preds), level, img, cells, coarse)
        zeros = [torch.zeros_like(f) for f in feats]
        r0 = model.refine_radii(model.refine_inputs(zeros, preds), level, img, cells, coarse)
    assert torch.equal(r[-1], r0[-1]) != both
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with EventStorage():
        losses = model(_batch())
        assert {"loss_fine", "loss_fine2"} <= set(losses)
        assert all(torch.isfinite(v) for v in losses.values())
        opt.zero_grad()
        sum(losses.values()).backward()
        assert model.refine.delta.weight.grad.abs().sum() > 0
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model([{"image": b["image"]} for b in _batch()])
    assert out[0]["instances"].pred_polygons.shape[1:] == (36, 2)
