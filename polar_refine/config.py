# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""The ``MODEL.POLAR_REFINE`` config node.

`add_polar_refine_config` adds the node to the cfg it is given; detectron2's global defaults
(``detectron2.config.defaults._C``) are never touched.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_polar_refine_config", "contour_in_feature"]


def add_polar_refine_config(cfg: CN) -> CN:
    """Add ``MODEL.POLAR_REFINE`` (and its sub-nodes) to ``cfg`` in place, and return it.

    Calling it twice is harmless: existing values are kept.
    """
    if "POLAR_REFINE" in cfg.MODEL:
        return cfg
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    _C = cfg
    _C.MODEL.POLAR_REFINE = CN()
    node = _C.MODEL.POLAR_REFINE
    # Number of foreground categories (L in the patent).
    node.NUM_CLASSES = 80
    # Backbone features the head reads, finest first. Their strides and channels come from the
    # backbone's output_shape(); any registered backbone works if its feature names are listed.
    node.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # K: number of rays, evenly spaced 2*pi/K apart, ray 0 along +y (the patent's formula (1)).
    node.NUM_RAYS = 36
    # Number of 3x3 convs in each of the classification and regression towers.
    node.NUM_CONVS = 4
    # Channels of the tower convs; 0 means "same as the input feature channels".
    node.HEAD_CHANNELS = 0
    # Normalisation in the towers: "GN", "BN", "SyncBN", "" (none)...
    node.NORM = "GN"
    # Initial foreground probability of the classification logits (focal-loss prior).
    node.PRIOR_PROB = 0.01
    # Centre sampling: positives lie within RADIUS * stride of the mass centre (clipped to the box).
    node.CENTER_SAMPLE_RADIUS = 1.5
    # Upper bounds of the object size (largest centre-to-box distance, input pixels) handled by
    # each level but the last; the last level takes everything larger. Must have
    # len(IN_FEATURES) - 1 entries; if not, ranges are derived from the strides (8 * stride).
    node.SIZES_OF_INTEREST = [64, 128, 256, 512]
    # Sigmoid focal loss for the category logits.
    node.FOCAL_LOSS_ALPHA = 0.25
    node.FOCAL_LOSS_GAMMA = 2.0
    # The patent's alpha: weight of the coarse polar IoU loss (L_coarse); the fine loss has 1.
    node.COARSE_LOSS_WEIGHT = 1.0
    # Weight of the centre-confidence BCE loss.
    node.CENTERNESS_LOSS_WEIGHT = 1.0
    # Momentum of the EMA of the positive count that normalises the losses (as detectron2 FCOS).
    node.LOSS_NORMALIZER_MOMENTUM = 0.9
    # Radii are predicted as exp(scale_l * x) with a learnable scale per level; x is clamped to
    # this value first so exp() cannot overflow (and radii stay bounded).
    node.MAX_LOG_RADIUS = 10.0
    # Inference: keep candidates whose score sqrt(class x centre probability) exceeds this, per
    # level, and return only detections whose score (SCORE_FROM) exceeds it.
    node.SCORE_THRESH_TEST = 0.05
    # Inference: at most this many candidates per level (before refinement and NMS).
    node.TOPK_CANDIDATES_TEST = 1000
    # Inference: class-aware NMS IoU threshold.
    node.NMS_THRESH_TEST = 0.5
    # Inference: what the NMS IoU is measured on. "box": the polygons' boxes (one torchvision
    # NMS call; exportable). "shape": the polygons themselves, the patent's NMS on the edge shapes
    # (polar_refine.modeling.shape_nms: exact areas, the intersection counted on a 16x16 grid over
    # each pair's intersection box, within 0.07 of the exact IoU (mean 0.007); only pairs whose
    # exact IoU bound passes the threshold, only against kept candidates, stopping at
    # TEST.DETECTIONS_PER_IMAGE kept; eager only, not exportable yet).
    node.NMS_TYPE = "box"
    # Inference: what scores a candidate (the returned score, ranked by NMS, thresholded at
    # SCORE_THRESH_TEST), on the probability scale as detectron2's FCOS: the square root of
    # the product, which orders detections as the product does. "center": category x centre
    # probability at its location (PolarMask's and FCOS's rule). "covered": the patent's
    # segmentation confidence, the mean of category x centre probability over the locations its
    # fine polygon covers on its level; the final class is then the covered locations' vote
    # (polar_refine.modeling.candidates).
    node.SCORE_FROM = "center"

    # Refine regression module (the patent's coarse-to-fine strategy).
    node.REFINE = CN()
    # Turn refinement on (r = r_coarse + delta_r). Off reproduces PolarMask.
    node.REFINE.ENABLED = True
    # Detach the coarse radii before computing the sampling points, so L_fine does not push the
    # coarse branch through the sampling coordinates.
    node.REFINE.DETACH_COARSE = True
    # Number of refine stages (the patent has 1; its Table-1 configs pin it): stage s samples the
    # FPN levels on stage s-1's contour and adds its own correction, each with its own polar IoU
    # loss (loss_fine, loss_fine2, ...) and K * (C + 1) parameters (docs/BENCHMARKS.md).
    node.REFINE.NUM_STAGES = 3

    # Global contour perception head (training only; never run at inference).
    node.CONTOUR = CN()
    # Turn the contour head and its loss on.
    node.CONTOUR.ENABLED = True
    # Feature the contour head reads; "" means the largest (finest) of IN_FEATURES.
    node.CONTOUR.IN_FEATURE = ""
    # Output channels of its 3x3 convs (the patent: 128, 64, 64, 64), then one logit channel.
    node.CONTOUR.CHANNELS = [128, 64, 64, 64]
    # Weight of the contour focal loss (L_contour / L_hbb).
    node.CONTOUR.LOSS_WEIGHT = 1.0
    # Width in feature-map pixels of the boundary band drawn from the instance masks.
    node.CONTOUR.BOUNDARY_WIDTH = 1

    # Contour deformation (polar_refine.modeling.deform): after NMS, the kept refined polar
    # contours are resampled to NUM_POINTS points along their length and moved freely (2-D
    # offsets), so shapes that are not star-shaped from their centre (a C, a U) can be drawn.
    node.DEFORM = CN()
    # Turn the deformation stages on. Training with them trains them alone on a trained model
    # (MODEL.WEIGHTS, e.g. the default's model_final.pth): every other parameter is frozen and
    # only their loss is computed, so they learn on the features and contours they
    # meet at test time.
    node.DEFORM.ENABLED = False
    # N: points of the deformed contour, evenly spaced along the polar one.
    node.DEFORM.NUM_POINTS = 64
    # Local stages applied in turn, each with its own loss (loss_deform, loss_deform2, ...).
    node.DEFORM.NUM_STAGES = 2
    # Width of the global stage that moves every point first, from the whole contour's shape
    # (an MLP over the points' positions: what carves a C's hole); 0: no global stage.
    node.DEFORM.GLOBAL_DIM = 0
    # Width of the free initial contour regressed at every location (trained with the model;
    # the stages start from it instead of the polar contour); 0: none.
    node.DEFORM.INIT_DIM = 0
    node.DEFORM.INIT_LOSS_WEIGHT = 1.0
    # Width of the per-point features, and the circular 1-D convolutions along the contour.
    node.DEFORM.HIDDEN_DIM = 64
    node.DEFORM.KERNEL_SIZE = 9
    node.DEFORM.NUM_CONVS = 2
    # Weight of each stage's loss (matching plus one-to-one; the only loss while they train, so it
    # scales their learning rate).
    node.DEFORM.LOSS_WEIGHT = 20.0
    # Huber threshold of both terms of that loss, a fraction of the object's size (0: plain L1).
    node.DEFORM.HUBER_BETA = 0.05

    # Name of the head in POLAR_HEAD_REGISTRY, so other projects can swap it.
    node.HEAD_NAME = "PolarRefineHead"
    if was_frozen:
        cfg.freeze()
    return cfg


def contour_in_feature(cfg: CN, input_shape) -> str:
    """The backbone feature the contour head reads: ``CONTOUR.IN_FEATURE``, else the finest of
    ``IN_FEATURES`` by the strides of ``input_shape`` (the backbone's ``output_shape()``)."""
    pr = cfg.MODEL.POLAR_REFINE
    return pr.CONTOUR.IN_FEATURE or min(pr.IN_FEATURES, key=lambda f: input_shape[f].stride)
