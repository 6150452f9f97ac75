"""Tests of polar_refine.data: the synthetic shapes generator and the dataset registration."""

import json
import os

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_util

from polar_refine.data import datasets as pr_datasets
from polar_refine.data import shapes
from polar_refine.data.shapes import (
    SHAPE_CLASSES,
    annotate_instances,
    ensure_shapes,
    generate_shapes,
    mask_to_polygons,
    polygons_area,
    rasterize_polygon,
    shape_polygon,
)

# ../shared/data beside the repository: the data sets the tests read when present
SHARED_DATA = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
)


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POLAR_REFINE_CACHE", str(tmp_path / "cache"))


def _rasterize(polygons, h, w):
    """pycocotools' rasterisation of flat polygons -> (H, W) bool."""
    rles = mask_util.frPyObjects([list(p) for p in polygons], h, w)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def _area_centroid(poly):
    p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    x, y, xn, yn = p[:, 0], p[:, 1], np.roll(p[:, 0], -1), np.roll(p[:, 1], -1)
    cross = x * yn - xn * y
    a = cross.sum() / 2
    return ((x + xn) * cross).sum() / (6 * a), ((y + yn) * cross).sum() / (6 * a)


def test_generation_is_deterministic(tmp_path):
    p1 = generate_shapes(str(tmp_path / "a"), num_images=6, seed=7)
    p2 = generate_shapes(str(tmp_path / "b"), num_images=6, seed=7)
    with open(p1, "rb") as f1, open(p2, "rb") as f2:
        assert f1.read() == f2.read()
    p3 = generate_shapes(str(tmp_path / "c"), num_images=6, seed=8)
    with open(p1, "rb") as f1, open(p3, "rb") as f3:
        assert f1.read() != f3.read()


def test_json_format(tmp_path):
    path = generate_shapes(str(tmp_path), num_images=5, seed=3, image_size=(160, 192))
    with open(path) as f:
        data = json.load(f)
    assert [c["name"] for c in data["categories"]] == list(SHAPE_CLASSES)
    assert [c["id"] for c in data["categories"]] == list(range(1, len(SHAPE_CLASSES) + 1))
    assert len(data["images"]) == 5
    for im in data["images"]:
        assert (im["height"], im["width"]) == (160, 192)
        img = cv2.imread(os.path.join(tmp_path, "images", im["file_name"]))
        assert img.shape == (160, 192, 3)
    assert len(data["annotations"]) > 0
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    for a in data["annotations"]:
        assert a["iscrowd"] == 0 and 1 <= a["category_id"] <= len(SHAPE_CLASSES)
        assert a["area"] >= 20 and abs(a["area"] - polygons_area(a["segmentation"])) < 1e-3
        for poly in a["segmentation"]:
            assert len(poly) >= 6 and len(poly) % 2 == 0
        # bbox is the pixel-edge box of the rasterised polygons
        rle = mask_util.merge(mask_util.frPyObjects(a["segmentation"], 160, 192))
        np.testing.assert_allclose(mask_util.toBbox(rle), a["bbox"])


def test_c_shape_centroid_outside():
    poly = shape_polygon("c_shape", (50.0, 50.0), 30.0, angle=1.0, inner_ratio=0.55, sweep=4.7)
    cx, cy = _area_centroid(poly.ravel())
    assert cv2.pointPolygonTest(poly.astype(np.float32).reshape(-1, 1, 2), (cx, cy), False) < 0


def test_generated_c_shape_centroid_outside(tmp_path):
    path = generate_shapes(str(tmp_path), num_images=20, seed=0)
    with open(path) as f:
        data = json.load(f)
    c_id = SHAPE_CLASSES.index("c_shape") + 1
    outside = 0
    for a in data["annotations"]:
        if a["category_id"] != c_id or len(a["segmentation"]) != 1:
            continue
        poly = np.asarray(a["segmentation"][0], dtype=np.float32).reshape(-1, 1, 2)
        cx, cy = _area_centroid(a["segmentation"][0])
        outside += cv2.pointPolygonTest(poly, (float(cx), float(cy)), False) < 0
    assert outside >= 1


def test_polygons_rasterise_back_to_masks():
    h, w = 96, 112
    rng = np.random.default_rng(0)
    masks = []
    for kind in SHAPE_CLASSES:
        poly = shape_polygon(
            kind, rng.uniform(10, 90, size=2), rng.uniform(4, 30), rng.uniform(0, 6)
        )
        masks.append(rasterize_polygon(poly, (h, w)))
    # irregular masks: single pixels, diagonal neighbours, 1-pixel lines
    odd = np.zeros((h, w), np.uint8)
    odd[5, 5] = odd[6, 6] = odd[7, 8] = 1
    odd[20, 10:40] = 1
    odd[30:60, 70] = 1
    masks.append(odd)
    cross = np.zeros((h, w), np.uint8)
    cross[50:55, 50:55] = np.eye(5, dtype=np.uint8) | np.eye(5, dtype=np.uint8)[::-1]
    masks.append(cross)
    # hole-free random blobs (RETR_EXTERNAL polygons cannot represent holes)
    for _ in range(5):
        blob = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 3) > 0.52
        blob = blob.astype(np.uint8)
        contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(blob, contours, -1, 1, thickness=cv2.FILLED)
        masks.append(blob)
    for m in masks:
        m = m.astype(bool)
        if m.sum() == 0:
            continue
        polys = mask_to_polygons(m)
        back = _rasterize(polys, h, w)
        assert _iou(back, m) == 1.0


def test_generated_polygons_match_visible_masks():
    rng = np.random.default_rng(5)
    h, w = 192, 192
    for _ in range(10):
        masks, cats = [], []
        for _ in range(int(rng.integers(2, 7))):
            kind = int(rng.integers(len(SHAPE_CLASSES)))
            poly = shape_polygon(
                SHAPE_CLASSES[kind], rng.uniform(0, 192, size=2), rng.uniform(8, 60), 0.3
            )
            masks.append(rasterize_polygon(poly, (h, w)))
            cats.append(kind + 1)
        anns, visible = annotate_instances(masks, cats)
        for a, vis in zip(anns, visible):
            if vis.sum() > 100:
                assert _iou(_rasterize(a["segmentation"], h, w), vis) > 0.9


def test_occlusion_splits_and_reduces():
    h, w = 64, 64
    below = np.zeros((h, w), np.uint8)
    below[10:30, 5:60] = 1  # a wide bar ...
    above = np.zeros((h, w), np.uint8)
    above[0:50, 25:35] = 1  # ... cut in two by a later, vertical bar
    small = np.zeros((h, w), np.uint8)
    small[40:45, 26:30] = 1  # 20 px, entirely hidden by `top`
    top = np.zeros((h, w), np.uint8)
    top[38:48, 24:32] = 1
    anns, visible = annotate_instances([below, small, above, top], [1, 2, 3, 4])
    assert [a["category_id"] for a in anns] == [1, 3, 4]  # `small` dropped
    bar = anns[0]
    assert len(bar["segmentation"]) == 2
    assert bar["bbox"] == [5, 10, 55, 20]
    expected = below.astype(bool) & ~above.astype(bool)
    assert (visible[0] == expected).all()
    assert (_rasterize(bar["segmentation"], h, w) == expected).all()
    # `above` is reduced by `top` (a notch at its bottom end), `top` is whole
    assert visible[1].sum() == above.sum() - (above & top).sum()
    assert (_rasterize(anns[1]["segmentation"], h, w) == visible[1]).all()
    assert visible[2].sum() == top.sum()


def test_ensure_shapes_builds_once(tmp_path):
    json_path, image_root = ensure_shapes("shapes_tiny_val", root=str(tmp_path))
    assert os.path.isfile(json_path) and os.path.isdir(image_root)
    mtime = os.path.getmtime(json_path)
    assert ensure_shapes("shapes_tiny_val", root=str(tmp_path)) == (json_path, image_root)
    assert os.path.getmtime(json_path) == mtime
    assert [p for p in os.listdir(tmp_path) if ".tmp-" in p] == []
    assert f"v{shapes.GENERATOR_VERSION}" in os.path.basename(os.path.dirname(json_path))
    # default root: $POLAR_REFINE_CACHE read at call time (set by the autouse fixture)
    json2, _ = ensure_shapes("shapes_tiny_val")
    assert json2.startswith(os.environ["POLAR_REFINE_CACHE"])


def test_registered_names():
    from detectron2.data import DatasetCatalog, MetadataCatalog

    names = set(DatasetCatalog.list())
    expected = set(shapes.SHAPES_SPLITS) | set(pr_datasets.EXTERNAL_DATASETS)
    assert expected <= names
    for name in expected:
        assert MetadataCatalog.get(name).evaluator_type == "polar_coco"
    assert MetadataCatalog.get("shapes_val").thing_classes == list(SHAPE_CLASSES)
    pr_datasets.register_all()  # idempotent


def test_shapes_tiny_train_loads():
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import BoxMode

    dicts = DatasetCatalog.get("shapes_tiny_train")
    assert len(dicts) == 8
    meta = MetadataCatalog.get("shapes_tiny_train")
    assert meta.thing_classes == list(SHAPE_CLASSES)
    assert meta.json_file.startswith(os.environ["POLAR_REFINE_CACHE"])
    assert os.path.isfile(meta.json_file)
    num_anns = 0
    for d in dicts:
        assert os.path.isfile(d["file_name"])
        assert (d["height"], d["width"]) == (192, 192)
        for a in d["annotations"]:
            assert a["bbox_mode"] == BoxMode.XYWH_ABS
            assert 0 <= a["category_id"] < len(SHAPE_CLASSES)
            assert len(a["segmentation"]) >= 1 and len(a["bbox"]) == 4
            num_anns += 1
    assert num_anns > 0


def _needs(path):
    if not os.path.isdir(path):
        pytest.skip(f"{path} not found")


def test_dsb2018_val_loads(monkeypatch):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    _needs(os.path.join(SHARED_DATA, "dsb2018", "val"))
    monkeypatch.setenv("DETECTRON2_DATASETS", SHARED_DATA)
    dicts = DatasetCatalog.get("dsb2018_val")
    assert len(dicts) > 0
    assert os.path.isfile(dicts[0]["file_name"])
    assert all(a["category_id"] == 0 for d in dicts for a in d["annotations"])
    assert MetadataCatalog.get("dsb2018_val").thing_classes == ["nucleus"]


def test_coco128_seg_loads(monkeypatch):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    _needs(os.path.join(SHARED_DATA, "coco128-seg"))
    monkeypatch.setenv("DETECTRON2_DATASETS", SHARED_DATA)
    dicts = DatasetCatalog.get("coco128_seg")
    assert len(dicts) == 128
    assert os.path.isfile(dicts[0]["file_name"])
    meta = MetadataCatalog.get("coco128_seg")
    assert len(meta.thing_classes) == 80
    cats = {a["category_id"] for d in dicts for a in d["annotations"]}
    assert cats <= set(range(80))
    # COCO id 70 is "toilet" (the json's category names swap 67 and 70)
    assert meta.thing_classes[meta.thing_dataset_id_to_contiguous_id[70]] == "toilet"


def test_missing_dataset_error(monkeypatch, tmp_path):
    from detectron2.data import DatasetCatalog

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        DatasetCatalog.get("dsb2018_train")
