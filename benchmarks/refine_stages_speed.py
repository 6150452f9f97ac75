#!/usr/bin/env python
"""Share of inference spent in the refine stages, for REFINE.NUM_STAGES = 1, 2, 3.

    .venv/bin/python benchmarks/refine_stages_speed.py [--height 512 --width 683 --repeats 7]

R-50-FPN full model (random weights, score threshold 0, so every level carries its full
1,000 candidates and 100 detections are kept: the worst case). For each stage count it times
the whole inference (``model(inputs)``: preprocessing to masks at output size) and, on the same
candidates, the refine stages alone (``model.refiner``); repeats are interleaved across the
models and medians reported.
"""

import argparse
import os
import statistics
import sys
import time

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import polar_refine  # noqa: E402
from polar_refine.modeling import select_candidates  # noqa: E402


def build(stages):
    cfg = get_cfg()
    polar_refine.add_polar_refine_config(cfg)
    cfg.merge_from_file(
        os.path.join(ROOT, "configs/COCO-InstanceSegmentation/polar_refine_plus_R_50_FPN_1x.yaml")
    )
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.POLAR_REFINE.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.POLAR_REFINE.REFINE.NUM_STAGES = stages
    torch.manual_seed(0)
    return build_model(cfg).eval()


@torch.no_grad()
def time_once(model, inputs):
    t0 = time.perf_counter()
    model(inputs)
    t1 = time.perf_counter()
    images = model.preprocess_image(inputs)
    feats_all = model.backbone(images.tensor)
    feats = [feats_all[f] for f in model.head_in_features]
    cls, ctr, coarse = model.head(feats)
    locs = model.locations(feats)
    cand = select_candidates(
        cls, ctr, coarse, locs, model.test_score_thresh, model.test_topk_candidates
    )
    t2 = time.perf_counter()
    model.refiner(feats, locs, cand.location, cand.image, cand.coarse)
    t3 = time.perf_counter()
    return t1 - t0, t3 - t2, cand.coarse.shape[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--width", type=int, default=683)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--doc", action="store_true", help="also write the table into the docs")
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, args.height, args.width), generator=g).float()
    inputs = [{"image": img, "height": args.height, "width": args.width}]
    models = {n: build(n) for n in (1, 2, 3)}
    params = {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}
    times = {n: ([], []) for n in models}
    for n, m in models.items():  # warm-up
        time_once(m, inputs)
    for _ in range(args.repeats):
        for n, m in models.items():
            total, refine, num = time_once(m, inputs)
            times[n][0].append(total)
            times[n][1].append(refine)
    lines = [
        f"R-50-FPN, {args.height}x{args.width}, {num} candidates, medians of {args.repeats}:",
        "",
        "| refine stages | inference ms | refine stages ms | share | parameters per stage |",
        "|---|---|---|---|---|",
    ]
    for n in models:
        total = statistics.median(times[n][0]) * 1e3
        refine = statistics.median(times[n][1]) * 1e3
        stage = sum(p.numel() for p in models[n].refiner.stages[0].parameters())
        lines.append(f"| {n} | {total:.1f} | {refine:.1f} | {100 * refine / total:.2f} % | "
                     f"{stage} ({100 * stage / params[n]:.3f} %) |")  # fmt: skip
    print("\n".join(lines))
    if args.doc:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from doc_table import write_table

        write_table("refine-stages", "\n".join(lines))


if __name__ == "__main__":
    main()
