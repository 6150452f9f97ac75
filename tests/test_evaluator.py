"""Tests for polar_refine.evaluation: polygon -> RLE COCO evaluation and the polar ceiling."""

import json
import math
import uuid

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances

from polar_refine.evaluation import (
    EVALUATOR_REGISTRY,
    PolarCOCOEvaluator,
    build_evaluator,
    polar_ceiling_iou,
    polygons_to_rles,
)

H, W = 64, 80
K = 36
METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 3, "name": "square"}]  # non-contiguous ids


def circle(cx, cy, r, n=24):
    t = np.arange(n) * 2 * math.pi / n
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1).reshape(-1).tolist()


def rect(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def rasterize(polygon, h=H, w=W):
    """(M, 2) polygon -> (h, w) uint8 mask with pycocotools, as detectron2 rasterises."""
    flat = np.asarray(polygon, dtype=np.float64).reshape(-1).tolist()
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects([flat], h, w)))


def resample(flat, n=K):
    """A closed polygon resampled uniformly by arc length to n points. Returns (n, 2)."""
    p = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
    q = np.concatenate([p, p[:1]], 0)
    seg = np.linalg.norm(np.diff(q, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    s = np.arange(n) * cum[-1] / n
    return np.stack([np.interp(s, cum, q[:, 0]), np.interp(s, cum, q[:, 1])], 1)


def make_annotation(ann_id, image_id, category_id, segmentation, iscrowd=0):
    if iscrowd:
        rle = segmentation
    else:
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, H, W))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": segmentation,
        "area": float(mask_util.area(rle)),
        "bbox": mask_util.toBbox(rle).tolist(),
        "iscrowd": iscrowd,
    }


def crowd_rle(x0, y0, x1, y1):
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def gt_objects():
    """(image_id, category_id, segmentation, iscrowd) of the tiny dataset."""
    return [
        (10, 1, [circle(25, 30, 14)], 0),
        (10, 3, [rect(50, 8, 74, 30)], 0),
        (20, 3, [rect(5, 5, 25, 20), rect(40, 40, 60, 58)], 0),  # multi-part
        (20, 1, crowd_rle(55, 5, 78, 25), 1),
        (20, 1, [circle(25, 45, 8, n=16)], 0),
        (30, 1, [[10, 50, 30, 56, 14, 62]], 0),
        (30, 1, [circle(55, 35, 20, n=40)], 0),
        (30, 3, [rect(2, 2, 8, 8)], 0),
    ]


def register(tmp_path, objects, image_ids=(10, 20, 30)):
    """Write a COCO json for ``objects`` and register it; returns the dataset name."""
    name = f"polar_eval_test_{uuid.uuid4().hex[:8]}"
    anns = [make_annotation(i + 1, *obj) for i, obj in enumerate(objects)]
    images = [{"id": i, "file_name": f"{i}.jpg", "height": H, "width": W} for i in image_ids]
    json_file = tmp_path / f"{name}.json"
    json_file.write_text(
        json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES})
    )
    register_coco_instances(name, {}, str(json_file), str(tmp_path))
    DatasetCatalog.get(name)  # as a data loader would: sets thing_dataset_id_to_contiguous_id
    return name


@pytest.fixture
def dataset(tmp_path):
    name = register(tmp_path, gt_objects())
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def make_outputs(per_image, with_polygons=True, with_masks=False):
    """
    Args:
        per_image: {image_id: [(polygon (K, 2), contiguous class, score), ...]}.

    Returns:
        inputs, outputs for ``evaluator.process``.
    """
    inputs, outputs = [], []
    for image_id, preds in per_image.items():
        if preds:
            polys = torch.tensor(np.array([p for p, _, _ in preds]), dtype=torch.float32)
        else:
            polys = torch.zeros(0, K, 2)
        lo = polys.amin(1)
        hi = polys.amax(1)
        boxes = Boxes(torch.cat([lo, hi], 1))
        boxes.clip((H, W))
        inst = Instances((H, W))
        inst.pred_boxes = boxes
        inst.scores = torch.tensor([s for _, _, s in preds], dtype=torch.float32)
        inst.pred_classes = torch.tensor([c for _, c, _ in preds], dtype=torch.int64)
        if with_polygons:
            inst.pred_polygons = polys
        if with_masks:
            masks = [torch.from_numpy(rasterize(p.numpy())).bool() for p in polys]
            inst.pred_masks = torch.stack(masks) if masks else torch.zeros(0, H, W, dtype=bool)
        inputs.append({"image_id": image_id, "height": H, "width": W})
        outputs.append({"instances": inst})
    return inputs, outputs


def noisy_predictions(seed=0):
    """GT polygons resampled to K points with noise, plus false positives and degenerate ones."""
    rng = np.random.default_rng(seed)
    contiguous = {1: 0, 3: 1}
    per_image = {10: [], 20: [], 30: []}
    for image_id, cat, segm, iscrowd in gt_objects():
        if iscrowd:
            continue
        part = max(segm, key=lambda p: mask_util.area(mask_util.frPyObjects([p], H, W))[0])
        poly = resample(part) + rng.normal(0, 0.7, (K, 2))
        per_image[image_id].append((poly, contiguous[cat], float(rng.uniform(0.3, 1.0))))
    # false positives: a wrong-class circle, one on the crowd region, one leaving the image
    per_image[10].append((resample(circle(25, 30, 12)), 1, 0.9))
    per_image[20].append((resample(rect(56, 6, 76, 24)), 0, 0.8))
    per_image[30].append((resample(circle(75, 10, 15)), 0, 0.5))
    # degenerate: one point repeated, two distinct points (zero area)
    per_image[30].append((np.full((K, 2), 33.0), 0, 0.4))
    two = np.where(np.arange(K)[:, None] % 2 == 0, [[5.0, 5.0]], [[40.0, 30.0]])
    per_image[30].append((two, 1, 0.35))
    return per_image


def run(evaluator, inputs, outputs):
    evaluator.reset()
    evaluator.process(inputs, outputs)
    return evaluator.evaluate()


def assert_metrics_close(a, b, tol=1e-6):
    for m in METRICS:
        if math.isnan(b[m]):
            assert math.isnan(a[m]), (m, a[m], b[m])
        else:
            assert abs(a[m] - b[m]) <= tol, (m, a[m], b[m])


def test_pixel_convention():
    # pixel (i, j) covers [j, j+1) x [i, i+1): the square [0, 4]^2 is exactly 4 x 4 pixels
    rle = polygons_to_rles(torch.tensor([[[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]]]), 6, 6)
    mask = mask_util.decode(rle[0])
    expected = np.zeros((6, 6), dtype=np.uint8)
    expected[:4, :4] = 1
    np.testing.assert_array_equal(mask, expected)


def test_degenerate_polygons_give_valid_rles():
    polys = [
        np.zeros((1, 2)),
        np.array([[1.0, 1.0], [5.0, 5.0]]),
        np.array([[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]]),
        np.array([[1.0, 1.0], [3.0, 3.0], [6.0, 6.0]]),  # collinear
        np.array([[np.nan, 1.0], [2.0, np.inf], [3.0, 3.0]]),
    ]
    for poly in polys:
        (rle,) = polygons_to_rles(poly[None], H, W)
        assert rle["size"] == [H, W]
        assert mask_util.area(rle) == 0
        assert mask_util.decode(rle).shape == (H, W)
    assert polygons_to_rles(torch.zeros(0, K, 2), H, W) == []
    # huge coordinates are clipped: the whole image, quickly and without overflow
    huge = torch.tensor([[[-1e30, -1e30], [1e30, -1e30], [1e30, 1e30], [-1e30, 1e30]]])
    assert mask_util.area(polygons_to_rles(huge, H, W)[0]) == H * W


def test_polygon_rle_matches_merge_of_frpyobjects():
    per_image = noisy_predictions()
    polys = np.array([p for p, _, _ in per_image[10]])
    for poly, rle in zip(polys, polygons_to_rles(torch.from_numpy(polys).float(), H, W)):
        ref = mask_util.merge(
            mask_util.frPyObjects([poly.astype(np.float32).ravel().tolist()], H, W)
        )
        assert rle["counts"] == ref["counts"]


def test_polygon_path_matches_raster_path(dataset, tmp_path):
    per_image = noisy_predictions()
    inputs, poly_outputs = make_outputs(per_image, with_polygons=True)
    _, mask_outputs = make_outputs(per_image, with_polygons=False, with_masks=True)

    kw = {"distributed": False, "use_fast_impl": False}
    raster = run(COCOEvaluator(dataset, output_dir=str(tmp_path / "r"), **kw), inputs, mask_outputs)
    ours = run(
        PolarCOCOEvaluator(dataset, output_dir=str(tmp_path / "p"), **kw), inputs, poly_outputs
    )
    assert set(ours) == {"bbox", "segm"}
    assert 0 < ours["segm"]["AP"] < 100
    assert_metrics_close(ours["segm"], raster["segm"])
    assert_metrics_close(ours["bbox"], raster["bbox"])
    # and the result files hold the very same RLEs
    res_r = json.loads((tmp_path / "r" / "coco_instances_results.json").read_text())
    res_p = json.loads((tmp_path / "p" / "coco_instances_results.json").read_text())
    assert [r["segmentation"] for r in res_p] == [r["segmentation"] for r in res_r]
    assert [r["category_id"] for r in res_p] == [r["category_id"] for r in res_r]

    # without pred_polygons it falls back to pred_masks, as COCOEvaluator
    fallback = run(
        PolarCOCOEvaluator(dataset, output_dir=str(tmp_path / "f"), **kw), inputs, mask_outputs
    )
    assert_metrics_close(fallback["segm"], raster["segm"])


def test_perfect_predictions(dataset, tmp_path):
    contiguous = {1: 0, 3: 1}
    per_image = {10: [], 20: [], 30: []}
    for image_id, cat, segm, iscrowd in gt_objects():
        if iscrowd:
            continue
        # several parts: one polygon joining them through zero-width bridges
        parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in segm]
        anchor = parts[0][:1]
        pieces = [parts[0], anchor]
        for p in parts[1:]:
            pieces += [p, p[:1], anchor]
        poly = np.concatenate(pieces, 0) if len(parts) > 1 else parts[0]
        per_image[image_id].append((poly, contiguous[cat], 0.9))
    # pad to a common vertex count by repeating the last vertex (zero-length edges)
    n = max(len(p) for preds in per_image.values() for p, _, _ in preds)
    for preds in per_image.values():
        for i, (p, c, s) in enumerate(preds):
            preds[i] = (np.concatenate([p, np.repeat(p[-1:], n - len(p), 0)], 0), c, s)
    inputs, outputs = make_outputs(per_image)
    res = run(
        PolarCOCOEvaluator(dataset, distributed=False, output_dir=str(tmp_path)), inputs, outputs
    )
    assert res["segm"]["AP"] >= 99.0
    assert res["segm"]["AP50"] >= 99.0
    assert res["bbox"]["AP"] >= 99.0


def test_zero_detections(dataset, tmp_path):
    evaluator = PolarCOCOEvaluator(
        dataset, distributed=False, output_dir=str(tmp_path), use_fast_impl=False
    )
    inputs, outputs = make_outputs({10: [], 20: [], 30: []})
    for res in (run(evaluator, inputs, outputs), run(evaluator, [], [])):
        assert set(res) == {"bbox", "segm"}
        for task in ("bbox", "segm"):
            for m in ("AP", "AP50", "AP75", "APs", "APm"):
                assert res[task][m] == 0.0
            assert math.isnan(res[task]["APl"])  # no large object in the dataset, as COCOeval


def test_polar_ceiling(tmp_path):
    objects = [(10, 1, [circle(30, 30, 20, n=64)], 0), (20, 3, [rect(20, 15, 50, 45)], 0)]
    name = register(tmp_path, objects, image_ids=(10, 20))
    try:
        for _, _, segm, _ in objects:
            assert polar_ceiling_iou(segm, H, W, num_rays=K) > 0.95
        evaluator = build_evaluator(
            "PolarCOCOEvaluator",
            name,
            output_dir=str(tmp_path),
            distributed=False,
            polar_ceiling=True,
            num_rays=K,
        )
        assert "PolarCOCOEvaluator" in EVALUATOR_REGISTRY
        res = run(evaluator, [], [])
        assert res["polar_ceiling"]["num_instances"] == 2
        assert res["polar_ceiling"]["mean_iou"] > 0.95
        assert res["segm"]["AP"] == 0.0
        # with predictions: COCOeval turns the GT polygons into RLEs, the ceiling must not change
        per_image = {
            10: [(resample(objects[0][2][0]), 0, 0.9)],
            20: [(resample(objects[1][2][0]), 1, 0.9)],
        }
        for _ in range(2):
            res2 = run(evaluator, *make_outputs(per_image))
            assert res2["segm"]["AP"] > 50
            assert res2["polar_ceiling"] == res["polar_ceiling"]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_build_evaluator_from_config(dataset, tmp_path):
    from detectron2.config import get_cfg

    from polar_refine import add_polar_refine_config

    cfg = add_polar_refine_config(get_cfg())
    cfg.MODEL.POLAR_REFINE.NUM_RAYS = 24
    evaluator = build_evaluator(
        "PolarCOCOEvaluator", dataset, cfg=cfg, output_dir=str(tmp_path), distributed=False
    )
    assert isinstance(evaluator, PolarCOCOEvaluator)
    assert evaluator._num_rays == 24
    assert evaluator._max_dets_per_image == [1, 10, cfg.TEST.DETECTIONS_PER_IMAGE]
    assert not evaluator._use_fast_impl


def test_ap_at_100_detections_when_more_are_allowed(dataset, tmp_path):
    """With max_dets_per_image > 100, AP counts up to that many and AP@100 the first 100."""
    per_image = noisy_predictions()
    # 150 high-scoring junk detections on image 10 push its true positives past rank 100
    junk = [(resample(circle(8 + (i % 10) * 6, 8 + (i // 10) * 3, 3)), 0, 0.99) for i in range(150)]
    per_image[10] = junk + per_image[10]
    inputs, outputs = make_outputs(per_image)
    ev400 = PolarCOCOEvaluator(
        dataset, distributed=False, output_dir=str(tmp_path), max_dets_per_image=400
    )
    res400 = run(ev400, inputs, outputs)
    res100 = run(
        PolarCOCOEvaluator(dataset, distributed=False, output_dir=str(tmp_path)), inputs, outputs
    )
    assert "AP@100" in res400["segm"] and "AP@100" not in res100["segm"]
    assert abs(res400["segm"]["AP@100"] - res100["segm"]["AP"]) < 1e-6
    assert res400["segm"]["AP"] > res400["segm"]["AP@100"]
