# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""PolarRefine: the meta-architecture tying backbone, polar head, refine stages and contour head."""

import os
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import Backbone, build_backbone
from detectron2.modeling.meta_arch import META_ARCH_REGISTRY
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import ImageList, Instances
from detectron2.utils.events import get_event_storage
from torch import nn

from ..polar import polar_iou, radii_to_points
from .candidates import (
    Candidates,
    confidence_maps,
    cover_window,
    covered_confidence,
    select_candidates,
)
from .contour import ContourHead
from .deform import ContourDeformer, InitContour, init_contour_loss, positive_edges
from .head import build_polar_head
from .locations import LocationGenerator, Locations
from .losses import centerness_loss, classification_loss, radius_loss, reduce_mean, zero_like_params
from .postprocess import batched_nms_polygons, clip_polygons, polar_postprocess, polygons_to_boxes
from .refine import PolarRefiner
from .shape_nms import shape_nms
from .targets import PolarTargetAssigner

__all__ = ["PolarRefine"]

#: Training diagnostics (polar IoU of the positives) are written every this many iterations:
#: writing a value reads it back to the host, which would synchronise every step.
_DIAGNOSTICS_PERIOD = 20


@META_ARCH_REGISTRY.register()
class PolarRefine(DenseDetector):
    """Single-stage, ROI-free instance segmentation with coarse-to-fine polar contours.

    An instance is a location plus K radii. The head predicts category and centre logits and
    coarse radii densely; ``refiner`` corrects the radii from features sampled on the contour;
    ``contour`` (training only) learns boundaries; ``deformer`` moves the final contour's points
    freely. See the patent (US 12,394,060 B2) and ``docs/DESIGN.md``.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        head_in_features: List[str],
        assigner: PolarTargetAssigner,
        refiner: Optional[PolarRefiner] = None,
        contour: Optional[ContourHead] = None,
        deformer: Optional[ContourDeformer] = None,
        init_contour=None,
        init_loss_weight: float = 1.0,
        huber_beta: float = 0.05,
        num_classes: int,
        sizes_of_interest=(64, 128, 256, 512),
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        coarse_loss_weight: float = 1.0,
        centerness_loss_weight: float = 1.0,
        loss_normalizer_momentum: float = 0.9,
        test_score_thresh: float = 0.05,
        test_topk_candidates: int = 1000,
        test_nms_thresh: float = 0.5,
        nms_type: str = "box",
        score_from: str = "center",
        max_detections_per_image: int = 100,
        mask_on: bool = True,
        pixel_mean,
        pixel_std,
    ):
        """
        Args:
            backbone: any detectron2 Backbone; ``head_in_features`` names its levels (finest first).
            head: dense polar head (see ``POLAR_HEAD_REGISTRY``).
            assigner: label assignment.
            refiner: the refine stages, or None for coarse radii only (PolarMask).
            contour: the training-only contour head, or None.
            deformer: the contour deformation stages (after NMS at inference), or None. With
                them, the model trains them alone (`forward_deform_alone`): every other
                parameter is frozen, to be loaded from a trained model.
            Other arguments are documented with their keys in ``polar_refine/config.py``.
        """
        super().__init__(
            backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std
        )
        if nms_type not in ("box", "shape"):
            raise ValueError(f"nms_type must be 'box' or 'shape', got {nms_type!r}")
        if score_from not in ("center", "covered"):
            raise ValueError(f"score_from must be 'center' or 'covered', got {score_from!r}")
        shapes = backbone.output_shape()
        self.strides = [shapes[f].stride for f in self.head_in_features]
        self.locations = LocationGenerator(self.strides, sizes_of_interest)
        self.size_ranges = self.locations.size_ranges
        self.cover_window = cover_window(self.strides, self.size_ranges)
        self.assigner = assigner
        self.refiner = refiner
        self.contour = contour
        self.deformer = deformer
        self.init_contour = init_contour
        self.init_loss_weight = init_loss_weight
        self.huber_beta = huber_beta
        if deformer is not None:  # the optimizer (detectron2's) skips frozen parameters
            for name, p in self.named_parameters():
                p.requires_grad_(name.startswith("deformer."))
        self.num_classes = num_classes
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.coarse_loss_weight = coarse_loss_weight
        self.centerness_loss_weight = centerness_loss_weight
        self.loss_normalizer_momentum = loss_normalizer_momentum
        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.nms_type = nms_type
        self.score_from = score_from
        self.max_detections_per_image = max_detections_per_image
        self.mask_on = mask_on

    @classmethod
    def from_config(cls, cfg):
        pr = cfg.MODEL.POLAR_REFINE
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        missing = [f for f in pr.IN_FEATURES if f not in shapes]
        if missing:
            raise ValueError(
                f"MODEL.POLAR_REFINE.IN_FEATURES names {missing}, which the backbone does not "
                f"output (it outputs {sorted(shapes)})"
            )
        head_shapes = [shapes[f] for f in pr.IN_FEATURES]
        channels = head_shapes[0].channels
        head = build_polar_head(cfg, head_shapes)  # built in this order: the same random init
        refiner = PolarRefiner(cfg, in_channels=channels) if pr.REFINE.ENABLED else None
        contour = ContourHead(cfg, shapes) if pr.CONTOUR.ENABLED else None
        deformer = ContourDeformer(cfg, in_channels=channels) if pr.DEFORM.ENABLED else None
        d = pr.DEFORM
        init = InitContour(channels, d.NUM_POINTS, d.INIT_DIM) if d.INIT_DIM > 0 else None
        return {
            "init_contour": init,
            "init_loss_weight": d.INIT_LOSS_WEIGHT,
            "huber_beta": d.HUBER_BETA,
            "backbone": backbone,
            "head": head,
            "head_in_features": list(pr.IN_FEATURES),
            "assigner": PolarTargetAssigner(cfg),
            "refiner": refiner,
            "contour": contour,
            "deformer": deformer,
            "num_classes": pr.NUM_CLASSES,
            "sizes_of_interest": pr.SIZES_OF_INTEREST,
            "focal_loss_alpha": pr.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": pr.FOCAL_LOSS_GAMMA,
            "coarse_loss_weight": pr.COARSE_LOSS_WEIGHT,
            "centerness_loss_weight": pr.CENTERNESS_LOSS_WEIGHT,
            "loss_normalizer_momentum": pr.LOSS_NORMALIZER_MOMENTUM,
            "test_score_thresh": pr.SCORE_THRESH_TEST,
            "test_topk_candidates": pr.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": pr.NMS_THRESH_TEST,
            "nms_type": pr.NMS_TYPE,
            "score_from": pr.SCORE_FROM,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "mask_on": cfg.MODEL.MASK_ON,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    def train(self, mode: bool = True):
        """With ``deformer``, only the stages switch to training mode: the frozen rest stays in
        eval mode, so that no batch-norm statistics drift while the stages train."""
        super().train(mode)
        if self.deformer is not None and mode:
            for name, child in self.named_children():
                if name != "deformer":
                    child.eval()
        return self

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        """
        Args:
            batched_inputs: detectron2's format: per image a dict with ``image`` (C, H, W),
                ``instances`` in training, and optional ``height``/``width`` (output size).

        Returns:
            training: losses ``loss_cls``, ``loss_ctr``, ``loss_coarse`` and, when on,
            ``loss_fine`` (``loss_fine2`` ...), ``loss_contour``; with ``deformer``, its
            ``loss_deform`` (...) only (`forward_deform_alone`).
            inference: per image ``{"instances": Instances}`` at the output size (see
            `inference_single_image`; plus ``pred_masks`` (N, H, W) with ``MODEL.MASK_ON``).
        """
        images = self.preprocess_image(batched_inputs)
        if self.training and self.deformer is not None:
            return self.forward_deform_alone(images, batched_inputs)
        all_features = self.backbone(images.tensor)
        features = [all_features[f] for f in self.head_in_features]
        predictions = self.head(features)
        if self.training:
            gt_instances = self._gt_instances(batched_inputs)
            losses = self.forward_training(images, features, predictions, gt_instances)
            if self.contour is not None:
                hw = all_features[self.contour.in_feature].shape[-2:]
                targets = self.contour.targets(batched_inputs, gt_instances, images.image_sizes, hw)
                losses.update(self.contour(all_features, targets)[1])
            return losses
        results = self.forward_inference(images, features, predictions)
        processed = []
        for res, inp, size in zip(results, batched_inputs, images.image_sizes):
            height = inp.get("height", size[0])
            width = inp.get("width", size[1])
            processed.append({"instances": polar_postprocess(res, height, width, self.mask_on)})
        return processed

    # ------------------------------------------------------------------ training
    def forward_training(
        self,
        images: ImageList,
        features: List[torch.Tensor],
        predictions,
        gt_instances: List[Instances],
    ) -> Dict[str, torch.Tensor]:
        """Targets, the refine stages on the positives, and the dense and radius losses.

        Args:
            images, features, predictions: the preprocessed batch, the head's input levels and
                its (cls, ctr, coarse) per-level outputs.
            gt_instances: per image, on the model's device, ideally with the ``gt_polar_*``
                fields of `PolarDatasetMapper` (else they are computed here, on the host).
        """
        (cls_flat, ctr_flat, rad_flat), locs, targets, pos_img, pos_idx = self._positives(
            features, predictions, gt_instances
        )
        outputs = {
            "cls": cls_flat,
            "ctr": ctr_flat[pos_img, pos_idx, 0],
            "coarse": rad_flat[pos_img, pos_idx],
        }
        tgt = {
            "labels": torch.stack([t["labels"] for t in targets]),
            "radii": torch.cat([t["radii"] for t in targets]),
            "centerness": torch.cat([t["centerness"] for t in targets]),
        }
        if self.refiner is not None:
            outputs["fine"] = self.refiner(features, locs, pos_idx, pos_img, outputs["coarse"])
        losses = self.losses(outputs, tgt)
        if self.init_contour is not None:
            pts = self.init_contour(features, locs, pos_idx, pos_img)
            ctr = tgt["centerness"]
            if os.environ.get("INIT_UNIFORM") == "1":
                ctr = torch.ones_like(ctr)
            norm = reduce_mean(ctr.sum()).clamp(min=1e-2)
            edges = positive_edges(gt_instances, targets)
            loss = init_contour_loss(pts, edges, ctr, norm, self.huber_beta)
            losses["loss_init"] = self.init_loss_weight * loss + zero_like_params(self.init_contour)
        return losses

    def forward_deform_alone(self, images: ImageList, batched_inputs) -> Dict[str, torch.Tensor]:
        """Training with ``deformer``: the frozen rest of the model gives the deformation stages
        their features and starting contours (the refined radii of the positives) without a
        graph, and only the stages' losses (``loss_deform`` ...) are returned.

        Trained this way on a finished model, the stages learn on the features and contours
        they meet at test time, at the solver's full learning rate. (Trained with the rest from
        the start, they scored lower on both datasets: docs/BENCHMARKS.md.)
        """
        gt_instances = self._gt_instances(batched_inputs)
        with torch.no_grad():
            all_features = self.backbone(images.tensor)
            features = [all_features[f] for f in self.head_in_features]
            predictions = self.head(features)
            flat, locs, targets, pos_img, pos_idx = self._positives(
                features, predictions, gt_instances
            )
            radii = flat[2][pos_img, pos_idx]
            if self.refiner is not None:
                radii = self.refiner(features, locs, pos_idx, pos_img, radii)[-1]
            start = None
            if self.init_contour is not None:
                start = self.init_contour(features, locs, pos_idx, pos_img)
        contours = self.deformer(features, images.tensor, locs, pos_idx, pos_img, radii, start)
        ctr = torch.cat([t["centerness"] for t in targets])
        norm = self._ctr_normalizer(ctr)
        return self.deformer.losses(contours, positive_edges(gt_instances, targets), ctr, norm)

    def _ctr_normalizer(self, ctr: torch.Tensor) -> torch.Tensor:
        """The centre-ness sum of the (P,) positives, all-reduced and EMA-smoothed: the
        normaliser of the radius and deformation losses."""
        ctr_sum = reduce_mean(ctr.sum()).clamp(min=1e-2)
        return self._ema_update("ctr_normalizer", ctr_sum, ctr_sum, self.loss_normalizer_momentum)

    def _gt_instances(self, batched_inputs) -> List[Instances]:
        assert "instances" in batched_inputs[0], "Instance annotations are missing in training!"
        return [x["instances"].to(self.device) for x in batched_inputs]

    def _positives(self, features: List[torch.Tensor], predictions, gt_instances):
        """The dense predictions flattened over levels ((N, R, num_classes), (N, R, 1),
        (N, R, K)), the location grid, the assigner's targets and the positives' (P,) image
        and location indices, images in order."""
        dims = [self.num_classes, 1, predictions[2][0].shape[1]]
        flat = self._transpose_dense_predictions(list(predictions), dims)
        flat = [torch.cat(x, dim=1) for x in flat]
        locs = self.locations(features)
        targets = self.assigner(locs, gt_instances)
        pos_img = torch.cat([torch.full_like(t["pos_idx"], i) for i, t in enumerate(targets)])
        pos_idx = torch.cat([t["pos_idx"] for t in targets])
        return flat, locs, targets, pos_img, pos_idx

    def losses(self, outputs: Dict[str, torch.Tensor], targets: Dict[str, torch.Tensor]):
        """The patent's loss (the contour head adds its own), normalised across processes.

        Args:
            outputs: ``cls`` (N, R, L) logits of every location; ``ctr`` (P,) logits and
                ``coarse`` (P, K) radii of the P positives; optionally ``fine`` (per refine
                stage, (P, K)).
            targets: ``labels`` (N, R) (``num_classes`` = background); ``radii`` (P, K);
                ``centerness`` (P,).

        The normalisers (positive count, centre-ness sum) are all-reduced over the processes
        of ``launch`` and smoothed by an EMA (AdelaiDet's FCOS). Losses are float32 (also under
        autocast); only the diagnostics, every ``_DIAGNOSTICS_PERIOD`` iterations, read back.
        """
        cls_flat = outputs["cls"].float()
        coarse = outputs["coarse"].float()
        tgt_radii, tgt_ctr = targets["radii"], targets["centerness"]
        num_images, num_pos = cls_flat.shape[0], tgt_radii.shape[0]
        storage = get_event_storage()
        storage.put_scalar("num_pos_locations", num_pos / num_images)
        m = self.loss_normalizer_momentum
        pos = reduce_mean(tgt_ctr.new_full((), float(num_pos))).clamp(min=1.0)
        norm_pos = self._ema_update("loss_normalizer", pos, pos, m)
        norm_ctr = self._ctr_normalizer(tgt_ctr)
        losses = {
            "loss_cls": classification_loss(
                cls_flat.reshape(-1, self.num_classes),
                targets["labels"].flatten(),
                self.num_classes,
                self.focal_loss_alpha,
                self.focal_loss_gamma,
            )
            / norm_pos,
            # with no positive these are empty sums, still connected to the head through the
            # indexing, so no dense "x.sum() * 0" term is needed (one inf would make it NaN)
            "loss_ctr": self.centerness_loss_weight
            * centerness_loss(outputs["ctr"].float(), tgt_ctr)
            / norm_pos,
            "loss_coarse": self.coarse_loss_weight
            * radius_loss(coarse, tgt_radii, tgt_ctr)
            / norm_ctr,
        }
        stages = self.refiner.stages if self.refiner is not None else []
        for s, (fine, stage) in enumerate(zip(outputs.get("fine", []), stages)):
            # with no positive the stage's weights are unused: keep them in the graph (DDP) by
            # a zero made from the parameters, which are finite, not from activations
            key = "loss_fine" if s == 0 else f"loss_fine{s + 1}"
            loss = radius_loss(fine.float(), tgt_radii, tgt_ctr) / norm_ctr
            losses[key] = loss + zero_like_params(stage)
        if num_pos and storage.iter % _DIAGNOSTICS_PERIOD == 0:
            with torch.no_grad():
                storage.put_scalar("polar_iou_coarse", polar_iou(coarse, tgt_radii).mean())
                if "fine" in outputs:
                    iou = polar_iou(outputs["fine"][-1].float().clamp(min=0), tgt_radii).mean()
                    storage.put_scalar("polar_iou_fine", iou)
        return losses

    # ------------------------------------------------------------------ inference
    def forward_inference(
        self, images: ImageList, features: List[torch.Tensor], predictions
    ) -> List[Instances]:
        """Top-k candidates per level -> refine -> score -> polygons -> NMS, at input size."""
        locs, cand, fine = self.candidates(features, predictions)
        return self.detections(
            images.image_sizes, predictions, locs, cand, fine, features, images.tensor
        )

    def candidates(self, features: List[torch.Tensor], predictions):
        """The location grid, the candidates of every image and their final (P, K) radii."""
        cls_logits, ctr_logits, coarse = predictions
        locs = self.locations(features)
        cand = select_candidates(
            cls_logits, ctr_logits, coarse, locs, self.test_score_thresh, self.test_topk_candidates
        )
        fine = cand.coarse
        if self.refiner is not None:
            fine = self.refiner(features, locs, cand.location, cand.image, cand.coarse)[-1]
        return locs, cand, fine

    def detections(
        self, image_sizes, predictions, locs, cand, fine, features=None, pixels=None
    ) -> List[Instances]:
        """Scores (``score_from``), then per image `inference_single_image` (``features``: the
        head's input levels, and ``pixels``: the preprocessed images, read by the deformation
        stages)."""
        maps = None
        if self.score_from == "covered":
            maps = confidence_maps(*predictions[:2])
            scores = covered_confidence(
                maps, locs, cand.image, cand.location, fine, self.cover_window, cand.classes
            ).sqrt()
        else:  # detectron2's FCOS score: sqrt(category x centre), as `select_candidates` ranks
            scores = (cand.cls_prob * cand.ctr_prob).sqrt()
        results = []
        for i, size in enumerate(image_sizes):
            sel = cand.image == i
            args = (locs, cand.select(sel), fine[sel], scores[sel], tuple(size))
            results.append(self.inference_single_image(*args, maps, features, pixels))
        return results

    def inference_single_image(
        self,
        locs: Locations,
        cand: Candidates,
        fine: torch.Tensor,
        scores: torch.Tensor,
        image_size: Tuple[int, int],
        maps: Optional[List[torch.Tensor]] = None,
        features: Optional[List[torch.Tensor]] = None,
        pixels: Optional[torch.Tensor] = None,
    ) -> Instances:
        """Polygons, class-aware NMS (on the clipped polygons' boxes, or with ``nms_type ==
        "shape"`` on the polygons themselves, `shape_nms`), at most ``max_detections_per_image``.

        Args:
            locs: the location grid; cand: one image's candidates; fine: (P, K) their final
                radii; scores: (P,) their scores; maps: the `confidence_maps` with
                ``score_from == "covered"`` (the final class is the covered locations' vote);
                features, pixels: the head's input levels and the (N, 3, H, W) preprocessed
                images of the batch (with ``deformer``).

        Returns:
            Instances at ``image_size`` with ``pred_polygons`` and ``pred_coarse_polygons``
            (clipped to the image), ``scores`` (each at least ``test_score_thresh``),
            ``pred_classes``; with ``deformer``, ``pred_polygons`` are the deformed contours of
            the kept detections and ``pred_polar_polygons`` the polar ones they started from.
        """
        centers = locs.points[cand.location]
        polys = radii_to_points(centers, fine.clamp(min=0))
        h, w = image_size  # ints, or 0-dim tensors while tracing
        # Locations in the batch padding are not in the image; non-finite outputs and scores
        # under the threshold are dropped. (Always indexed, never branched on, so that a trace
        # keeps the filter.)
        keep = torch.isfinite(polys).flatten(1).all(1) & torch.isfinite(scores)
        keep = keep & (centers[:, 0] < w) & (centers[:, 1] < h) & (scores > self.test_score_thresh)
        cand, fine, polys, scores = cand.select(keep), fine[keep], polys[keep], scores[keep]
        # clipped first: the class offsets of box NMS are then bounded by the image size
        polys = clip_polygons(polys, h, w)
        if self.nms_type == "shape":  # the patent's NMS on the edge shapes (eager only)
            args = (locs.points[cand.location], fine, scores, cand.classes, self.test_nms_thresh)
            keep = shape_nms(*args, max_keep=self.max_detections_per_image)
        else:
            boxes = polygons_to_boxes(polys)
            keep = batched_nms_polygons(boxes, scores, cand.classes, self.test_nms_thresh)
        keep = keep[: self.max_detections_per_image]
        cand, fine, polys, scores = cand.select(keep), fine[keep], polys[keep], scores[keep]
        if maps is not None:  # the patent's classification from the covered locations
            args = (maps, locs, cand.image, cand.location, fine, self.cover_window)
            cand = cand._replace(classes=covered_confidence(*args).argmax(1))
            scores = covered_confidence(*args, cand.classes).sqrt()
            keep = scores.argsort(descending=True)
            keep = keep[scores[keep] > self.test_score_thresh]
            cand, fine, polys, scores = cand.select(keep), fine[keep], polys[keep], scores[keep]
        res = Instances(image_size)
        if self.deformer is not None:  # only the kept detections: deformation is not cheap
            res.pred_polar_polygons = polys
            start = None
            if self.init_contour is not None:
                start = self.init_contour(features, locs, cand.location, cand.image)
            args = (features, pixels, locs, cand.location, cand.image, fine, start)
            polys = clip_polygons(self.deformer(*args)[-1], h, w)
        elif self.init_contour is not None and os.environ.get("INIT_OUT") == "1":
            res.pred_polar_polygons = polys
            polys = self.init_contour(features, locs, cand.location, cand.image)
            polys = clip_polygons(polys, h, w)
        res.pred_polygons = polys
        coarse = radii_to_points(locs.points[cand.location], cand.coarse.clamp(min=0))
        res.pred_coarse_polygons = clip_polygons(coarse, h, w)
        res.scores = scores
        res.pred_classes = cand.classes
        return res
