#!/usr/bin/env python
"""What holds a category's mask AP down: its masks, its ranking, or its proposals.

    DETECTRON2_DATASETS=../shared/data .venv/bin/python benchmarks/proposals.py \
        output/ablation/shapes/polarrefine_default_seed0 \
        output/ablation/shapes/default_deformation_stages_trained_on_it_seed0 --dataset shapes_val

Reads each run's saved detections (``inference/<dataset>/coco_instances_results.json``, as the
evaluator wrote them) and reports per category, against the dataset's ground truth:

* ``AP``: the segm AP of the detections as they are ranked;
* ``AP, perfect ranking``: the segm AP with every detection rescored by its mask IoU with the
  best ground truth of its own category in its image (0 for a wrong category or a miss). No
  scoring can exceed it: what is left below 100 is the masks' shape;
* ``best IoU``: the mean, over the ground truths, of the best mask IoU among the detections of
  their category (score >= ``--score``);
* ``covered``: the share of ground truths that some detection of their category covers
  (at least ``--cover`` of the ground truth's area inside it): a contour that holds the whole
  object, which a deformation stage can carve down, rather than a fragment of it, which no
  local stage grows;
* ``none``: the share of ground truths with no detection of their category overlapping them
  (mask IoU above 0.1);
* ``AP, fragments merged``: the segm AP once the detections of each ground truth's category
  that lie mostly inside it (at least half of their area; score >= ``--score``) are replaced by
  their union, scored by the best of them. The grouping reads the ground truth: it shows what
  merging a model's proposals into objects could give, not what a rule would.
"""

import argparse
import contextlib
import io
import json
import os
import sys

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def load_ground_truth(dataset: str) -> COCO:
    """The dataset's COCO ground truth (registering the project's datasets first)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    import polar_refine  # noqa: F401  (registers the datasets)

    DatasetCatalog.get(dataset)  # builds a generated dataset's files when missing
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(MetadataCatalog.get(dataset).json_file)


def segm_ap(gt: COCO, dets) -> dict:
    """Per category name: segm AP (0..100) of ``dets`` (COCO results)."""
    if not dets:
        return {c["name"]: 0.0 for c in gt.cats.values()}
    with contextlib.redirect_stdout(io.StringIO()):
        e = COCOeval(gt, gt.loadRes([dict(d) for d in dets]), "segm")  # loadRes writes to them
        e.evaluate()
        e.accumulate()
    precision = e.eval["precision"][:, :, :, 0, -1]  # (T, R, K) all areas, max dets 100
    out = {}
    for k, cat in enumerate(e.params.catIds):
        p = precision[:, :, k]
        out[gt.cats[int(cat)]["name"]] = 100.0 * float(p[p > -1].mean()) if (p > -1).any() else 0.0
    return out


def ground_truth_rles(gt: COCO) -> dict:
    """Annotation id -> RLE of every non-crowd ground truth."""
    return {a["id"]: gt.annToRLE(a) for a in gt.loadAnns(gt.getAnnIds(iscrowd=False))}


def merge_fragments(gt: COCO, dets, score: float, rles=None) -> list:
    """``dets`` with each ground truth's fragments (detections of its category, score >=
    ``score``, at least half inside it; each joins the ground truth it overlaps most) replaced
    by their union, scored by the best of them. ``rles``: `ground_truth_rles`, if at hand."""
    rles = ground_truth_rles(gt) if rles is None else rles
    groups = {}
    for i, d in enumerate(dets):
        if d["score"] < score:
            continue
        anns = gt.loadAnns(
            gt.getAnnIds(imgIds=[d["image_id"]], catIds=[d["category_id"]], iscrowd=False)
        )
        if not anns:
            continue
        inside = [
            mask_util.area(mask_util.merge([d["segmentation"], rles[a["id"]]], intersect=True))
            for a in anns
        ]
        k = int(np.argmax(inside))
        if inside[k] >= 0.5 * mask_util.area(d["segmentation"]):
            groups.setdefault(anns[k]["id"], []).append(i)
    grouped = {i for members in groups.values() for i in members}
    merged = [d for i, d in enumerate(dets) if i not in grouped]
    for members in groups.values():
        first = dets[members[0]]
        rle = mask_util.merge([dets[i]["segmentation"] for i in members])
        rle["counts"] = (
            rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]
        )
        union = dict(first, segmentation=rle, score=max(dets[i]["score"] for i in members))
        if "bbox" in first:
            union["bbox"] = mask_util.toBbox(rle).tolist()
        merged.append(union)
    return merged


def analyse(gt: COCO, dets, score: float, cover: float) -> dict:
    """Per category name: the figures of the module docstring."""
    by_image = {}
    for d in dets:
        by_image.setdefault((d["image_id"], d["category_id"]), []).append(d)
    gt_rles = ground_truth_rles(gt)
    stats = {c["name"]: {"best": [], "covered": [], "none": []} for c in gt.cats.values()}
    for ann in gt.loadAnns(gt.getAnnIds(iscrowd=False)):
        rle = gt_rles[ann["id"]]
        own = by_image.get((ann["image_id"], ann["category_id"]), [])
        own = [d for d in own if d["score"] >= score]
        s = stats[gt.cats[ann["category_id"]]["name"]]
        if not own:
            s["best"].append(0.0)
            s["covered"].append(False)
            s["none"].append(True)
            continue
        segs = [d["segmentation"] for d in own]
        iou = mask_util.iou(segs, [rle], [0]).ravel()
        inside = np.array(
            [mask_util.area(mask_util.merge([m, rle], intersect=True)) for m in segs], float
        )
        s["best"].append(float(iou.max()))
        s["covered"].append(bool((inside >= cover * mask_util.area(rle)).any()))
        s["none"].append(bool(iou.max() <= 0.1))
    # perfect ranking: each detection scored by its IoU with its category's best ground truth
    rescored = []
    for d in dets:
        anns = gt.loadAnns(
            gt.getAnnIds(imgIds=[d["image_id"]], catIds=[d["category_id"]], iscrowd=False)
        )
        iou = mask_util.iou([d["segmentation"]], [gt_rles[a["id"]] for a in anns], [0] * len(anns))
        rescored.append(dict(d, score=float(np.max(iou)) if len(anns) else 0.0))
    ap, ideal = segm_ap(gt, dets), segm_ap(gt, rescored)
    merged = segm_ap(gt, merge_fragments(gt, dets, score, gt_rles))
    return {
        name: {
            "AP": ap[name],
            "ideal": ideal[name],
            "merged": merged[name],
            "best": float(np.mean(s["best"])) if s["best"] else 0.0,
            "covered": float(np.mean(s["covered"])) if s["covered"] else 0.0,
            "none": float(np.mean(s["none"])) if s["none"] else 0.0,
            "count": len(s["best"]),
        }
        for name, s in stats.items()
    }


def focus_rows(result: dict, focus: str) -> dict:
    """``result`` reduced to two rows: category ``focus`` and the mean of the others."""
    others = [r for name, r in result.items() if name != focus]
    keys = ("AP", "ideal", "merged", "best", "covered", "none")
    mean = {k: float(np.mean([r[k] for r in others])) for k in keys}
    mean["count"] = sum(r["count"] for r in others)
    return {focus: result[focus], "the other categories (mean)": mean}


def table(rows) -> str:
    """Markdown: one row per (run, category)."""
    lines = [
        "| run | category | AP | AP, perfect ranking | AP, fragments merged | best IoU | covered "
        "| none |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run, result in rows:
        for name, r in result.items():
            lines.append(
                f"| {run} | {name} ({r['count']}) | {r['AP']:.1f} | {r['ideal']:.1f} | "
                f"{r['merged']:.1f} | "
                f"{r['best']:.2f} | {r['covered']:.0%} | {r['none']:.0%} |"
            )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="output folders of evaluated runs")
    parser.add_argument("--dataset", default="shapes_val")
    parser.add_argument("--score", type=float, default=0.05, help="least score of a detection")
    parser.add_argument("--cover", type=float, default=0.8, help="share of a covered object")
    parser.add_argument("--focus", help="report this category and the mean of the others")
    parser.add_argument("--doc", action="store_true", help="write the table into the docs")
    parser.add_argument("--table", help="the docs table's name (default: proposals-DATASET)")
    args = parser.parse_args()
    gt = load_ground_truth(args.dataset)
    rows = []
    for run in args.runs:
        path = os.path.join(run, "inference", args.dataset, "coco_instances_results.json")
        if not os.path.isfile(path):
            sys.exit(f"proposals.py: no saved detections at {path} (evaluate the run first)")
        with open(path) as f:
            result = analyse(gt, json.load(f), args.score, args.cover)
        if args.focus:
            result = focus_rows(result, args.focus)
        rows.append((os.path.basename(os.path.normpath(run)), result))
    body = table(rows)
    print(body)
    if args.doc:
        from doc_table import write_table

        write_table(args.table or f"proposals-{args.dataset}", body)


if __name__ == "__main__":
    main()
