# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""COCO evaluation of polygon (polar-contour) predictions, without full-image masks.

Pixel convention: polygon vertices are continuous image coordinates ``(x, y)`` in pixels of the
output (original) image, where pixel ``(i, j)`` (row ``i``, column ``j``) covers the square
``[j, j + 1) x [i, i + 1)``; its centre is ``(j + 0.5, i + 0.5)``. This is also how COCO polygon
annotations and ``pycocotools.mask.frPyObjects`` treat coordinates: a pixel belongs to a polygon
when (up to pycocotools' 1/5-pixel boundary sampling) its centre lies inside it, under the even-odd
rule. detectron2 rasterises polygons with the same pycocotools routine, so encoding a polygon
straight to RLE here gives exactly the RLE of the mask detectron2 would rasterise from it.
"""

import copy
import itertools
import json
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table
from pycocotools.cocoeval import Params

from ..polar import mass_center, polygons_radii, radii_to_points
from .registry import EVALUATOR_REGISTRY

__all__ = [
    "PolarCOCOEvaluator",
    "polygons_to_rles",
    "polygon_parts_to_rle",
    "polar_ceiling_iou",
    "instances_to_coco_json_polygons",
]

# Metric name -> COCOeval area-range label, in the order COCOeval.summarize() reports them.
_METRIC_AREAS = {
    "bbox": [("AP", "all"), ("AP50", "all"), ("AP75", "all")]
    + [("APs", "small"), ("APm", "medium"), ("APl", "large")],
    "segm": [("AP", "all"), ("AP50", "all"), ("AP75", "all")]
    + [("APs", "small"), ("APm", "medium"), ("APl", "large")],
    "keypoints": [("AP", "all"), ("AP50", "all"), ("AP75", "all")]
    + [("APm", "medium"), ("APl", "large")],
}


def _sanitize_polygon(polygon, height: int, width: int) -> np.ndarray:
    """
    Make one polygon safe for ``pycocotools.mask.frPyObjects``.

    Args:
        polygon: (M, 2) (x, y) vertices, or a flat [x0, y0, x1, y1, ...] sequence.

    Returns:
        (M', 2) float64, M' >= 3: non-finite vertices dropped; a polygon reaching far outside
        the image (more than one image size beyond any side) clipped to that window, which
        bounds pycocotools' work (it walks every edge at 1/5 pixel, so huge coordinates would
        exhaust memory or overflow its ints); the region inside the image is kept, though pixels
        along the clipped edges may differ from the unclipped encoding by pycocotools' 1/5-pixel
        boundary sampling; fewer than 3 vertices padded by repeating the last one (or the
        origin when none is left), which encodes to an empty mask. Polygons within the window
        are returned unchanged (bar dropped non-finite vertices).
    """
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    poly = poly[np.isfinite(poly).all(axis=1)]
    lo = np.array([-float(width), -float(height)])
    hi = np.array([2.0 * width, 2.0 * height])
    if poly.shape[0] > 0 and ((poly < lo).any() or (poly > hi).any()):
        for axis in (0, 1):
            poly = _clip_half_plane(poly, axis, lo[axis], keep_above=True)
            poly = _clip_half_plane(poly, axis, hi[axis], keep_above=False)
    if poly.shape[0] < 3:
        pad = poly[-1:] if poly.shape[0] > 0 else np.zeros((1, 2))
        poly = np.concatenate([poly, np.repeat(pad, 3 - poly.shape[0], axis=0)], axis=0)
    return poly


def _clip_half_plane(poly: np.ndarray, axis: int, bound: float, keep_above: bool) -> np.ndarray:
    """One Sutherland-Hodgman step: keep the part of (M, 2) ``poly`` on one side of a line.

    The kept region is ``poly[:, axis] >= bound`` if ``keep_above`` else ``<= bound``. Returns
    (M', 2); the even-odd inside/outside status of every point strictly on the kept side is
    unchanged.
    """
    if poly.shape[0] == 0:
        return poly
    v = poly[:, axis] - bound
    if keep_above:
        v = -v
    inside = v <= 0
    nxt = np.roll(poly, -1, axis=0)
    v_next = np.roll(v, -1)
    inside_next = np.roll(inside, -1)
    crosses = inside != inside_next
    t = v / np.where(crosses, v - v_next, 1.0)
    inter = poly + t[:, None] * (nxt - poly)
    inter[:, axis] = bound
    # Edge m (vertex m -> m + 1) emits its crossing point (if any), then vertex m + 1 if kept.
    candidates = np.stack([inter, nxt], axis=1)  # (M, 2, 2)
    keep = np.stack([crosses, inside_next], axis=1)  # (M, 2)
    return candidates[keep]


def polygons_to_rles(polygons, height: int, width: int) -> List[dict]:
    """
    Encode single-part polygons as COCO RLEs, without rasterising full-image masks.

    Each polygon is encoded with ``pycocotools.mask.frPyObjects``; for a polygon with finite
    vertices in ``[-width, 2 width] x [-height, 2 height]`` the RLE is exactly
    ``merge(frPyObjects([poly.flatten().tolist()], height, width))``. Degenerate polygons (fewer
    than 3 distinct points, zero area, NaN/inf vertices) give a valid, possibly empty, RLE;
    polygons reaching farther out are clipped first (see `_sanitize_polygon`).

    Args:
        polygons: (N, K, 2) tensor or array of (x, y) vertices in image pixels (see the module
            docstring for the pixel convention).
        height, width (int): image size.

    Returns:
        list[dict]: N RLEs ``{"size": [height, width], "counts": bytes}``.
    """
    if isinstance(polygons, torch.Tensor):
        polygons = polygons.detach().to("cpu", torch.float64).numpy()
    polygons = np.asarray(polygons, dtype=np.float64)
    if polygons.shape[0] == 0:
        return []
    flat = [_sanitize_polygon(p, height, width).reshape(-1).tolist() for p in polygons]
    # With a list of polygons, frPyObjects returns one RLE per polygon.
    return mask_util.frPyObjects(flat, height, width)


def polygon_parts_to_rle(parts: Sequence, height: int, width: int) -> dict:
    """
    Encode one multi-part object (e.g. a COCO polygon annotation) as one RLE.

    Args:
        parts: polygons, each (M, 2) or a flat [x0, y0, ...] list; degenerate ones are allowed.
        height, width (int): image size.

    Returns:
        dict: the union of the parts as an RLE (empty when there are no parts).
    """
    flat = [_sanitize_polygon(p, height, width).reshape(-1).tolist() for p in parts]
    if not flat:
        flat = [_sanitize_polygon([], height, width).reshape(-1).tolist()]
    return mask_util.merge(mask_util.frPyObjects(flat, height, width))


def polar_ceiling_iou(parts: Sequence, height: int, width: int, num_rays: int = 36) -> float:
    """
    IoU of an object with its own best K-ray polar contour (the polar representation's ceiling).

    The contour is the one the model is trained to predict: rays from the object's mass centre
    (`polar_refine.polar.mass_center`) to the farthest boundary crossing over all parts
    (`polar_refine.polar.polygons_radii`), joined into a polygon.

    Args:
        parts: the object's polygons, each (M, 2) or a flat [x0, y0, ...] list, in image pixels.
        height, width (int): image size.
        num_rays (int): K.

    Returns:
        float: mask IoU in [0, 1]; NaN when the object has no pixel in the image or no vertex.
    """
    parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in parts if len(p) > 0]
    parts = [p for p in parts if p.shape[0] >= 3]
    if not parts:
        return float("nan")
    gt = polygon_parts_to_rle(parts, height, width)
    if mask_util.area(gt) == 0:
        return float("nan")
    center = mass_center(parts)  # (2,)
    if not torch.isfinite(center).all():
        return float("nan")
    radii = polygons_radii(parts, center[None], num_rays)  # (1, K)
    contour = radii_to_points(center[None].to(radii.dtype), radii)  # (1, K, 2)
    pred = polygons_to_rles(contour, height, width)[0]
    return float(mask_util.iou([pred], [gt], [0])[0, 0])


def deformed_ceiling_iou(parts: Sequence, height: int, width: int, num_points: int = 64) -> float:
    """
    IoU of an object with its own N-point contour, as the deformation stage draws it (one
    closed contour; the ceiling of ``MODEL.POLAR_REFINE.DEFORM``).

    The contour is the object's largest part resampled to ``num_points`` points evenly spaced
    along its length (`polar_refine.modeling.deform.resample_polygons`); other parts are lost.

    Returns:
        float: mask IoU in [0, 1]; NaN when the object has no pixel in the image or no vertex.
    """
    from ..modeling.deform import resample_polygons

    parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in parts if len(p) > 0]
    parts = [p for p in parts if p.shape[0] >= 3]
    if not parts:
        return float("nan")
    gt = polygon_parts_to_rle(parts, height, width)
    if mask_util.area(gt) == 0:
        return float("nan")
    areas = [
        abs(np.sum(p[:, 0] * np.roll(p[:, 1], -1) - np.roll(p[:, 0], -1) * p[:, 1])) for p in parts
    ]
    largest = torch.from_numpy(parts[int(np.argmax(areas))]).float()[None]
    contour = resample_polygons(largest, num_points)
    pred = polygons_to_rles(contour, height, width)[0]
    return float(mask_util.iou([pred], [gt], [0])[0, 0])


def instances_to_coco_json_polygons(instances: Instances, img_id) -> List[Dict]:
    """
    Like detectron2's ``instances_to_coco_json``, with segmentations from ``pred_polygons``.

    Args:
        instances (Instances): predictions of one image at its original size, on the CPU, with
            ``pred_polygons`` (N, K, 2) float (x, y), ``scores`` (N,), ``pred_classes`` (N,)
            contiguous ids, and optionally ``pred_boxes`` (Boxes XYXY; if absent, the polygons'
            extents clipped to the image) and ``pred_keypoints``. ``pred_masks`` is ignored.
        img_id (int): the image id.

    Returns:
        list[dict]: N COCO-format results with keys image_id, category_id (contiguous), bbox
        (XYWH), score, segmentation (RLE with ``counts`` as str) and keypoints if predicted.
    """
    num_instance = len(instances)
    if num_instance == 0:
        return []
    height, width = instances.image_size
    polygons = instances.pred_polygons
    if instances.has("pred_boxes"):
        boxes = instances.pred_boxes
    else:
        boxes = _polygon_boxes(polygons, height, width)
    fields = {
        "pred_boxes": boxes,
        "scores": instances.scores,
        "pred_classes": instances.pred_classes,
    }
    if instances.has("pred_keypoints"):
        fields["pred_keypoints"] = instances.pred_keypoints.clone()
    results = instances_to_coco_json(Instances(instances.image_size, **fields), img_id)

    rles = polygons_to_rles(polygons, height, width)
    for result, rle in zip(results, rles):
        # json cannot hold bytes; pycocotools' counts are ASCII (same as instances_to_coco_json).
        rle["counts"] = rle["counts"].decode("utf-8")
        result["segmentation"] = rle
    return results


def _polygon_boxes(polygons: torch.Tensor, height: int, width: int) -> Boxes:
    """(N, K, 2) polygons -> Boxes (N, 4) XYXY of their finite vertices, clipped to the image."""
    polygons = polygons.to(torch.float32)
    finite = torch.isfinite(polygons).all(dim=-1, keepdim=True)  # (N, K, 1)
    big = torch.finfo(polygons.dtype).max
    lo = torch.where(finite, polygons, torch.full_like(polygons, big)).amin(dim=1)
    hi = torch.where(finite, polygons, torch.full_like(polygons, -big)).amax(dim=1)
    boxes = Boxes(torch.cat([lo, hi], dim=1))
    boxes.tensor[~finite.any(dim=1).squeeze(1)] = 0
    boxes.clip((height, width))
    return boxes


@EVALUATOR_REGISTRY.register()
class PolarCOCOEvaluator(COCOEvaluator):
    """
    COCO box and mask AP for models that output polygons (``pred_polygons``), as PolarRefine.

    ``process`` encodes each predicted polygon straight to a COCO RLE with pycocotools (see the
    module docstring for the pixel convention), never rasterising a full-image mask. The results
    are the dicts detectron2's ``instances_to_coco_json`` builds from ``pred_masks``, so the AP is
    the same as :class:`COCOEvaluator` given masks rasterised from the same polygons. Outputs
    without ``pred_polygons`` are handled exactly as by :class:`COCOEvaluator` (``pred_masks`` or
    boxes only).

    Differences from :class:`COCOEvaluator`:

    * ``use_fast_impl`` defaults to False (detectron2's compiled ``_C`` may be missing);
    * when no detection at all was made, ``evaluate`` still returns AP dicts for "bbox" and
      "segm" (or the given tasks) with a warning: 0.0 where the dataset has ground truth and NaN
      where COCOeval would report -1 (e.g. APs when there is no small object), as COCO would
      score an empty result file, instead of ``{}`` or all NaN;
    * with ``polar_ceiling=True``, ``evaluate`` also reports ``results["polar_ceiling"]``:
      ``mean_iou``, the mean mask IoU of each non-crowd polygon ground-truth object with its own
      ``num_rays``-ray polar contour from its mass centre (the best any polar model can do), and
      ``num_instances``, how many objects were averaged. Flattened by detectron2 this is
      ``polar_ceiling/mean_iou``.
    """

    def __init__(
        self,
        dataset_name: str,
        tasks=None,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        max_dets_per_image: Optional[int] = None,
        use_fast_impl: bool = False,
        kpt_oks_sigmas=(),
        allow_cached_coco: bool = True,
        polar_ceiling: bool = False,
        num_rays: int = 36,
        deform_points: int = 0,
    ):
        """
        Args:
            dataset_name, tasks, distributed, output_dir, max_dets_per_image, kpt_oks_sigmas,
            allow_cached_coco: as in :class:`COCOEvaluator`. ``tasks`` defaults to those found
                in the predictions ("bbox", plus "segm" when polygons or masks are predicted).
            use_fast_impl (bool): use detectron2's compiled COCOeval; off by default.
            polar_ceiling (bool): also report the polar-representation ceiling (see the class
                docstring). It is computed once, from the annotations only.
            num_rays (int): K used for the ceiling; should match ``MODEL.POLAR_REFINE.NUM_RAYS``.
            deform_points (int): with ``polar_ceiling``, also the ceiling of the deformed
                representation, N-point contours (``DEFORM.NUM_POINTS``); 0: not reported.
        """
        super().__init__(
            dataset_name,
            tasks=tasks,
            distributed=distributed,
            output_dir=output_dir,
            max_dets_per_image=max_dets_per_image,
            use_fast_impl=use_fast_impl,
            kpt_oks_sigmas=kpt_oks_sigmas,
            allow_cached_coco=allow_cached_coco,
        )
        if max_dets_per_image is not None and max_dets_per_image > 100:
            # COCOeval then also keeps the standard 100-detection operating point: it is
            # reported as "AP@100" next to AP (which uses max_dets_per_image).
            self._max_dets_per_image = [1, 100, max_dets_per_image]
        self._polar_ceiling = polar_ceiling
        self._num_rays = num_rays
        self._deform_points = int(deform_points)
        self._segm_seen = False
        # ann id -> (image id, polygons) of the non-crowd polygon ground truth, kept now because
        # COCOeval replaces the annotations' polygons with RLEs in place when evaluating "segm".
        self._gt_polygons = {}
        self._ceiling_ious = {}  # ann id -> IoU with its polar contour, computed on first use
        if polar_ceiling and self._do_evaluation:
            for ann in self._coco_api.dataset["annotations"]:
                segm = ann.get("segmentation")
                if not ann.get("iscrowd", 0) and isinstance(segm, list):
                    self._gt_polygons[ann["id"]] = (ann["image_id"], copy.deepcopy(segm))
        if self._do_evaluation and not hasattr(self._metadata, "thing_dataset_id_to_contiguous_id"):
            # Set by load_coco_json when the dataset is loaded; without it predicted contiguous
            # ids would be compared with dataset ids. Same rule as load_coco_json.
            cat_ids = sorted(self._coco_api.getCatIds())
            self._metadata.thing_dataset_id_to_contiguous_id = {v: i for i, v in enumerate(cat_ids)}

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: Optional[str] = None) -> dict:
        """Constructor arguments from a detectron2 config (used by `build_evaluator`)."""
        args = {
            "dataset_name": dataset_name,
            "output_dir": output_dir,
            "max_dets_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
        }
        if "POLAR_REFINE" in cfg.MODEL:
            args["num_rays"] = cfg.MODEL.POLAR_REFINE.NUM_RAYS
        return args

    def reset(self):
        super().reset()
        self._segm_seen = False

    def process(self, inputs, outputs):
        """
        Args:
            inputs: the inputs to the model, a list of dicts with key "image_id".
            outputs: the outputs of the model, a list of dicts with key "instances" holding an
                :class:`Instances` at the original image size with ``pred_polygons`` (N, K, 2)
                (x, y), ``pred_boxes`` (N, 4) XYXY, ``scores`` (N,), ``pred_classes`` (N,)
                contiguous ids; without ``pred_polygons``, ``pred_masks`` (N, H, W) are used as
                by :class:`COCOEvaluator`.
        """
        for input, output in zip(inputs, outputs):
            prediction = {"image_id": input["image_id"]}
            if "instances" in output:
                instances = output["instances"]
                if instances.has("pred_polygons"):
                    # Leave any pred_masks on the device: they are not needed.
                    fields = {k: v for k, v in instances.get_fields().items() if k != "pred_masks"}
                    instances = Instances(instances.image_size, **fields).to(self._cpu_device)
                    coco_json = instances_to_coco_json_polygons(instances, input["image_id"])
                    self._segm_seen = True
                else:
                    instances = instances.to(self._cpu_device)
                    coco_json = instances_to_coco_json(instances, input["image_id"])
                    self._segm_seen |= instances.has("pred_masks")
                prediction["instances"] = coco_json
            if "proposals" in output:
                prediction["proposals"] = output["proposals"].to(self._cpu_device)
            if len(prediction) > 1:
                self._predictions.append(prediction)

    def evaluate(self, img_ids=None):
        """
        Args:
            img_ids: a list of image IDs to evaluate on. Default to None for the whole dataset.

        Returns:
            dict: {task: {metric: value}} as :class:`COCOEvaluator`, plus "polar_ceiling" when
            enabled. Never ``{}`` on the main process when annotations are available.
        """
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            segm_seen = any(comm.gather(self._segm_seen, dst=0))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
            segm_seen = self._segm_seen

        self._results = OrderedDict()
        if len(predictions) == 0:
            self._logger.warning(
                "[PolarCOCOEvaluator] Did not receive valid predictions; reporting zero AP."
            )
            if self._do_evaluation:
                for task in sorted(self._tasks or ("bbox", "segm")):
                    self._results[task] = self._zero_detection_results(task, img_ids)
        else:
            if self._output_dir:
                PathManager.mkdirs(self._output_dir)
                file_path = os.path.join(self._output_dir, "instances_predictions.pth")
                with PathManager.open(file_path, "wb") as f:
                    torch.save(predictions, f)
            if "proposals" in predictions[0]:
                self._eval_box_proposals(predictions)
            if "instances" in predictions[0]:
                self._eval_predictions(predictions, img_ids=img_ids, segm_seen=segm_seen)

        if self._polar_ceiling and self._do_evaluation:
            self._results["polar_ceiling"] = self._eval_polar_ceiling(img_ids)
        # Copy so the caller can do whatever with results
        return copy.deepcopy(self._results)

    def _eval_predictions(self, predictions, img_ids=None, segm_seen: bool = True):
        """
        As :meth:`COCOEvaluator._eval_predictions`, but zero detections give zero-AP dicts for
        "bbox" and "segm" (the latter only if polygons or masks were predicted).
        """
        coco_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        if len(coco_results) > 0:
            return super()._eval_predictions(predictions, img_ids=img_ids)

        self._logger.warning("[PolarCOCOEvaluator] No detections on any image; reporting zero AP.")
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            with PathManager.open(file_path, "w") as f:
                f.write(json.dumps([]))
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return
        tasks = self._tasks or (("bbox", "segm") if segm_seen else ("bbox",))
        for task in sorted(tasks):
            self._results[task] = self._zero_detection_results(task, img_ids)

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        """COCOEvaluator's metrics, plus "AP@100" (AP with at most 100 detections per image)
        when ``max_dets_per_image`` is above 100."""
        results = super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)
        max_dets = list(coco_eval.params.maxDets) if coco_eval is not None else []
        if iou_type in ("bbox", "segm") and len(max_dets) == 3 and max_dets[1] == 100 < max_dets[2]:
            precision = coco_eval.eval["precision"][:, :, :, 0, 1]  # all areas, maxDets=100
            valid = precision[precision > -1]
            results["AP@100"] = float(valid.mean() * 100) if valid.size else float("nan")
        return results

    def _zero_detection_results(self, task: str, img_ids=None) -> Dict[str, float]:
        """
        The metrics COCOeval gives an empty result file: 0.0 for each metric (and category)
        whose area range has a non-ignored ground-truth object, NaN otherwise (COCOeval's -1).
        """
        params = Params(iouType=task)
        area_ranges = dict(zip(params.areaRngLbl, params.areaRng))
        ann_ids = self._coco_api.getAnnIds(imgIds=img_ids if img_ids is not None else [])
        if img_ids is not None:
            keep = set(img_ids)
            ann_ids = [a for a in ann_ids if self._coco_api.anns[a]["image_id"] in keep]
        anns = [
            a
            for a in self._coco_api.loadAnns(ann_ids)
            if not a.get("iscrowd", 0) and (task != "keypoints" or a.get("num_keypoints", 0) > 0)
        ]

        def has_gt(area_label: str, cat_id=None) -> bool:
            lo, hi = area_ranges[area_label]
            return any(
                lo <= a["area"] <= hi and (cat_id is None or a["category_id"] == cat_id)
                for a in anns
            )

        results = {
            metric: 0.0 if has_gt(area) else float("nan") for metric, area in _METRIC_AREAS[task]
        }
        self._logger.info(
            "Evaluation results for {} (no detections): \n".format(task)
            + create_small_table(results)
        )
        class_names = self._metadata.get("thing_classes")
        if class_names is not None and len(class_names) > 1:
            # As in _derive_coco_results: class index k is the k-th smallest dataset category id.
            cat_ids = sorted(self._coco_api.getCatIds())
            for name, cat_id in zip(class_names, cat_ids):
                results["AP-" + name] = 0.0 if has_gt("all", cat_id) else float("nan")
        return results

    def _eval_polar_ceiling(self, img_ids=None) -> Dict[str, float]:
        """Mean IoU of each non-crowd polygon ground truth with its own K-ray polar contour
        (and, with ``deform_points``, with its own N-point contour), overall and per category."""
        keep = None if img_ids is None else set(img_ids)
        ious = {}  # (representation, category id) -> IoUs
        for ann_id, (image_id, segm) in self._gt_polygons.items():
            if keep is not None and image_id not in keep:
                continue
            if ann_id not in self._ceiling_ious:
                img = self._coco_api.imgs[image_id]
                h, w = img["height"], img["width"]
                values = {"": polar_ceiling_iou(segm, h, w, self._num_rays)}
                if self._deform_points:
                    values["deformed/"] = deformed_ceiling_iou(segm, h, w, self._deform_points)
                self._ceiling_ious[ann_id] = values
            cat = self._coco_api.anns[ann_id]["category_id"]
            for rep, iou in self._ceiling_ious[ann_id].items():
                if np.isfinite(iou):
                    ious.setdefault((rep, None), []).append(iou)
                    ious.setdefault((rep, cat), []).append(iou)
        reps = [""] + (["deformed/"] if self._deform_points else [])
        res = {}
        for rep in reps:
            res[rep + "mean_iou"] = (
                float(np.mean(ious[rep, None])) if (rep, None) in ious else float("nan")
            )
            res[rep + "num_instances"] = float(len(ious.get((rep, None), [])))
        names = {c["id"]: c["name"] for c in self._coco_api.loadCats(self._coco_api.getCatIds())}
        for rep in reps:
            for cat, name in names.items():
                if (rep, cat) in ious:
                    res[f"{rep}mean_iou-{name}"] = float(np.mean(ious[rep, cat]))
        self._logger.info(
            "Polar ceiling ({} rays, mask IoU of GT with its own polar contour): \n".format(
                self._num_rays
            )
            + create_small_table(res)
        )
        return res
