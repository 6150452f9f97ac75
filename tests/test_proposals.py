"""benchmarks/proposals.py: the figures that say what holds a category's AP down, on a known
case (one object, a covering detection, a fragment and a wrong-category detection)."""

import os
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
proposals = pytest.importorskip("proposals")


def _square(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _rle(poly, h=64, w=64):
    return mask_util.merge(mask_util.frPyObjects(poly, h, w))


def _ground_truth():
    gt = COCO()
    gt.dataset = {
        "images": [{"id": 1, "height": 64, "width": 64}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": _square(10, 10, 30, 30),
             "area": 400.0, "bbox": [10, 10, 20, 20], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": _square(40, 40, 60, 60),
             "area": 400.0, "bbox": [40, 40, 20, 20], "iscrowd": 0},
        ],
    }  # fmt: skip
    gt.createIndex()
    return gt


def _det(poly, category, score):
    rle = _rle(poly)
    rle["counts"] = rle["counts"].decode()
    return {"image_id": 1, "category_id": category, "segmentation": rle, "score": score}


def test_a_fragment_ranked_first_is_told_from_the_masks():
    gt = _ground_truth()
    dets = [
        _det(_square(10, 10, 20, 30), 1, 0.9),  # a fragment: half of object 1, ranked first
        _det(_square(9, 9, 31, 31), 1, 0.5),  # covers object 1 (IoU 400 / 484)
        _det(_square(40, 40, 60, 60), 1, 0.8),  # object 2 under the wrong category
    ]
    r = proposals.analyse(gt, dets, score=0.05, cover=0.8)
    a, b = r["a"], r["b"]
    assert a["best"] == pytest.approx(400 / 484, abs=1e-3)
    assert a["covered"] == 1.0 and a["none"] == 0.0
    # category b has no detection at all
    assert b["best"] == 0.0 and b["covered"] == 0.0 and b["none"] == 1.0 and b["AP"] == 0.0
    # as ranked, the fragment and the wrong-category detection come first; ranked by their IoU
    # the covering one is first, and only its shape (IoU 0.83) keeps the AP below 100
    thresholds = np.linspace(0.5, 0.95, 10)
    want = 100.0 * np.mean(thresholds <= 400 / 484 + 1e-9)
    assert a["ideal"] == pytest.approx(want, abs=0.5)
    assert a["AP"] < a["ideal"]


def test_only_the_fragment_is_not_covered():
    gt = _ground_truth()
    r = proposals.analyse(gt, [_det(_square(10, 10, 20, 30), 1, 0.9)], score=0.05, cover=0.8)
    assert r["a"]["covered"] == 0.0 and r["a"]["best"] == pytest.approx(0.5, abs=1e-3)
    two = proposals.focus_rows(r, "a")
    assert set(two) == {"a", "the other categories (mean)"}
    assert two["the other categories (mean)"]["none"] == 1.0


def test_a_loose_contour_that_holds_the_whole_object_covers_it():
    """Covered counts the object's area inside a detection, not the IoU: a contour twice the
    object's size (IoU 0.44) covers it, one that holds 3/4 of it does not."""
    gt = _ground_truth()
    loose = proposals.analyse(gt, [_det(_square(5, 5, 35, 35), 1, 0.9)], score=0.05, cover=0.8)
    assert loose["a"]["best"] == pytest.approx(400 / 900, abs=1e-3)
    assert loose["a"]["covered"] == 1.0
    part = proposals.analyse(gt, [_det(_square(10, 10, 25, 30), 1, 0.9)], score=0.05, cover=0.8)
    assert part["a"]["covered"] == 0.0


def test_a_detection_elsewhere_leaves_the_object_without_one():
    gt = _ground_truth()
    r = proposals.analyse(gt, [_det(_square(40, 40, 60, 60), 1, 0.9)], score=0.05, cover=0.8)
    assert r["a"]["none"] == 1.0 and r["a"]["best"] == 0.0 and r["a"]["ideal"] == 0.0
    kept = proposals.analyse(gt, [_det(_square(10, 10, 30, 30), 1, 0.01)], score=0.05, cover=0.8)
    assert kept["a"]["none"] == 1.0  # below the least score: not counted


def test_fragments_mostly_inside_an_object_are_merged_into_one():
    """Two halves of object a merge into the whole object (AP 100); a detection mostly outside
    it (a quarter of its area inside) is not merged and stays as it is."""
    gt = _ground_truth()
    halves = [_det(_square(10, 10, 20, 30), 1, 0.9), _det(_square(20, 10, 30, 30), 1, 0.6)]
    r = proposals.analyse(gt, halves, score=0.05, cover=0.8)
    assert r["a"]["merged"] == pytest.approx(100.0)
    assert r["a"]["AP"] < 20.0  # each half alone: IoU 0.5
    merged = proposals.merge_fragments(gt, halves, score=0.05)
    assert len(merged) == 1 and merged[0]["score"] == 0.9
    assert mask_util.area(merged[0]["segmentation"]) == 400
    outside = _det(_square(20, 20, 40, 40), 1, 0.7)  # 100 of its 400 px inside object a
    merged = proposals.merge_fragments(gt, halves + [outside], score=0.05)
    assert len(merged) == 2 and outside in merged
    low = _det(_square(20, 10, 30, 30), 1, 0.01)  # below the least score: left alone
    assert len(proposals.merge_fragments(gt, halves[:1] + [low], score=0.05)) == 2
