"""Failure modes that once passed silently: each is now either correct or a one-line error."""

import ast
import glob
import math
import os

import numpy as np
import pytest
import torch
from conftest import ROOT, circle, draw_image, make_instances, tiny_cfg
from detectron2.data import DatasetMapper
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances
from detectron2.utils.events import EventStorage

from polar_refine import polar
from polar_refine.data import PolarDatasetMapper
from polar_refine.gt_geometry import contour_target_map
from polar_refine.modeling import Candidates


def _dataset_dict(h=96, w=128):
    polys = [[circle(40, 40, 20)], [circle(90, 60, 15)]]
    img = draw_image(h, w, polys).permute(1, 2, 0).numpy().astype(np.uint8)
    anns = [
        {"bbox": [20, 20, 60, 60], "bbox_mode": 0, "category_id": 0, "segmentation": polys[0]},
        {"bbox": [75, 45, 105, 75], "bbox_mode": 0, "category_id": 1, "segmentation": polys[1]},
    ]
    return {"image": img, "height": h, "width": w, "annotations": anns, "file_name": ""}


class _ArrayMapper:
    """Feeds the in-memory image of `_dataset_dict` to a detectron2 mapper."""

    def __init__(self, mapper):
        self.mapper = mapper
        mapper.augmentations.augs = []

    def __call__(self, d):
        import detectron2.data.detection_utils as utils

        image = d.pop("image")
        orig = utils.read_image
        utils.read_image = lambda *a, **k: image
        try:
            return self.mapper(d)
        finally:
            utils.read_image = orig


@pytest.mark.parametrize("contour", [True, False])
def test_mask_on_false_is_one_clear_error_never_box_rectangles(contour):
    """detectron2's DatasetMapper drops the polygons with MODEL.MASK_ON False: the model must
    not train on box rectangles (polar targets, boundary map), and PolarDatasetMapper loads
    the polygons anyway."""
    cfg = tiny_cfg(MODEL__MASK_ON=False, MODEL__POLAR_REFINE__CONTOUR__ENABLED=contour)
    plain = _ArrayMapper(DatasetMapper(cfg, True))(_dataset_dict())
    assert not plain["instances"].has("gt_masks")
    model = build_model(cfg).train()
    with EventStorage(), pytest.raises(ValueError, match="MODEL.MASK_ON"):
        model([plain])
    ours = _ArrayMapper(PolarDatasetMapper(cfg, True))(_dataset_dict())
    assert ours["instances"].has("gt_masks")
    assert ours["polar_contour"].sum() > 0 if contour else "polar_contour" not in ours
    with EventStorage():
        losses = model([ours])
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("score_from", ["center", "covered"])
def test_every_returned_score_is_at_least_the_threshold(score_from):
    """The threshold applies to the returned score sqrt(class x centre), not to the class
    probability alone: with class 0.5 and centre 0.15 everywhere (score 0.27) nothing passes
    0.3; with 0.9 and 0.5 every score is sqrt(0.45)."""
    torch.manual_seed(0)
    cfg = tiny_cfg(
        MODEL__POLAR_REFINE__SCORE_THRESH_TEST=0.3, MODEL__POLAR_REFINE__SCORE_FROM=score_from
    )
    model = build_model(cfg).eval()
    image = [{"image": draw_image(96, 128, [[circle(50, 50, 20)]])}]
    counts = []
    for cls_p, ctr_p in ((0.5, 0.15), (0.9, 0.5)):
        with torch.no_grad():
            model.head.cls_logits.weight.zero_()
            model.head.cls_logits.bias.fill_(math.log(cls_p / (1 - cls_p)))
            model.head.ctr_logits.weight.zero_()
            model.head.ctr_logits.bias.fill_(math.log(ctr_p / (1 - ctr_p)))
            inst = model(image)[0]["instances"]
        assert (inst.scores > 0.3).all()
        assert torch.allclose(inst.scores, torch.tensor(math.sqrt(cls_p * ctr_p)))
        counts.append(len(inst))
    assert counts[0] == 0 and counts[1] > 0


def test_nms_offsets_stay_exact_with_a_degenerate_candidate():
    """Box NMS offsets classes by the extent of the polygons: a degenerate candidate with a
    radius of e^10 strides must not push them to where float32 steps are many pixels."""
    torch.manual_seed(0)
    cfg = tiny_cfg(MODEL__POLAR_REFINE__NUM_CLASSES=80, MODEL__POLAR_REFINE__SCORE_THRESH_TEST=0.0)
    model = build_model(cfg).eval()
    feats = [torch.zeros(1, 1, math.ceil(96 / s), math.ceil(128 / s)) for s in model.strides]
    locs = model.locations(feats)
    p7 = int((locs.levels == 4).nonzero()[0])
    loc = torch.tensor([0, 5, p7])  # two P3 neighbours (4 px apart), a P7 location
    radii = torch.full((3, 36), 12.0)
    radii[2] = math.exp(10) * 128  # the largest radius the head can predict on P7
    cand = Candidates(
        image=torch.zeros(3, dtype=torch.long),
        location=loc,
        classes=torch.tensor([79, 79, 0]),
        cls_prob=torch.ones(3),
        ctr_prob=torch.ones(3),
        coarse=radii,
    )
    scores = torch.tensor([0.9, 0.8, 0.7])
    locs = locs._replace(cells=locs.cells.clone(), points=locs.points.clone())
    locs.points[5] = locs.points[0] + torch.tensor([4.0, 0.0])
    res = model.inference_single_image(locs, cand, radii, scores, (96, 128))
    # the two class-79 polygons overlap at IoU ~0.8: one survives, the big one stays
    assert res.pred_classes.tolist() == [79, 0] and res.scores.tolist() == pytest.approx([0.9, 0.7])
    assert (res.pred_polygons[..., 0] <= 128).all() and (res.pred_polygons[..., 1] <= 96).all()


def test_radii_are_float32_under_bf16_autocast():
    """A 501.3 px radius must not come out as bf16's neighbours (498 or 502)."""
    cfg = tiny_cfg()
    model = build_model(cfg).eval()
    head = model.head
    with torch.no_grad():
        head.radius_pred.weight.zero_()
        head.radius_pred.bias.fill_(math.log(501.3 / model.strides[0]))
        head.scales.fill_(1.0)
    feats = [torch.randn(1, 64, 8, 8) for _ in model.strides]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        cls, _, radii = head(feats)
    assert cls[0].dtype == torch.bfloat16  # the towers follow autocast
    assert radii[0].dtype == torch.float32
    assert (radii[0] - 501.3).abs().max() < 1e-3


def test_bitmap_contour_targets_use_cell_centres():
    """The bitmap path reads each cell at its centre, as the polygon path does: a 12 x 12 px
    square at stride 8 covers the centre of cell (0, 0) only (centres at 4, 12, 20, 28 px)."""
    h = w = 32
    mask = torch.zeros(1, h, w, dtype=torch.bool)
    mask[0, :12, :12] = True
    inst = Instances((h, w))
    inst.gt_masks = BitMasks(mask)
    got = contour_target_map(inst, (h, w), 8)
    want = torch.zeros(4, 4, dtype=torch.uint8)
    want[:2, :2] = 1  # the inside cell and its neighbours: the band of the gradient
    assert torch.equal(got, want)
    # the polygon path marks the same boundary cells
    square = [[0.0, 0.0, 12.0, 0.0, 12.0, 12.0, 0.0, 12.0]]
    poly = contour_target_map(make_instances(h, w, [square], [0]), (h, w), 8)
    assert poly[2:].sum() == 0 and poly[:, 2:].sum() == 0


def test_export_graph_refuses_shape_nms():
    from polar_refine.export import PolarRefineExportGraph

    model = build_model(tiny_cfg(MODEL__POLAR_REFINE__NMS_TYPE="shape")).eval()
    with pytest.raises(ValueError, match="NMS_TYPE"):
        PolarRefineExportGraph(model)


def test_data_never_imports_modeling():
    """Annotation geometry sits beside polar.py; the data layer does not reach the model's."""
    for path in glob.glob(os.path.join(ROOT, "polar_refine", "data", "*.py")):
        tree = ast.parse(open(path).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                # relative to polar_refine/data: ".." is polar_refine
                module = node.module or ""
                name = ("polar_refine." if node.level == 2 else "") + module
                assert not name.startswith("polar_refine.modeling"), (path, node.module)
            elif isinstance(node, ast.Import):
                assert all(not a.name.startswith("polar_refine.modeling") for a in node.names)


def test_mapper_takes_the_contour_stride_from_the_backbone():
    """A backbone whose finest feature is not named p<N>: the stride comes from its
    output_shape(), and the loader's map is the one the contour head uses."""
    from test_model import PolarTestTinyBackbone  # noqa: F401  (registers it)

    cfg = tiny_cfg(
        MODEL__BACKBONE__NAME="PolarTestTinyBackbone",
        MODEL__POLAR_REFINE__IN_FEATURES=["a", "b"],
        MODEL__POLAR_REFINE__SIZES_OF_INTEREST=[48],
        MODEL__POLAR_REFINE__NORM="",
    )
    mapper = _ArrayMapper(PolarDatasetMapper(cfg, True))
    d = mapper(_dataset_dict())
    assert d["polar_contour_stride"] == 8
    model = build_model(cfg).train()
    with EventStorage():
        losses = model([d])
    assert torch.isfinite(losses["loss_contour"])
    d["polar_contour_stride"] = 16  # a map drawn for another model is an error, not a fallback
    with EventStorage(), pytest.raises(ValueError, match="stride"):
        model([d])


def test_polygon_radii_of_known_square_through_the_moved_geometry():
    """gt_geometry's fields, from their new home: a square's mass centre and area."""
    from polar_refine.gt_geometry import instance_geometry

    inst = make_instances(64, 64, [[[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]]], [0])
    g = instance_geometry(inst)
    assert g["gt_polar_centers"].tolist() == [[20.0, 20.0]]
    assert g["gt_polar_areas"].tolist() == [400.0]
    r = polar.edges_radii(g["gt_polar_centers"], g["gt_polar_edges"][0], 4)
    assert r.tolist() == [[10.0, 10.0, 10.0, 10.0]]
