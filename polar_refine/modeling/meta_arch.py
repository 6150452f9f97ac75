"""PolarRefine: the meta-architecture tying backbone, polar head, refinement and contour head."""

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import Backbone, build_backbone
from detectron2.modeling.meta_arch import META_ARCH_REGISTRY
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import ImageList, Instances
from detectron2.utils.events import get_event_storage
from torch import nn

from ..polar import polar_iou, radii_to_points
from .contour import ContourHead, SemanticHead
from .contour_cls import ContourClassifier
from .gt_geometry import contour_target_map, semantic_target_map
from .head import build_polar_head
from .losses import (
    centerness_loss,
    classification_loss,
    contour_loss,
    radius_loss,
    reduce_mean,
    semantic_loss,
    zero_like_params,
)
from .postprocess import batched_nms_polygons, polar_postprocess, polygons_to_boxes
from .refine import PolarRefineModule
from .shape_nms import shape_nms
from .targets import PolarTargetAssigner, level_size_ranges

__all__ = ["PolarRefine"]

logger = logging.getLogger(__name__)

#: Training diagnostics (polar IoU of the positives) are written every this many iterations:
#: writing a value reads it back to the host, which would synchronise every step.
_DIAGNOSTICS_PERIOD = 20


@META_ARCH_REGISTRY.register()
class PolarRefine(DenseDetector):
    """Single-stage, ROI-free instance segmentation with coarse-to-fine polar contours.

    An instance is a location plus K radii. The head predicts category and centre logits and
    coarse radii densely; ``refine`` corrects the radii of the locations that matter from
    features sampled on their coarse contour; ``contour`` (training only) learns boundaries on
    the finest level. See the seed (US 12,394,060 B2) and ``DESIGN.md``.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        head_in_features: List[str],
        assigner: PolarTargetAssigner,
        refine: Optional[PolarRefineModule] = None,
        extra_refine: Optional[List[PolarRefineModule]] = None,
        refine_features: Sequence[str] = ("fpn",),
        contour: Optional[ContourHead] = None,
        contour_in_feature: Optional[str] = None,
        semantic: Optional[SemanticHead] = None,
        semantic_in_feature: Optional[str] = None,
        contour_classifier: Optional[ContourClassifier] = None,
        classifier_negatives: int = 32,
        classifier_loss_weight: float = 1.0,
        num_classes: int,
        sizes_of_interest=(64, 128, 256, 512),
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        coarse_loss_weight: float = 1.0,
        centerness_loss_weight: float = 1.0,
        contour_loss_weight: float = 1.0,
        contour_boundary_width: int = 1,
        semantic_loss_weight: float = 1.0,
        loss_normalizer_momentum: float = 0.9,
        negative_ray_gradient: bool = False,
        test_score_thresh: float = 0.05,
        test_topk_candidates: int = 1000,
        test_nms_thresh: float = 0.5,
        nms_type: str = "box",
        candidate_score: str = "class",
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
            refine: the refine module, or None for coarse radii only (PolarMask).
            extra_refine: further refine stages (``REFINE.NUM_STAGES - 1``): stage s samples the
                features on stage s - 1's contour and adds its own correction.
            refine_features: what the refine stages sample, concatenated along channels:
                "fpn" (the head's input levels, the seed) and/or "reg_tower" (the head's
                regression tower output, ``head(features, return_reg_features=True)``).
            contour: the training-only contour head, or None.
            contour_in_feature: the level ``contour`` reads (default: the finest).
            semantic: the training-only semantic head, or None.
            semantic_in_feature: the level ``semantic`` reads (default: the finest).
            contour_classifier: re-classifies candidates from their contour, or None.
            classifier_negatives: background locations per image it is trained on.
            classifier_loss_weight: weight of its loss.
            Other arguments are documented in ``polar_refine/config.py``.
        """
        super().__init__(
            backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std
        )
        shapes = backbone.output_shape()
        self.strides = [shapes[f].stride for f in self.head_in_features]
        self.assigner = assigner
        self.refine = refine
        self.extra_refine = nn.ModuleList(extra_refine or [])
        if len(self.extra_refine) and refine is None:
            raise ValueError("extra_refine stages need the first refine stage")
        bad = [f for f in refine_features if f not in ("fpn", "reg_tower")]
        if bad or not refine_features:
            raise ValueError(f"refine_features must name 'fpn' and/or 'reg_tower', got {bad}")
        self.refine_features = tuple(refine_features)
        self.contour = contour
        self.contour_in_feature = contour_in_feature or self.head_in_features[0]
        # the contour head may predict at a finer stride (CONTOUR.UPSAMPLE)
        self.contour_stride = shapes[self.contour_in_feature].stride // getattr(
            contour, "upsample", 1
        )
        self.semantic = semantic
        self.semantic_in_feature = semantic_in_feature or self.head_in_features[0]
        self.semantic_stride = shapes[self.semantic_in_feature].stride
        self.semantic_loss_weight = semantic_loss_weight
        self.contour_classifier = contour_classifier
        self.classifier_negatives = int(classifier_negatives)
        self.classifier_loss_weight = classifier_loss_weight
        self.num_classes = num_classes
        self.size_ranges = level_size_ranges(self.strides, sizes_of_interest)
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.coarse_loss_weight = coarse_loss_weight
        self.centerness_loss_weight = centerness_loss_weight
        self.contour_loss_weight = contour_loss_weight
        self.contour_boundary_width = contour_boundary_width
        self.loss_normalizer_momentum = loss_normalizer_momentum
        self.negative_ray_gradient = negative_ray_gradient
        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        if nms_type not in ("box", "shape"):
            raise ValueError(f"nms_type must be 'box' or 'shape', got {nms_type!r}")
        if candidate_score not in ("class", "class_x_centre"):
            raise ValueError(
                f"candidate_score must be 'class' or 'class_x_centre', got {candidate_score!r}"
            )
        self.nms_type = nms_type
        self.candidate_score = candidate_score
        self.max_detections_per_image = max_detections_per_image
        self.mask_on = mask_on

    @classmethod
    def from_config(cls, cfg):
        pr = cfg.MODEL.POLAR_REFINE
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        in_features = list(pr.IN_FEATURES)
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ValueError(
                f"MODEL.POLAR_REFINE.IN_FEATURES names {missing}, which the backbone does not "
                f"output (it outputs {sorted(shapes)})"
            )
        head_shapes = [shapes[f] for f in in_features]
        channels = head_shapes[0].channels
        finest = min(in_features, key=lambda f: shapes[f].stride)
        contour_feature = pr.CONTOUR.IN_FEATURE or finest
        semantic_feature = pr.SEMANTIC.IN_FEATURE or finest
        # the regression tower has HEAD_CHANNELS channels (0: those of its input)
        widths = {"fpn": channels, "reg_tower": pr.HEAD_CHANNELS or channels}
        refine_channels = sum(widths.get(f, 0) for f in pr.REFINE.FEATURES)
        return {
            "backbone": backbone,
            "head": build_polar_head(cfg, head_shapes),
            "head_in_features": in_features,
            "assigner": PolarTargetAssigner(cfg),
            "refine": (
                PolarRefineModule(cfg, in_channels=refine_channels) if pr.REFINE.ENABLED else None
            ),
            "extra_refine": [
                PolarRefineModule(cfg, in_channels=refine_channels)
                for _ in range(pr.REFINE.NUM_STAGES - 1 if pr.REFINE.ENABLED else 0)
            ],
            "refine_features": list(pr.REFINE.FEATURES),
            "contour": (
                ContourHead(cfg, in_channels=shapes[contour_feature].channels)
                if pr.CONTOUR.ENABLED
                else None
            ),
            "contour_in_feature": contour_feature,
            "semantic": (
                SemanticHead(cfg, in_channels=shapes[semantic_feature].channels)
                if pr.SEMANTIC.ENABLED
                else None
            ),
            "semantic_in_feature": semantic_feature,
            "semantic_loss_weight": pr.SEMANTIC.LOSS_WEIGHT,
            "contour_classifier": (
                ContourClassifier(cfg, in_channels=channels)
                if pr.CONTOUR_CLASSIFIER.ENABLED
                else None
            ),
            "classifier_negatives": pr.CONTOUR_CLASSIFIER.NEGATIVES_PER_IMAGE,
            "classifier_loss_weight": pr.CONTOUR_CLASSIFIER.LOSS_WEIGHT,
            "num_classes": pr.NUM_CLASSES,
            "sizes_of_interest": pr.SIZES_OF_INTEREST,
            "focal_loss_alpha": pr.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": pr.FOCAL_LOSS_GAMMA,
            "coarse_loss_weight": pr.COARSE_LOSS_WEIGHT,
            "centerness_loss_weight": pr.CENTERNESS_LOSS_WEIGHT,
            "contour_loss_weight": pr.CONTOUR.LOSS_WEIGHT,
            "contour_boundary_width": pr.CONTOUR.BOUNDARY_WIDTH,
            "loss_normalizer_momentum": pr.LOSS_NORMALIZER_MOMENTUM,
            "negative_ray_gradient": pr.REFINE.NEGATIVE_RAY_GRADIENT,
            "test_score_thresh": pr.SCORE_THRESH_TEST,
            "test_topk_candidates": pr.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": pr.NMS_THRESH_TEST,
            "nms_type": pr.NMS_TYPE,
            "candidate_score": pr.CANDIDATE_SCORE_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "mask_on": cfg.MODEL.MASK_ON,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    # ------------------------------------------------------------------ entry point
    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        """
        Args:
            batched_inputs: detectron2's format: per image a dict with ``image`` (C, H, W),
                ``instances`` in training, and optional ``height``/``width`` (output size).

        Returns:
            training: dict of losses ``loss_cls``, ``loss_ctr``, ``loss_coarse`` and, when on,
            ``loss_fine`` (``loss_fine2`` ...), ``loss_contour``, ``loss_semantic`` and
            ``loss_contour_cls``.
            inference: per image ``{"instances": Instances}`` at the output size with
            ``pred_polygons`` (N, K, 2), ``pred_boxes``, ``scores``, ``pred_classes``,
            ``pred_masks`` (N, H, W) bool and ``pred_coarse_polygons``.
        """
        images = self.preprocess_image(batched_inputs)
        all_features = self.backbone(images.tensor)
        features = [all_features[f] for f in self.head_in_features]
        predictions = self.run_head(features)
        if self.training:
            assert "instances" in batched_inputs[0], "Instance annotations are missing in training!"
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
            contour_feature = semantic_feature = None
            if self.contour is not None:
                contour_feature = all_features[self.contour_in_feature]
            if self.semantic is not None:
                semantic_feature = all_features[self.semantic_in_feature]
            return self.forward_training(
                images,
                features,
                predictions,
                gt_instances,
                contour_feature=contour_feature,
                contour_maps=[self._loader_contour_map(x) for x in batched_inputs],
                semantic_feature=semantic_feature,
                semantic_maps=[self._loader_semantic_map(x) for x in batched_inputs],
            )
        results = self.forward_inference(images, features, predictions)
        processed = []
        for res, inp, size in zip(results, batched_inputs, images.image_sizes):
            height = inp.get("height", size[0])
            width = inp.get("width", size[1])
            processed.append({"instances": polar_postprocess(res, height, width, self.mask_on)})
        return processed

    def run_head(self, features: List[torch.Tensor]):
        """The head's (cls, ctr, coarse) per-level outputs, plus the regression tower's output
        as a 4th entry when the refine stages read it (``refine_features`` has "reg_tower")."""
        if self.refine is not None and "reg_tower" in self.refine_features:
            return self.head(features, return_reg_features=True)
        return self.head(features)

    def refine_inputs(self, features: List[torch.Tensor], predictions) -> List[torch.Tensor]:
        """Per level the (N, C_r, H_l, W_l) maps the refine stages sample: ``refine_features``
        concatenated along channels."""
        if self.refine_features == ("fpn",):
            return features
        by_name = {"fpn": features, "reg_tower": predictions[3] if len(predictions) > 3 else None}
        maps = [by_name[f] for f in self.refine_features]
        if any(m is None for m in maps):
            raise ValueError("refine_features needs the head's reg_tower output (run_head)")
        return maps[0] if len(maps) == 1 else [torch.cat(x, 1) for x in zip(*maps)]

    # ------------------------------------------------------------------ locations
    def locations(self, features: List[torch.Tensor]):
        """Location centres of every level, concatenated finest level first.

        Returns:
            points (R, 2) input pixels (x, y) = ((j + 0.5) * d, (i + 0.5) * d);
            cells (R, 2) the same in feature cells of the level (j, i);
            strides (R,), level (R,) long, size_ranges (R, 2).
        """
        pts, cells, strides, levels, ranges = [], [], [], [], []
        for lvl, (f, s) in enumerate(zip(features, self.strides)):
            h, w = f.shape[-2:]
            ys, xs = torch.meshgrid(
                torch.arange(h, device=f.device, dtype=torch.float32),
                torch.arange(w, device=f.device, dtype=torch.float32),
                indexing="ij",
            )
            c = torch.stack([xs.flatten(), ys.flatten()], 1)
            cells.append(c)
            pts.append((c + 0.5) * s)
            n = c.shape[0]
            strides.append(torch.full((n,), s, device=f.device, dtype=torch.float32))
            levels.append(torch.full((n,), lvl, device=f.device, dtype=torch.long))
            ranges.append(torch.tensor(self.size_ranges[lvl], device=f.device).expand(n, 2))
        return (
            torch.cat(pts),
            torch.cat(cells),
            torch.cat(strides),
            torch.cat(levels),
            torch.cat(ranges),
        )

    # ------------------------------------------------------------------ training
    def forward_training(
        self,
        images: ImageList,
        features: List[torch.Tensor],
        predictions,
        gt_instances: List[Instances],
        contour_feature: Optional[torch.Tensor] = None,
        contour_maps: Optional[List[Optional[torch.Tensor]]] = None,
        semantic_feature: Optional[torch.Tensor] = None,
        semantic_maps: Optional[List[Optional[torch.Tensor]]] = None,
    ) -> Dict[str, torch.Tensor]:
        """Targets, the refine and contour forwards on them, and the losses.

        Args:
            images, features, predictions: the preprocessed batch, the head's input levels and
                its (cls, ctr, coarse) per-level outputs.
            gt_instances: per image, on the model's device, ideally with the ``gt_polar_*``
                fields of `PolarDatasetMapper` (else they are computed here, on the host).
            contour_feature: (N, C, H, W) input of the contour head, or None.
            contour_maps: per image the loader's boundary map (h, w) or None (drawn here).
            semantic_feature: (N, C, H, W) input of the semantic head, or None.
            semantic_maps: per image the loader's category map (h, w) or None (drawn here).
        """
        cls_flat, ctr_flat, rad_flat = self._flat_predictions(predictions)
        points, cells, strides, levels, ranges = self.locations(features)
        targets = self.assigner(points, strides, ranges, gt_instances)
        pos_img = torch.cat([torch.full_like(t["pos_idx"], i) for i, t in enumerate(targets)])
        pos_idx = torch.cat([t["pos_idx"] for t in targets])
        outputs = {
            "cls": cls_flat,
            "ctr": ctr_flat[pos_img, pos_idx],
            "coarse": rad_flat[pos_img, pos_idx],
        }
        tgt = {
            "labels": torch.stack([t["labels"] for t in targets]),
            "radii": torch.cat([t["radii"] for t in targets]),
            "centerness": torch.cat([t["centerness"] for t in targets]),
        }
        refine_maps = self.refine_inputs(features, predictions)  # once per step
        if self.refine is not None:
            outputs["fine"] = self.refine_radii(
                refine_maps,
                levels[pos_idx],
                pos_img,
                cells[pos_idx],
                outputs["coarse"],
            )
        if self.contour_classifier is not None:
            outputs["contour_cls"], tgt["contour_cls"] = self._contour_classifier_training(
                features,
                outputs,
                tgt["labels"],
                cells,
                levels,
                pos_img,
                pos_idx,
                rad_flat,
                refine_maps,
            )
        if self.contour is not None and contour_feature is not None:
            outputs["contour"] = self.contour(contour_feature)
            maps = contour_maps or [None] * len(gt_instances)
            tgt["contour"] = self._contour_targets(
                gt_instances, images.image_sizes, outputs["contour"].shape[-2:], maps
            )
        if self.semantic is not None and semantic_feature is not None:
            outputs["semantic"] = self.semantic(semantic_feature)
            maps = semantic_maps or [None] * len(gt_instances)
            tgt["semantic"] = self._semantic_targets(
                gt_instances, images.image_sizes, outputs["semantic"].shape[-2:], maps
            )
        return self.losses(outputs, tgt)

    def _contour_classifier_training(
        self,
        features,
        outputs,
        labels,
        cells,
        levels,
        pos_img,
        pos_idx,
        rad_flat,
        refine_features=None,
    ):
        """Logits (P + N * k, L + 1) of the contour classifier and their targets: the P
        positives (on their refined contour) and, per image, the k background locations of
        highest dense class probability (on their refined contour, computed without gradients).
        Fixed shapes, no host synchronisation."""
        num_images, num_loc = labels.shape
        k = min(self.classifier_negatives, num_loc)
        with torch.no_grad():
            prob = outputs["cls"].detach().float().sigmoid().amax(-1)  # (N, R)
            prob = torch.where(labels == self.num_classes, prob, -1.0)
            neg_idx = prob.topk(k, dim=1).indices.flatten()  # (N * k,)
            neg_img = torch.arange(num_images, device=labels.device).repeat_interleave(k)
            neg_r = rad_flat[neg_img, neg_idx].float()
            if self.refine is not None:
                neg_r = self.refine_radii(
                    refine_features if refine_features is not None else features,
                    levels[neg_idx],
                    neg_img,
                    cells[neg_idx],
                    neg_r,
                )[-1]
        pos_r = outputs["fine"][-1] if "fine" in outputs else outputs["coarse"]
        idx = torch.cat([pos_idx, neg_idx])
        img = torch.cat([pos_img, neg_img])
        logits = self.contour_classifier(
            features, self.strides, levels[idx], img, cells[idx],
            torch.cat([pos_r.detach().float(), neg_r]),
        )  # fmt: skip
        target = torch.cat([labels[pos_img, pos_idx], labels[neg_img, neg_idx]])
        return logits, target

    def refine_stages(self) -> List[PolarRefineModule]:
        """The refine stages in order (empty for PolarMask)."""
        return [] if self.refine is None else [self.refine, *self.extra_refine]

    def refine_radii(self, features, level_idx, image_idx, cells, coarse) -> List[torch.Tensor]:
        """Every refine stage's (P, K) radii. Stage 1 corrects the coarse radii; stage s > 1
        samples on stage s - 1's contour (its radii clamped at 0, as drawn) and corrects them."""
        out, r = [], coarse
        for s, stage in enumerate(self.refine_stages()):
            r = stage(
                features, self.strides, level_idx, image_idx, cells, r.clamp(min=0) if s else r
            )
            out.append(r)
        return out

    def _flat_predictions(self, predictions):
        """Per-level (cls, ctr, coarse) maps -> (N, R, L), (N, R), (N, R, K), all levels."""
        cls_logits, ctr_logits, coarse = predictions[:3]
        dims = [cls_logits[0].shape[1], 1, coarse[0].shape[1]]
        flat = self._transpose_dense_predictions([cls_logits, ctr_logits, coarse], dims)
        cls_flat, ctr_flat, rad_flat = (torch.cat(x, dim=1) for x in flat)
        return cls_flat, ctr_flat[..., 0], rad_flat

    def _loader_contour_map(self, dataset_dict) -> Optional[torch.Tensor]:
        """The loader's boundary map (`PolarDatasetMapper`) if it was drawn as this model would."""
        if (
            self.contour is None
            or "polar_contour" not in dataset_dict
            or dataset_dict.get("polar_contour_stride") != self.contour_stride
            or dataset_dict.get("polar_contour_width") != self.contour_boundary_width
        ):
            return None
        return dataset_dict["polar_contour"]

    def _loader_semantic_map(self, dataset_dict) -> Optional[torch.Tensor]:
        """The loader's category map (`PolarDatasetMapper`) if drawn at this model's stride."""
        if (
            self.semantic is None
            or "polar_semantic" not in dataset_dict
            or dataset_dict.get("polar_semantic_stride") != self.semantic_stride
        ):
            return None
        return dataset_dict["polar_semantic"]

    def _semantic_targets(self, gt_instances, image_sizes, shape_hw, maps) -> torch.Tensor:
        """(N, H, W) long category targets at the semantic level (``num_classes`` = background),
        from the loader's maps where given (else drawn here on the host), padded with background
        to the batch-padded size."""
        height, width = int(shape_hw[0]), int(shape_hw[1])
        out = []
        for inst, size, m in zip(gt_instances, image_sizes, maps):
            if m is None:
                m = semantic_target_map(inst, size, self.semantic_stride)
            m = m.to(self.device)[:height, :width].long()
            out.append(F.pad(m, (0, width - m.shape[1], 0, height - m.shape[0])))
        labels = torch.stack(out) - 1  # map: 0 background, l + 1 category l
        return torch.where(labels < 0, self.num_classes, labels)

    def _contour_targets(self, gt_instances, image_sizes, shape_hw, maps) -> torch.Tensor:
        """(N, 1, H, W) float boundary targets at the contour level, from the loader's maps
        where given (else drawn here on the host), zero-padded to the batch-padded size."""
        height, width = int(shape_hw[0]), int(shape_hw[1])
        out = []
        for inst, size, m in zip(gt_instances, image_sizes, maps):
            if m is None:
                m = contour_target_map(inst, size, self.contour_stride, self.contour_boundary_width)
            m = m.to(self.device)[:height, :width]
            out.append(F.pad(m, (0, width - m.shape[1], 0, height - m.shape[0])))
        return torch.stack(out)[:, None].float()

    def losses(self, outputs: Dict[str, torch.Tensor], targets: Dict[str, torch.Tensor]):
        """The seed's loss, normalised across processes.

        Args:
            outputs: ``cls`` (N, R, L) logits of every location; ``ctr`` (P,) logits,
                ``coarse`` (P, K) radii of the P positives, optionally ``fine``, a list of
                (P, K) radii, one per refine stage; optionally ``contour`` (N, 1, H, W) logits.
            targets: ``labels`` (N, R) (``num_classes`` = background); ``radii`` (P, K);
                ``centerness`` (P,); ``contour`` (N, 1, H, W) with ``outputs["contour"]``;
                ``semantic`` (N, H, W) long with ``outputs["semantic"]`` (N, L, H, W).

        The normalisers (positive count, centre-ness sum, contour cell count) are summed over
        the processes of detectron2's ``launch`` and divided by the world size (AdelaiDet's
        FCOS), then smoothed by an EMA, so each GPU's share counts once whatever it holds.
        Losses are computed in float32 (also under autocast). Nothing here reads values back
        to the host but the diagnostics, written every ``_DIAGNOSTICS_PERIOD`` iterations.
        """
        cls_flat = outputs["cls"].float()
        coarse = outputs["coarse"].float()
        tgt_radii, tgt_ctr = targets["radii"], targets["centerness"]
        num_images, num_pos = cls_flat.shape[0], tgt_radii.shape[0]
        storage = get_event_storage()
        storage.put_scalar("num_pos_locations", num_pos / num_images)
        m = self.loss_normalizer_momentum
        pos = reduce_mean(tgt_ctr.new_tensor(float(num_pos))).clamp(min=1.0)
        ctr_sum = reduce_mean(tgt_ctr.sum()).clamp(min=1e-2)
        norm_pos = self._ema_update("loss_normalizer", pos, pos, m)
        norm_ctr = self._ema_update("ctr_normalizer", ctr_sum, ctr_sum, m)

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
        for s, (fine, stage) in enumerate(zip(outputs.get("fine", []), self.refine_stages())):
            # with no positive the refine module's weights are unused: keep them in the graph
            # (DDP) by a zero made from the parameters, which are finite, not from activations
            fine_loss = radius_loss(fine.float(), tgt_radii, tgt_ctr, self.negative_ray_gradient)
            key = "loss_fine" if s == 0 else f"loss_fine{s + 1}"
            losses[key] = fine_loss / norm_ctr + zero_like_params(stage)
        if "contour" in outputs:
            tgt = targets["contour"]
            count = reduce_mean(tgt.sum()).clamp(min=1.0)
            losses["loss_contour"] = self.contour_loss_weight * contour_loss(
                outputs["contour"].float(),
                tgt,
                self.focal_loss_alpha,
                self.focal_loss_gamma,
                normalizer=count,
            )
        if "contour_cls" in outputs:
            logits = outputs["contour_cls"].float()
            count = reduce_mean(logits.new_tensor(float(logits.shape[0]))).clamp(min=1.0)
            ce = F.cross_entropy(logits, targets["contour_cls"], reduction="sum")
            losses["loss_contour_cls"] = self.classifier_loss_weight * ce / count
        if "semantic" in outputs:
            tgt = targets["semantic"]
            count = reduce_mean((tgt < self.num_classes).sum().float()).clamp(min=1.0)
            losses["loss_semantic"] = self.semantic_loss_weight * semantic_loss(
                outputs["semantic"].float(),
                tgt,
                self.focal_loss_alpha,
                self.focal_loss_gamma,
                normalizer=count,
            )
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
        cls_logits, ctr_logits, coarse = predictions[:3]
        cand = self._select_candidates(cls_logits, ctr_logits, coarse)
        img_idx, level, cells, cls_prob, ctr_prob, classes, r_coarse = cand
        r_fine = r_coarse
        if self.refine is not None:
            r_fine = self.refine_radii(
                self.refine_inputs(features, predictions), level, img_idx, cells, r_coarse
            )[-1]
        if self.contour_classifier is not None:
            # re-classify from the contour: category argmax_l q_l, probability sqrt(p * q_l)
            q = self.contour_classifier(features, self.strides, level, img_idx, cells, r_fine)
            q_best, classes = q.float().softmax(-1)[:, : self.num_classes].max(1)
            cls_prob = (cls_prob * q_best).sqrt()
        strides = torch.tensor(self.strides, device=cells.device, dtype=torch.float32)[level]
        centers = (cells + 0.5) * strides[:, None]
        scores = cls_prob * ctr_prob
        results = []
        for i, size in enumerate(images.image_sizes):
            sel = img_idx == i
            results.append(
                self.inference_single_image(
                    centers[sel], r_coarse[sel], r_fine[sel], scores[sel], classes[sel], tuple(size)
                )
            )
        return results

    def _select_candidates(self, cls_logits, ctr_logits, coarse):
        """Per image and level: class probability > threshold, at most top-k (flattened), the
        top-k by class probability or, with ``candidate_score == "class_x_centre"``, by class x
        centre probability.

        detectron2's dense-detector rule: threshold, then top-k of the kept in descending
        probability, with k = min(top-k, kept) taken from tensor shapes so that a trace keeps it
        dynamic (no Python branch on values).

        Args:
            cls_logits, ctr_logits, coarse: per level (N, L, H, W), (N, 1, H, W), (N, K, H, W).

        Returns:
            img_idx (P,), level (P,), cells (P, 2) (x, y) in cells of the level, cls_prob (P,),
            ctr_prob (P,), classes (P,) long, coarse radii (P, K).
        """
        out = [[] for _ in range(7)]
        topk = self.test_topk_candidates
        for lvl, (cl, ct, rd) in enumerate(zip(cls_logits, ctr_logits, coarse)):
            num_cls, w = cl.shape[1], cl.shape[3]
            probs = cl.flatten(2).sigmoid()  # (N, L, HW)
            for i in range(len(probs)):
                p = probs[i].t().flatten()  # (HW * L,) location-major
                keep = (p > self.test_score_thresh).nonzero().flatten()
                num = keep.shape[0]  # a tensor while tracing
                k = torch.clamp(num, max=topk) if isinstance(num, torch.Tensor) else min(num, topk)
                if self.candidate_score == "class":
                    prob, top = p[keep].topk(k)
                else:  # rank by class x centre probability, as the seed and PolarMask score
                    rank = (probs[i] * ct[i, 0].flatten().sigmoid()[None]).t().flatten()
                    top = rank[keep].topk(k).indices
                    prob = p[keep][top]
                keep = keep[top]
                loc = keep // num_cls
                out[0].append(torch.full_like(loc, i))
                out[1].append(torch.full_like(loc, lvl))
                out[2].append(torch.stack([loc % w, loc // w], 1).float())
                out[3].append(prob)
                out[4].append(ct[i, 0].flatten()[loc].sigmoid())
                out[5].append(keep % num_cls)
                out[6].append(rd[i].flatten(1)[:, loc].t())
        return [torch.cat(x) for x in out]

    def inference_single_image(
        self,
        centers: torch.Tensor,
        r_coarse: torch.Tensor,
        r_fine: torch.Tensor,
        scores: torch.Tensor,
        classes: torch.Tensor,
        image_size: Tuple[int, int],
    ) -> Instances:
        """Polygons, class-aware NMS (on their boxes, or with ``nms_type == "shape"`` on the
        polygons themselves, `shape_nms`), at most ``max_detections_per_image``.

        Args:
            centers: (P, 2) input pixels; r_coarse, r_fine: (P, K); scores, classes: (P,).

        Returns:
            Instances at ``image_size`` with ``pred_polygons``, ``pred_coarse_polygons``,
            ``pred_boxes`` (polygon extents), ``scores``, ``pred_classes``.
        """
        polys = radii_to_points(centers, r_fine.clamp(min=0))
        h, w = image_size  # ints, or 0-dim tensors while tracing
        # Locations in the batch padding are not in the image; non-finite outputs are dropped.
        # (Always indexed, never branched on, so that a trace keeps the filter.)
        keep = torch.isfinite(polys).flatten(1).all(1) & torch.isfinite(scores)
        keep = keep & (centers[:, 0] < w) & (centers[:, 1] < h)
        polys, scores, classes = polys[keep], scores[keep], classes[keep]
        centers, r_coarse, r_fine = centers[keep], r_coarse[keep], r_fine[keep]
        if self.nms_type == "shape":  # the seed's NMS on the edge shapes (eager only)
            keep = shape_nms(
                centers,
                r_fine,
                scores,
                classes,
                self.test_nms_thresh,
                max_keep=self.max_detections_per_image,
            )
        else:
            boxes = polygons_to_boxes(polys)
            keep = batched_nms_polygons(boxes, scores, classes, self.test_nms_thresh)
        keep = keep[: self.max_detections_per_image]
        res = Instances(image_size)
        res.pred_polygons = polys[keep]
        res.pred_coarse_polygons = radii_to_points(centers[keep], r_coarse[keep].clamp(min=0))
        res.scores = scores[keep]
        res.pred_classes = classes[keep]
        return res
