#!/usr/bin/env python
"""Pictures of the contour deformation stages: objects of one category, each drawn twice by
one model with ``MODEL.POLAR_REFINE.DEFORM``: its polar contour (left) and the deformed
contour that starts from it (right).

    DETECTRON2_DATASETS=../shared/data .venv/bin/python benchmarks/deform_pictures.py \
        --config-file configs/Shapes/polar_refine_tiny.yaml \
        --weights output/ablation/shapes/default_deformation_stages_seed0/model_final.pth \
        --dataset shapes_val --category c_shape --count 6 --threshold 0.2 \
        --out docs/deform_c_shape.jpg \
        MODEL.POLAR_REFINE.DEFORM.ENABLED True

The crops are the first ``--count`` ground-truth objects of ``--category`` (non-crowd, at least
``--min-size`` px), each with its best detection above ``--threshold`` (the highest mask IoU
of the deformed contour with the object): the ground truth in white, the detection in green,
polar on the left, deformed on the right, and both IoUs printed.
"""

import argparse
import os
import sys

import cv2
import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from pycocotools import mask as mask_util
from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import polar_refine  # noqa: E402,F401  (registers the model and the datasets)
from polar_refine import add_polar_refine_config  # noqa: E402
from polar_refine.evaluation import polygon_parts_to_rle, polygons_to_rles  # noqa: E402

CELL = 224  # side of each drawn crop (px)


def _draw(crop_bgr, polygons, gt_polygons, offset, scale):
    """Closed outlines over an upscaled crop: ground truth white, prediction green."""
    out = crop_bgr.copy()
    for polys, colour, width in ((gt_polygons, (255, 255, 255), 1), (polygons, (0, 220, 0), 2)):
        for p in polys:
            pts = ((np.asarray(p, np.float64).reshape(-1, 2) - offset) * scale * 16).round()
            cv2.polylines(out, [pts.astype(np.int32)], True, colour, width, cv2.LINE_AA, shift=4)
    return out


def _iou(polygons, gt_polygons, h, w):
    """Mask IoU of each of the (N, K, 2) polygons with the ground-truth object: (N,)."""
    dt = polygons_to_rles(polygons, h, w)
    if not dt:
        return np.zeros(0)
    return mask_util.iou(dt, [polygon_parts_to_rle(gt_polygons, h, w)], [0])[:, 0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--category", required=True, help="a class name of the dataset")
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--min-size", type=float, default=24.0, help="smallest box side (px)")
    parser.add_argument("--threshold", type=float, default=0.3)
    parser.add_argument("--out", required=True, help="the picture (.jpg / .png)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args()

    cfg = get_cfg()
    add_polar_refine_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.WEIGHTS = args.weights
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.POLAR_REFINE.SCORE_THRESH_TEST = args.threshold
    if not cfg.MODEL.POLAR_REFINE.DEFORM.ENABLED:
        sys.exit("error: the config has MODEL.POLAR_REFINE.DEFORM.ENABLED False")
    predictor = DefaultPredictor(cfg)
    classes = MetadataCatalog.get(args.dataset).thing_classes
    if args.category not in classes:
        sys.exit(f"error: {args.dataset} has no category {args.category!r}")
    cat = classes.index(args.category)

    rows = []
    with tqdm(total=args.count, desc="objects") as bar:
        for d in DatasetCatalog.get(args.dataset):
            objs = [
                a
                for a in d["annotations"]
                if a["category_id"] == cat
                and not a.get("iscrowd", 0)
                and min(a["bbox"][2:]) >= args.min_size
            ]
            if not objs:
                continue
            image = read_image(d["file_name"], format="BGR")
            with torch.no_grad():
                inst = predictor(image)["instances"].to("cpu")
            for a in objs[: args.count - len(rows)]:
                x, y, w, h = a["bbox"]  # XYWH_ABS in the datasets this is used with
                side = max(w, h) * 1.4
                x0, y0 = x + w / 2 - side / 2, y + h / 2 - side / 2
                scale = CELL / side
                m = np.float32([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]])
                crop = cv2.warpAffine(image, m, (CELL, CELL), flags=cv2.INTER_LINEAR)
                h, w = image.shape[:2]
                ious = _iou(inst.pred_polygons.numpy(), a["segmentation"], h, w)
                if not len(ious) or ious.max() < 0.1:
                    continue  # no detection of this object
                best = int(ious.argmax())
                polar_iou = _iou(
                    inst.pred_polar_polygons[best : best + 1].numpy(), a["segmentation"], h, w
                )
                name = os.path.basename(d["file_name"])
                tqdm.write(f"{name}: IoU polar {polar_iou[0]:.3f}, deformed {ious[best]:.3f}")
                pair = [
                    _draw(
                        crop,
                        inst.get(field)[best : best + 1].numpy(),
                        a["segmentation"],
                        (x0, y0),
                        scale,
                    )
                    for field in ("pred_polar_polygons", "pred_polygons")
                ]
                rows.append(
                    np.concatenate([pair[0], np.full((CELL, 4, 3), 255, np.uint8), pair[1]], 1)
                )
                bar.update()
            if len(rows) >= args.count:
                break
    if not rows:
        sys.exit(f"error: no {args.category!r} object of at least {args.min_size} px")
    gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    picture = np.concatenate([r for row in rows for r in (row, gap)][:-1], 0)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    cv2.imwrite(args.out, picture, [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"{len(rows)} objects -> {args.out} (polar left, deformed right)")


if __name__ == "__main__":
    main()
