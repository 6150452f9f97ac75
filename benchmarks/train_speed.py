#!/usr/bin/env python
"""Training-step cost of the polar targets, before and after moving them off the training loop.

    DETECTRON2_DATASETS=../shared/data .venv/bin/python benchmarks/train_speed.py

One process, one run: the R-50-FPN full model (random init, 80 classes) takes SGD steps on the
same 2 ``coco128_seg`` images (the two with the most instances, every instance kept, crowd
included) resized to 512 x 683. Rows:

* ``before (per-instance assigner, host targets)``: detectron2's ``DatasetMapper``; in the step
  the model computes polygon geometry and contour maps on the host and assigns labels with the
  former per-instance loop (``tests/reference_targets.py``, the code of commit ae91aa8);
* ``host targets (DatasetMapper)``: detectron2's ``DatasetMapper``, the tensor-only assigner,
  the geometry and contour maps computed in the step (the fallback for plain mappers);
* ``after (PolarDatasetMapper)``: geometry and contour maps come from the loader workers; the
  step assigns with tensor work only.

For each: the step (forward, targets, losses, backward, SGD step; median of ``--repeats``
interleaved), and the time inside it spent in target assignment (``model.assigner``) and in the
contour targets (``model._contour_targets``), with their share of the step. Then the
throughput of a detectron2 train loader with ``PolarDatasetMapper`` and 1 worker (images/s,
the same resize, batch 2), against the images/s the step consumes.
"""

import argparse
import copy
import json
import os
import statistics
import sys
import time

import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper, build_detection_train_loader
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

import polar_refine
from polar_refine.data import PolarDatasetMapper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/COCO-InstanceSegmentation/polar_refine_contour_R_50_FPN_1x.yaml"


def build_cfg():
    cfg = get_cfg()
    polar_refine.add_polar_refine_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, CONFIG))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.INPUT.MIN_SIZE_TRAIN = (512,)
    cfg.INPUT.MAX_SIZE_TRAIN = 683
    cfg.DATASETS.TRAIN = ("coco128_seg",)
    return cfg


def pick_images(n=2):
    dicts = DatasetCatalog.get("coco128_seg")
    return sorted(dicts, key=lambda d: -len(d["annotations"]))[:n]


def map_batch(cfg, mapper_cls, dicts):
    mapper = mapper_cls(cfg, True)
    mapper.augmentations = T.AugmentationList([T.ResizeShortestEdge(512, 683)])
    return [mapper(copy.deepcopy(d)) for d in dicts]


class Timed:
    """Wrap a callable, accumulating its wall time (the CPU runs it synchronously)."""

    def __init__(self, fn):
        self.fn, self.total = fn, 0.0

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.total += time.perf_counter() - t


def make_row(cfg, reference: bool):
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    if reference:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from reference_targets import ReferenceAssigner

        model.assigner = ReferenceAssigner(cfg)
    model.assigner = Timed(model.assigner)
    model._contour_targets = Timed(model._contour_targets)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    return model, opt


def step(model, opt, batch, storage):
    model.assigner.total = model._contour_targets.total = 0.0
    t = time.perf_counter()
    losses = model(copy.deepcopy(batch))
    opt.zero_grad()
    sum(losses.values()).backward()
    opt.step()
    dt = time.perf_counter() - t
    storage.step()
    return dt, model.assigner.total, model._contour_targets.total


def loader_throughput(cfg, images: int):
    cfg = cfg.clone()
    cfg.DATALOADER.NUM_WORKERS = 1
    cfg.SOLVER.IMS_PER_BATCH = 2
    mapper = PolarDatasetMapper(cfg, True)
    mapper.augmentations = T.AugmentationList(
        [T.ResizeShortestEdge(512, 683), T.RandomFlip(horizontal=True)]
    )
    loader = iter(build_detection_train_loader(cfg, mapper=mapper))
    next(loader)  # worker start-up
    t = time.perf_counter()
    n = 0
    while n < images:
        n += len(next(loader))
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per row (interleaved)")
    ap.add_argument("--loader-images", type=int, default=60)
    ap.add_argument("--output", default=os.path.join(ROOT, "output/train_speed.json"))
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    cfg = build_cfg()
    dicts = pick_images()
    n_inst = [len(d["annotations"]) for d in dicts]
    print(f"images: {[os.path.basename(d['file_name']) for d in dicts]}, instances {n_inst}")
    plain = map_batch(cfg, DatasetMapper, dicts)
    polar = map_batch(cfg, PolarDatasetMapper, dicts)
    print("input sizes:", [tuple(b["image"].shape[-2:]) for b in polar])
    rows = {
        "before (per-instance assigner, host targets)": (make_row(cfg, True), plain),
        "host targets (DatasetMapper)": (make_row(cfg, False), plain),
        "after (PolarDatasetMapper)": (make_row(cfg, False), polar),
    }
    times = {name: [] for name in rows}
    with EventStorage(1) as storage:
        for name, ((model, opt), batch) in rows.items():  # warm-up
            step(model, opt, batch, storage)
        for _ in range(args.repeats):
            for name, ((model, opt), batch) in rows.items():
                times[name].append(step(model, opt, batch, storage))
    out = {"device": f"cpu ({os.cpu_count()} cores)", "threads": torch.get_num_threads(),
           "instances": n_inst, "rows": {}}  # fmt: skip
    print("\n| row | step ms | assignment ms | contour targets ms | share of the step |")
    print("|---|---|---|---|---|")
    for name, ts in times.items():
        s = statistics.median(t[0] for t in ts) * 1e3
        a = statistics.median(t[1] for t in ts) * 1e3
        c = statistics.median(t[2] for t in ts) * 1e3
        out["rows"][name] = {"step_ms": s, "assign_ms": a, "contour_ms": c, "share": (a + c) / s}
        print(f"| {name} | {s:.1f} | {a:.1f} | {c:.1f} | {100 * (a + c) / s:.2f} % |")
    ips = loader_throughput(cfg, args.loader_images)
    need = 2 / (out["rows"]["after (PolarDatasetMapper)"]["step_ms"] / 1e3)
    out["loader_images_per_s"], out["step_images_per_s"] = ips, need
    print(f"\nloader (PolarDatasetMapper, 1 worker): {ips:.1f} images/s; "
          f"the step consumes {need:.2f} images/s ({ips / need:.1f}x headroom)")  # fmt: skip
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
