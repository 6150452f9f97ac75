"""End-to-end CPU tests of the PolarRefine meta-architecture (detectron2 test_model_e2e style)."""

import glob
import os

import pytest
import torch
from conftest import ROOT, circle, draw_image, make_instances, tiny_cfg
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, build_model
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage
from torch import nn

import polar_refine
from polar_refine import polar
from polar_refine.modeling import (
    LocationGenerator,
    PolarRefine,
    PolarRefineStage,
    polygons_to_masks,
)

# The default has 3 refine stages, each with its own fine loss.
FINE_LOSSES = {"loss_fine", "loss_fine2", "loss_fine3"}
ALL_LOSSES = {"loss_cls", "loss_ctr", "loss_coarse", "loss_contour"} | FINE_LOSSES


def _batch():
    """One image holding instances (incl. a two-part one), one empty image."""
    polys = [
        [circle(60, 60, 30)],
        [[120, 20, 170, 20, 170, 70, 120, 70]],
        [circle(40, 150, 12), circle(90, 150, 10)],
    ]
    inst = make_instances(192, 200, polys, [0, 1, 2])
    empty = make_instances(160, 176, [], [])
    return [
        {"image": draw_image(192, 200, polys), "instances": inst},
        {"image": draw_image(160, 176, [], seed=1), "instances": empty},
    ]


def _train_step(model, batch):
    model.train()
    with EventStorage():
        losses = model(batch)
        sum(losses.values()).backward()
    return losses


@pytest.mark.parametrize(
    "refine,contour,keys",
    [
        (False, False, {"loss_cls", "loss_ctr", "loss_coarse"}),
        (True, False, {"loss_cls", "loss_ctr", "loss_coarse"} | FINE_LOSSES),
        (True, True, ALL_LOSSES),
    ],
)
def test_training_step_loss_keys_finite(refine, contour, keys):
    torch.manual_seed(0)
    cfg = tiny_cfg(
        MODEL__POLAR_REFINE__REFINE__ENABLED=refine, MODEL__POLAR_REFINE__CONTOUR__ENABLED=contour
    )
    model = build_model(cfg)
    assert isinstance(model, PolarRefine)
    assert (model.refiner is not None) == refine and (model.contour is not None) == contour
    losses = _train_step(model, _batch())
    assert set(losses) == keys
    for k, v in losses.items():
        assert torch.isfinite(v), k
        assert v.item() > 0, k


def test_gradients_reach_refine_and_contour():
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    _train_step(model, _batch())
    for name, mod in (("refine", model.refiner), ("contour", model.contour)):
        grads = [p.grad for p in mod.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(g.abs().sum().item() for g in grads) > 0, name
    # the refine loss reaches the backbone through the sampled features
    assert model.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0


def test_all_empty_batch_and_odd_sizes():
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    polys = [[circle(30, 40, 15)]]
    batch = [
        {"image": draw_image(97, 131, polys), "instances": make_instances(97, 131, polys, [4])},
        {"image": draw_image(63, 75, [], seed=2), "instances": make_instances(63, 75, [], [])},
    ]
    losses = _train_step(model, batch)
    assert set(losses) == ALL_LOSSES and all(torch.isfinite(v) for v in losses.values())
    empty = [{"image": draw_image(64, 64, []), "instances": make_instances(64, 64, [], [])}]
    losses = _train_step(model, empty)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_coarse"].item() == 0.0 and losses["loss_cls"].item() > 0


def test_inference_fields_at_output_size():
    torch.manual_seed(0)
    model = build_model(tiny_cfg(MODEL__POLAR_REFINE__SCORE_THRESH_TEST=0.0)).eval()
    with torch.no_grad():
        out = model(
            [{"image": draw_image(192, 200, [[circle(60, 60, 30)]]), "height": 300, "width": 250}]
        )
    inst = out[0]["instances"]
    assert inst.image_size == (300, 250)
    n = len(inst)
    assert n == model.max_detections_per_image  # score threshold 0: the cap is reached
    assert inst.pred_polygons.shape == (n, 36, 2)
    assert inst.pred_masks.shape == (n, 300, 250) and inst.pred_masks.dtype == torch.bool
    assert inst.scores.shape == (n,) and inst.pred_classes.dtype == torch.long
    boxes = inst.pred_boxes.tensor
    assert torch.equal(boxes[:, :2], inst.pred_polygons.amin(1))
    assert torch.equal(boxes[:, 2:], inst.pred_polygons.amax(1))
    assert (boxes[:, 2:] >= boxes[:, :2]).all()
    assert ((boxes[:, 2:] > boxes[:, :2]).all(1)).float().mean() > 0.9  # real boxes, not zeros
    assert (inst.pred_polygons[..., 0] <= 250).all() and (inst.pred_polygons[..., 1] <= 300).all()
    assert (inst.scores[:-1] >= inst.scores[1:]).all()
    assert inst.pred_masks.flatten(1).any(1).float().mean() > 0.5


def test_contour_head_not_called_in_eval():
    model = build_model(tiny_cfg()).eval()
    calls = []
    for m in model.contour.modules():
        m.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model([{"image": draw_image(128, 128, [])}])
    assert calls == []
    model.train()
    with EventStorage():
        model([{"image": draw_image(128, 128, []), "instances": make_instances(128, 128, [], [])}])
    assert calls  # the hook works: it fires in training


def test_nan_and_inf_input_inference():
    model = build_model(tiny_cfg(MODEL__POLAR_REFINE__SCORE_THRESH_TEST=0.0)).eval()
    img = draw_image(96, 128, [])
    img[:, 10:20, 10:20] = float("nan")
    img[:, 30:40, 30:40] = float("inf")
    with torch.no_grad():
        out = model([{"image": img}])
    inst = out[0]["instances"]
    assert torch.isfinite(inst.pred_polygons).all() and torch.isfinite(inst.scores).all()
    assert inst.pred_masks.shape[1:] == (96, 128)


def _grid(shapes, strides):
    """Feature maps of the given (N, C, H, W) shapes (random) and their `Locations`."""
    feats = [torch.randn(*shape) for shape in shapes]
    return feats, LocationGenerator(strides, [64] * (len(strides) - 1))(feats)


def test_refine_survives_nan_and_huge_radii_forward_backward():
    stage = PolarRefineStage(24, 36)
    feats, locs = _grid([(2, 24, 32, 40), (2, 24, 16, 20)], [8, 16])
    feats[0].requires_grad_(True)
    p = 500
    coarse = torch.rand(p, 36) * 50
    coarse[:100] = float("nan")
    coarse[100:200] = 1e30
    coarse[200:250] = -1e30
    coarse.requires_grad_(True)
    location = torch.randint(0, len(locs.points), (p,))
    img = torch.randint(0, 2, (p,))
    out = stage(feats, locs, location, img, coarse, detach=False)
    assert torch.isfinite(out[250:]).all()
    out[250:].sum().backward()
    assert torch.isfinite(feats[0].grad).all()
    assert torch.isfinite(stage.delta.weight.grad).all()


def test_refine_changes_radii_with_features():
    stage = PolarRefineStage(8, 36)
    nn.init.normal_(stage.delta.weight, std=1.0)
    feats, locs = _grid([(1, 8, 16, 16)], [8])
    feats[0].zero_()
    feats[0][:, :, 8, 12] = 5.0  # a feature blob 4 cells right of the centre
    coarse = torch.full((1, 36), 32.0)  # 4 cells at stride 8: ray 9 (+x) lands on the blob
    location = torch.tensor([8 * 16 + 8])  # the cell (8, 8)
    r = stage(feats, locs, location, torch.zeros(1, dtype=torch.long), coarse)
    delta = (r - coarse)[0]
    assert delta[9].abs() > 1.0 and delta[27].abs() < 1e-3


class PolarTestTinyBackbone(Backbone):
    """Two strided convs, 24 channels, features named 'a' (stride 8) and 'b' (stride 16)."""

    def __init__(self, cfg, input_shape):
        super().__init__()
        self.s1 = nn.Conv2d(3, 24, 3, stride=8, padding=1)
        self.s2 = nn.Conv2d(24, 24, 3, stride=2, padding=1)

    def forward(self, x):
        a = torch.relu(self.s1(x))
        return {"a": a, "b": torch.relu(self.s2(a))}

    def output_shape(self):
        return {"a": ShapeSpec(channels=24, stride=8), "b": ShapeSpec(channels=24, stride=16)}


if "PolarTestTinyBackbone" not in BACKBONE_REGISTRY:
    BACKBONE_REGISTRY.register(PolarTestTinyBackbone)


def test_custom_backbone_trains_and_infers():
    torch.manual_seed(0)
    cfg = tiny_cfg(
        MODEL__BACKBONE__NAME="PolarTestTinyBackbone",
        MODEL__POLAR_REFINE__IN_FEATURES=["a", "b"],
        MODEL__POLAR_REFINE__SIZES_OF_INTEREST=[48],
        MODEL__POLAR_REFINE__NORM="",
    )
    model = build_model(cfg)
    assert model.strides == [8, 16] and model.size_ranges == [(0.0, 48.0), (48.0, float("inf"))]
    losses = _train_step(model, _batch())
    assert set(losses) == ALL_LOSSES and all(torch.isfinite(v) for v in losses.values())
    assert model.refiner.stages[0].delta.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model([{"image": draw_image(100, 120, [])}])
    assert out[0]["instances"].image_size == (100, 120)


def test_bad_in_features_is_one_clear_error():
    cfg = tiny_cfg(MODEL__POLAR_REFINE__IN_FEATURES=["p3", "p9"])
    with pytest.raises(ValueError, match="p9"):
        build_model(cfg)


CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, ROOT) for p in CONFIGS])
def test_every_config_builds(path):
    cfg = get_cfg()
    polar_refine.add_polar_refine_config(cfg)
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    if cfg.MODEL.META_ARCHITECTURE != "PolarRefine":  # the benchmark's Mask R-CNN baselines
        assert "Baselines" in path
        return
    assert isinstance(model, PolarRefine)
    assert (model.refiner is not None) == cfg.MODEL.POLAR_REFINE.REFINE.ENABLED
    assert (model.contour is not None) == cfg.MODEL.POLAR_REFINE.CONTOUR.ENABLED


def test_refine_parameter_share_r50():
    """The default stages hold under 1 % of the R-50-FPN model's inference parameters."""
    cfg = get_cfg()
    polar_refine.add_polar_refine_config(cfg)
    cfg.merge_from_file(
        os.path.join(
            ROOT, "configs/COCO-InstanceSegmentation/polar_refine_contour_R_50_FPN_1x.yaml"
        )
    )
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    inference = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("contour."))
    refine = sum(p.numel() for p in model.refiner.parameters())
    share = refine / inference
    print(f"refine params {refine} / inference params {inference} = {100 * share:.3f}%")
    assert share < 0.01


def test_add_config_leaves_global_defaults_alone():
    from detectron2.config.defaults import _C

    cfg = get_cfg()
    polar_refine.add_polar_refine_config(cfg)
    assert "POLAR_REFINE" in cfg.MODEL and "POLAR_REFINE" not in _C.MODEL
    assert "POLAR_REFINE" not in get_cfg().MODEL
    polar_refine.add_polar_refine_config(cfg)  # idempotent
    assert cfg.MODEL.POLAR_REFINE.NUM_RAYS == 36


def test_overfit_two_images_polar_iou_above_0_8():
    """~100 CPU steps on 2 synthetic images: targets, losses and decoding agree."""
    torch.manual_seed(0)
    cfg = tiny_cfg(MODEL__POLAR_REFINE__CONTOUR__ENABLED=False)
    model = build_model(cfg)
    polys_a = [[circle(48, 52, 26)], [[90, 20, 120, 24, 116, 60, 86, 56]]]
    polys_b = [[[20, 20, 70, 20, 70, 40, 40, 40, 40, 70, 20, 70]], [circle(95, 90, 20, n=5)]]
    batch = [
        {
            "image": draw_image(128, 128, polys_a),
            "instances": make_instances(128, 128, polys_a, [0, 1]),
        },
        {
            "image": draw_image(128, 128, polys_b, 1),
            "instances": make_instances(128, 128, polys_b, [2, 3]),
        },
    ]
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    with EventStorage() as storage:
        for _ in range(110):
            losses = model(batch)
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
            storage.step()
    # decode the positives with the model's own inference path and compare to their targets
    model.eval()
    with torch.no_grad():
        images = model.preprocess_image(batch)
        feats = [model.backbone(images.tensor)[f] for f in model.head_in_features]
        cls, ctr, coarse = model.head(feats)
        locs = model.locations(feats)
        targets = model.assigner(locs, [b["instances"] for b in batch])
        radii = torch.cat([c.flatten(2) for c in coarse], 2).transpose(1, 2)  # (N, R, K)
        ious = []
        for i, t in enumerate(targets):
            idx, img = t["pos_idx"], torch.full_like(t["pos_idx"], i)
            fine = model.refiner(feats, locs, idx, img, radii[i, idx])[-1]
            ious.append(polar.polar_iou(fine.clamp(min=0), t["radii"]))
        iou = torch.cat(ious).mean().item()
        out = model([{"image": b["image"]} for b in batch])
    print(f"mean polar IoU of positives after overfitting: {iou:.3f}")
    assert iou > 0.8
    # and the decoded top detections overlap the ground-truth masks
    for o, b in zip(out, batch):
        assert len(o["instances"]) > 0
        assert isinstance(o["instances"], Instances)


@pytest.mark.parametrize("used_levels", [(0, 1), (0, 2)])
def test_refine_projection_equals_patent_operator(used_levels):
    """project-then-sample (the fast path) == sample-stack-grouped-conv (the patent), values and
    gradients; (0, 2) leaves the middle level without locations."""
    from reference_refine import refine_reference

    torch.manual_seed(0)
    stage = PolarRefineStage(16, 36)
    nn.init.normal_(stage.delta.weight, std=0.3)
    nn.init.normal_(stage.delta.bias, std=0.3)
    feats, locs = _grid([(3, 16, 20, 24), (3, 16, 10, 12), (3, 16, 5, 6)], [8, 16, 32])
    p = 300
    level = torch.tensor(used_levels)[torch.randint(0, 2, (p,))]
    on_level = [(locs.levels == lvl).nonzero().flatten() for lvl in range(3)]
    location = torch.stack([on_level[int(lvl)][torch.randint(len(on_level[int(lvl)]), ())]
                            for lvl in level])  # fmt: skip
    img = torch.randint(0, 3, (p,))
    coarse = torch.rand(p, 36) * 120  # many points fall outside the maps (zero padding)
    outs, grads = [], []
    for fn in (stage.forward, lambda *a, **k: refine_reference(stage, *a, **k)):
        f = [x.clone().requires_grad_(True) for x in feats]
        c = coarse.clone().requires_grad_(True)
        out = fn(f, locs, location, img, c, detach=False)
        (out * torch.linspace(-1, 1, 36)).sum().backward()
        outs.append(out)
        grads.append((*[x.grad for x in f], c.grad, stage.delta.weight.grad.clone()))
        stage.delta.weight.grad = None
    assert torch.allclose(outs[0], outs[1], atol=1e-4)
    for a, b in zip(*grads):
        if a is None or b is None:  # a level without locations: no gradient, or zeros
            assert (a if a is not None else b if b is not None else torch.zeros(1)).abs().max() == 0
            continue
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-3)


def _pixel_centre_truth(polys, h, w):
    """Independent reference: even-odd test of every pixel centre (polar.edges_contain)."""
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    centres = torch.stack([xs.flatten(), ys.flatten()], 1).double()
    out = []
    for p in polys.double():
        edges = torch.stack([p, p.roll(-1, 0)], 1)  # (K, 2, 2)
        out.append(polar.edges_contain(centres, edges).reshape(h, w))
    return torch.stack(out)


def test_masks_follow_the_pixel_centre_rule_on_both_paths():
    """CPU path and GPU (scanline, run here on the CPU) path == even-odd at pixel centres."""
    from polar_refine.modeling.postprocess import polygons_to_masks_scanline

    g = torch.Generator().manual_seed(0)
    h, w, k = 37, 53, 36
    centres = torch.rand(40, 2, generator=g) * torch.tensor([w, h])
    radii = 2 + 25 * torch.rand(40, k, generator=g)  # concave, some far outside the image
    radii[0] = 0.0  # degenerate
    polys = polar.radii_to_points(centres, radii)
    polys[1] = torch.tensor([[2.0, 2.0], [10.0, 2.0], [10.0, 9.0], [2.0, 9.0]]).repeat(9, 1)
    polys[2, :, 1] = 12.5  # horizontal line: no area
    polys[3, 5] = float("nan")  # a non-finite vertex must not crash either path
    circles = (3 + 20 * torch.rand(6, 1, generator=g)).expand(6, k)
    polys[4:10] = polar.radii_to_points(centres[4:10], circles)
    polys[10] = torch.tensor([[3.2, 1.1], [40.7, 30.3], [38.9, 31.0], [1.6, 2.2]]).repeat(9, 1)
    truth = _pixel_centre_truth(polys[:3], h, w)
    assert truth[1].sum() == 8 * 7 and truth[0].sum() == 0 and truth[2].sum() == 0
    truth = torch.cat([truth, _pixel_centre_truth(torch.nan_to_num(polys[3:], nan=-0.5), h, w)])
    cpu = polygons_to_masks(polys, h, w)
    scan = polygons_to_masks_scanline(polys, h, w, max_elements=5000)  # several chunks
    assert cpu.dtype == scan.dtype == torch.bool and cpu.shape == (40, h, w)
    assert torch.equal(cpu, truth)
    assert torch.equal(scan, truth)
    for fn in (polygons_to_masks, polygons_to_masks_scanline):
        assert fn(polys[:0], h, w).shape == (0, h, w)
        assert fn(polys[:2], 0, w).shape == (2, 0, w)
