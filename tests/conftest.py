"""Shared helpers for the tests: tiny configs and synthetic instances."""

import math
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def tiny_cfg(**overrides):
    """The Shapes tiny config on CPU, with optional ``KEY=value`` overrides (dots as __)."""
    from detectron2.config import get_cfg

    import polar_refine

    cfg = get_cfg()
    polar_refine.add_polar_refine_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, "configs/Shapes/polar_refine_tiny.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    opts = []
    for k, v in overrides.items():
        opts += [k.replace("__", "."), v]
    cfg.merge_from_list(opts)
    return cfg


def circle(cx, cy, r, n=32):
    return [
        v
        for t in range(n)
        for v in (cx + r * math.cos(2 * math.pi * t / n), cy + r * math.sin(2 * math.pi * t / n))
    ]


def make_instances(h, w, polys_per_instance, classes):
    """Instances with gt_boxes, gt_classes and polygon gt_masks from flat polygon lists."""
    from detectron2.structures import Boxes, Instances, PolygonMasks

    inst = Instances((h, w))
    boxes = []
    for parts in polys_per_instance:
        pts = torch.tensor([v for p in parts for v in p], dtype=torch.float32).reshape(-1, 2)
        boxes.append(torch.cat([pts.min(0).values, pts.max(0).values]))
    inst.gt_boxes = Boxes(torch.stack(boxes) if boxes else torch.zeros(0, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    inst.gt_masks = PolygonMasks(
        [[list(map(float, p)) for p in parts] for parts in polys_per_instance]
    )
    return inst


def draw_image(h, w, polys_per_instance, seed=0):
    """A (3, h, w) float BGR image with the polygons filled in distinct colours on noise."""
    import cv2
    import numpy as np

    rng = np.random.RandomState(seed)
    img = (rng.rand(h, w, 3) * 60).astype(np.uint8)
    for i, parts in enumerate(polys_per_instance):
        colour = [int(c) for c in (80 + 170 * ((i * 37) % 7) / 7, 200 - 20 * i % 150, 255)]
        for p in parts:
            pts = np.round(np.asarray(p).reshape(-1, 2)).astype(np.int32)
            cv2.fillPoly(img, [pts], colour)
    return torch.from_numpy(img).permute(2, 0, 1).float()


def two_image_batch():
    """Two 128 x 128 training inputs: two circles of categories 0 and 1, one of category 2."""
    polys_a = [[circle(40, 40, 20)], [circle(90, 70, 14)]]
    polys_b = [[circle(60, 60, 30)]]
    return [
        {"image": draw_image(128, 128, polys_a, seed=1),
         "instances": make_instances(128, 128, polys_a, [0, 1])},
        {"image": draw_image(128, 128, polys_b, seed=2),
         "instances": make_instances(128, 128, polys_b, [2])},
    ]  # fmt: skip


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POLAR_REFINE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
