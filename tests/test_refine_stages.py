"""Iterative refinement: REFINE.NUM_STAGES = 1, 2, 3."""

import pytest
import torch
from conftest import circle, draw_image, make_instances, tiny_cfg
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from polar_refine.modeling import LocationGenerator


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
    assert len(model.refiner.stages) == stages
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
            for stage in model.refiner.stages:  # every stage learns
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
    locs = LocationGenerator([8, 16], [64])(feats)
    location = torch.tensor([3 * 8 + 3, 64 + 2 * 4 + 1])  # (3, 3) on P3, (1, 2) on P4
    img = torch.zeros(2, dtype=torch.long)
    coarse = torch.full((2, 36), 12.0)
    with torch.no_grad():
        model.refiner.stages[1].delta.weight.zero_()
        model.refiner.stages[1].delta.bias.zero_()
        r1, r2 = model.refiner(feats, locs, location, img, coarse)
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
    for stage in model.refiner.stages:
        share = sum(p.numel() for p in stage.parameters()) / total
        assert share < 1e-3, share
    print(f"one refine stage: {sum(p.numel() for p in model.refiner.stages[0].parameters())} "
          f"of {total}")  # fmt: skip
