"""The training-only semantic head (``MODEL.POLAR_REFINE.SEMANTIC``): its category map, its loss,
its loader targets, and that inference never runs it."""

import copy

import numpy as np
import torch
from conftest import circle, draw_image, make_instances, tiny_cfg, two_image_batch
from detectron2.data import DatasetMapper
from detectron2.modeling import build_model
from detectron2.structures import BitMasks
from detectron2.utils.events import EventStorage

from polar_refine import polar
from polar_refine.data import PolarDatasetMapper
from polar_refine.modeling.gt_geometry import semantic_target_map
from polar_refine.modeling.losses import semantic_loss


def _square(x0, y0, side):
    return [x0, y0, x0 + side, y0, x0 + side, y0 + side, x0, y0 + side]


def test_semantic_map_of_squares_at_stride_8():
    # cells at stride 8 have centres at 4, 12, 20, ...: the square [16, 48] x [8, 40] holds the
    # centres x in {20, 28, 36, 44} (cells 2..5) and y in {12, 20, 28, 36} (cells 1..4)
    inst = make_instances(64, 72, [[_square(16, 8, 32)], [_square(40, 40, 16)]], [2, 0])
    m = semantic_target_map(inst, (64, 72), 8).numpy()
    assert m.shape == (8, 9) and m.dtype == np.int16
    expect = np.zeros((8, 9), dtype=np.int16)
    expect[1:5, 2:6] = 3  # category 2 -> 3
    expect[5:7, 5:7] = 1  # the second square: centres 44, 52 in both axes; category 0 -> 1
    np.testing.assert_array_equal(m, expect)


def test_semantic_map_equals_an_even_odd_test_of_every_cell_centre():
    # random star polygons, a two-part instance and a ring (outer + inner part: the hole stays
    # background), against polar's independent point-in-polygon test at each cell centre
    rng = np.random.RandomState(0)
    polys = []
    for _ in range(6):
        cx, cy, n = rng.uniform(10, 110), rng.uniform(10, 90), rng.randint(3, 12)
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(3, 30, n)
        polys.append([list(np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1).ravel())])
    polys.append([circle(20, 80, 9, n=12), _square(90, 5, 12)])
    polys.append([circle(70, 60, 25, n=40), circle(70, 60, 12, n=24)])
    classes = list(range(len(polys)))
    inst = make_instances(100, 120, polys, classes)
    for stride in (4, 8):
        got = semantic_target_map(inst, (100, 120), stride).numpy()
        h, w = got.shape
        ii, jj = np.mgrid[0:h, 0:w]
        centres = np.stack([(jj + 0.5) * stride, (ii + 0.5) * stride], -1).reshape(-1, 2)
        expect = np.zeros(h * w, dtype=np.int16)
        for c, parts in zip(classes, polys):
            edges = polar._edges_np([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in parts])
            expect[polar._in_polygons_np(centres, edges)] = c + 1
        np.testing.assert_array_equal(got, expect.reshape(h, w))
        assert (got == len(polys)).any() and got[60 // stride, 70 // stride] != len(
            polys
        )  # the hole


def test_semantic_map_later_instances_overwrite_and_crowd_is_skipped():
    inst = make_instances(64, 64, [[_square(8, 8, 40)], [_square(24, 24, 16)]], [0, 1])
    m = semantic_target_map(inst, (64, 64), 8).numpy()
    assert (m[3:5, 3:5] == 2).all() and (m[1, 1] == 1)
    inst.gt_iscrowd = torch.tensor([0, 1])
    m = semantic_target_map(inst, (64, 64), 8).numpy()
    assert set(np.unique(m)) == {0, 1}


def test_semantic_map_from_bitmasks_matches_polygons():
    polys = [[_square(16, 8, 32)], [_square(40, 40, 16)]]
    inst = make_instances(64, 72, polys, [2, 0])
    bits = copy.deepcopy(inst)
    bits.gt_masks = BitMasks.from_polygon_masks(inst.gt_masks, 64, 72)
    np.testing.assert_array_equal(
        semantic_target_map(bits, (64, 72), 8).numpy(),
        semantic_target_map(inst, (64, 72), 8).numpy(),
    )


def test_semantic_loss_falls_when_the_right_category_is_predicted():
    labels = torch.tensor([[[0, 3], [1, 3]]])  # 3 = background for 3 categories
    right = torch.full((1, 3, 2, 2), -6.0)
    right[0, 0, 0, 0] = right[0, 1, 1, 0] = 6.0
    wrong = torch.full((1, 3, 2, 2), -6.0)
    wrong[0, 2, 0, 0] = wrong[0, 2, 1, 0] = 6.0
    assert semantic_loss(right, labels) < 0.01 < semantic_loss(wrong, labels)


def test_semantic_head_trains_the_backbone_and_is_not_run_at_inference():
    cfg = tiny_cfg(MODEL__POLAR_REFINE__SEMANTIC__ENABLED="True")
    cfg.MODEL.POLAR_REFINE.SEMANTIC.CHANNELS = [16, 16]
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    with EventStorage(0):
        losses = model(two_image_batch())
    assert "loss_semantic" in losses and torch.isfinite(losses["loss_semantic"])
    losses["loss_semantic"].backward()
    assert model.semantic.logits.weight.grad.abs().sum() > 0
    stem = model.backbone.bottom_up.stem.conv1.weight.grad
    assert stem is not None and stem.abs().sum() > 0  # the signal reaches the shared features

    model.eval()
    calls = []
    model.semantic.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        with_head = model([{"image": two_image_batch()[0]["image"]}])[0]["instances"]
        model.semantic = None  # the same weights without the head: the same detections
        without = model([{"image": two_image_batch()[0]["image"]}])[0]["instances"]
    assert not calls
    torch.testing.assert_close(with_head.scores, without.scores)


def test_loader_semantic_map_gives_the_in_model_loss():
    cfg = tiny_cfg(MODEL__POLAR_REFINE__SEMANTIC__ENABLED="True")
    cfg.MODEL.POLAR_REFINE.SEMANTIC.CHANNELS = [16, 16]
    polys = [[circle(40, 40, 20)], [_square(70, 60, 30)]]
    img = draw_image(128, 128, polys, seed=3).permute(1, 2, 0).numpy().astype(np.uint8)
    anns = [
        {"bbox": [20, 20, 60, 60], "bbox_mode": 0, "category_id": 1, "segmentation": [polys[0][0]],
         "iscrowd": 0},
        {"bbox": [70, 60, 100, 90], "bbox_mode": 0, "category_id": 2,
         "segmentation": [polys[1][0]], "iscrowd": 0},
    ]  # fmt: skip
    import cv2

    path = str(__import__("tempfile").mkdtemp()) + "/a.png"
    cv2.imwrite(path, img)
    d = {"file_name": path, "height": 128, "width": 128, "image_id": 0, "annotations": anns}
    out = []
    for cls in (PolarDatasetMapper, DatasetMapper):
        mapper = cls(cfg, True)
        mapper.augmentations.augs = []
        out.append([mapper(copy.deepcopy(d))])
    assert "polar_semantic" in out[0][0] and "polar_semantic" not in out[1][0]
    assert set(np.unique(out[0][0]["polar_semantic"].numpy())) == {0, 2, 3}
    got = []
    for batch in out:
        torch.manual_seed(0)
        model = build_model(cfg)
        model.train()
        with EventStorage(0):
            got.append(model(batch)["loss_semantic"])
    torch.testing.assert_close(got[0], got[1], rtol=0, atol=0)
