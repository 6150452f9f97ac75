#!/usr/bin/env python
# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""The main job's steps after training (``scripts/main_job.sh``).

    python scripts/main_report.py threshold OUT   # the drawing threshold, chosen on shapes_tune
    python scripts/main_report.py summary OUT --seconds S --threshold T

``threshold`` runs the trained model (``OUT/model_final.pth``) on ``shapes_tune`` (never on val)
and prints the score threshold whose detections best find the objects (F1 of matches at mask
IoU >= 0.5, whatever the category: the picture is to show the objects; the AP table scores
the categories), so that a typical picture shows its objects.
``summary`` draws the training curves (``OUT/training_curves.png``: every loss, and the final
segm/bbox AP) and prints the AP table on ``shapes_val``, the time taken and where the pictures are.
"""

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs/Shapes/polar_refine_tiny.yaml")
THRESHOLDS = [round(0.05 * i, 2) for i in range(1, 13)]  # 0.05 ... 0.6


def _metrics(out):
    return [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]


def match_counts(pred_rles, pred_classes, scores, gt_rles, gt_classes, thresholds):
    """Per threshold: (true positives, detections, ground-truth objects) of one image.

    Detections at or above a threshold are matched greedily by decreasing score to unmatched
    ground truth at mask IoU >= 0.5 (of the same category only with ``gt_classes`` given).
    """
    from pycocotools import mask as mask_util

    iou = (
        mask_util.iou(pred_rles, gt_rles, [0] * len(gt_rles))
        if len(pred_rles) and len(gt_rles)
        else np.zeros((len(pred_rles), len(gt_rles)))
    )
    iou = np.asarray(iou).reshape(len(pred_rles), len(gt_rles))
    if gt_classes is not None:
        same = np.asarray(pred_classes)[:, None] == np.asarray(gt_classes)[None, :]
        iou = np.where(same, iou, 0.0)
    order = np.argsort(-np.asarray(scores), kind="stable")
    counts = []
    for t in thresholds:
        used, tp, n = set(), 0, 0
        for i in order:
            if scores[i] < t:
                break
            n += 1
            free = [j for j in range(len(gt_rles)) if j not in used and iou[i, j] >= 0.5]
            if free:
                used.add(max(free, key=lambda j: iou[i, j]))
                tp += 1
        counts.append((tp, n, len(gt_rles)))
    return counts


def pick_threshold(out):
    """The threshold of best F1 on shapes_tune (ties: the lower threshold)."""
    import cv2
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog
    from detectron2.engine import DefaultPredictor
    from pycocotools import mask as mask_util

    import polar_refine
    from polar_refine.evaluation import polygons_to_rles

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    cfg = get_cfg()
    polar_refine.add_polar_refine_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.MODEL.WEIGHTS = os.path.join(out, "model_final.pth")
    cfg.MODEL.POLAR_REFINE.SCORE_THRESH_TEST = min(THRESHOLDS)
    cfg.MODEL.MASK_ON = False  # polygons are encoded straight to RLE
    predictor = DefaultPredictor(cfg)
    DetectionCheckpointer(predictor.model).load(cfg.MODEL.WEIGHTS)
    totals = np.zeros((len(THRESHOLDS), 3))
    for d in DatasetCatalog.get("shapes_tune"):
        h, w = d["height"], d["width"]
        inst = predictor(cv2.imread(d["file_name"]))["instances"].to("cpu")
        pred = polygons_to_rles(inst.pred_polygons.numpy(), h, w)
        gt = [
            mask_util.merge(mask_util.frPyObjects(a["segmentation"], h, w))
            for a in d["annotations"]
        ]
        totals += match_counts(
            pred, inst.pred_classes.tolist(), inst.scores.tolist(), gt, None, THRESHOLDS
        )
    tp, n, g = totals.T
    f1 = 2 * tp / np.maximum(n + g, 1)
    best = int(np.argmax(f1))
    json.dump(
        {"threshold": THRESHOLDS[best], "f1": dict(zip(map(str, THRESHOLDS), f1.round(3)))},
        open(os.path.join(out, "threshold.json"), "w"),
        indent=1,
    )
    return THRESHOLDS[best]


def plot_curves(out):
    """Every logged loss against the iteration, and the final AP, into training_curves.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _metrics(out)
    train = [r for r in rows if "total_loss" in r]
    keys = sorted({k for r in train for k in r if k.startswith("loss_")})
    fig, (ax, ax_ap) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    for k in ["total_loss"] + keys:
        ax.plot([r["iteration"] for r in train], [r[k] for r in train], label=k, lw=1.2)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("training losses (shapes_train)")
    evals = [r for r in rows if "segm/AP" in r]
    if evals:
        last = evals[-1]
        names = ["segm/AP", "segm/AP50", "segm/AP75", "bbox/AP"]
        bars = ax_ap.bar(range(len(names)), [last.get(k, 0.0) for k in names], color="tab:blue")
        ax_ap.bar_label(bars, fmt="%.1f", fontsize=8)
        ax_ap.set_xticks(range(len(names)), [k.replace("/", "\n") for k in names], fontsize=8)
        ax_ap.set_title(f"shapes_val at iteration {last['iteration'] + 1}", fontsize=9)
    ax_ap.set_ylabel("AP")
    fig.tight_layout()
    path = os.path.join(out, "training_curves.png")
    fig.savefig(path, dpi=100)
    return path


def summary(out, seconds, threshold):
    res = [r for r in _metrics(out) if "segm/AP" in r][-1]
    curves = plot_curves(out)
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    print("[main] shapes_val (50 images, PolarCOCOEvaluator):")
    print("  task   " + "  ".join(f"{k:>5s}" for k in keys))
    for task in ("segm", "bbox"):
        vals = [res.get(f"{task}/{k}", float("nan")) for k in keys]
        print(f"  {task:5s}  " + "  ".join(f"{v:5.1f}" for v in vals))
    print(f"[main] took {int(seconds) // 60} min {int(seconds) % 60} s end to end")
    print(
        f"[main] pictures: {os.path.join(out, 'vis')} (8 shapes_val images, refined contours "
        f"filled, coarse ones dashed yellow, drawn at score >= {threshold} chosen on shapes_tune)"
    )
    print(f"[main] training curves: {curves}")
    print(f"[main] checkpoint, metrics.json and TensorBoard events: {out}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("step", choices=["threshold", "summary"])
    ap.add_argument("out", help="the training's OUTPUT_DIR")
    ap.add_argument("--seconds", type=float, default=0.0, help="wall time of the job so far")
    ap.add_argument("--threshold", type=float, default=None)
    args = ap.parse_args(argv)
    if args.step == "threshold":
        print(pick_threshold(args.out))
    else:
        summary(args.out, args.seconds, args.threshold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
