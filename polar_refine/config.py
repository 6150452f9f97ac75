"""The ``MODEL.POLAR_REFINE`` config node.

`add_polar_refine_config` adds the node to the cfg it is given; detectron2's global defaults
(``detectron2.config.defaults._C``) are never touched.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_polar_refine_config"]


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
    # Number of foreground categories (L in the seed).
    node.NUM_CLASSES = 80
    # Backbone features the head reads, finest first. Their strides and channels come from the
    # backbone's output_shape(); any registered backbone works if its feature names are listed.
    node.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # K: number of rays, evenly spaced 2*pi/K apart, ray 0 along +y (seed formula (1)).
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
    # Centre-ness target of a fallback positive that lies outside its object (tiny or thin
    # objects with no location inside): "zero" (the polar centre-ness of its radii, 0 because
    # some rays miss the object, which also zeroes its regression weight and, at test time,
    # suppresses it through class x centre scoring) or "hit_rays" (centre-ness of the rays that
    # meet the object).
    node.FALLBACK_CENTERNESS = "zero"
    # Upper bounds of the object size (largest centre-to-box distance, input pixels) handled by
    # each level but the last; the last level takes everything larger. Must have
    # len(IN_FEATURES) - 1 entries; if not, ranges are derived from the strides (8 * stride).
    node.SIZES_OF_INTEREST = [64, 128, 256, 512]
    # Sigmoid focal loss for the category logits.
    node.FOCAL_LOSS_ALPHA = 0.25
    node.FOCAL_LOSS_GAMMA = 2.0
    # The seed's alpha: weight of the coarse polar IoU loss (L_coarse). The fine loss has weight 1.
    node.COARSE_LOSS_WEIGHT = 1.0
    # Weight of the centre-confidence BCE loss.
    node.CENTERNESS_LOSS_WEIGHT = 1.0
    # Momentum of the EMA of the positive count that normalises the losses (as detectron2 FCOS).
    node.LOSS_NORMALIZER_MOMENTUM = 0.9
    # Radii are predicted as exp(scale_l * x) with a learnable scale per level; x is clamped to
    # this value first so exp() cannot overflow (and radii stay bounded).
    node.MAX_LOG_RADIUS = 10.0
    # Inference: keep candidates whose class probability exceeds this, per level.
    node.SCORE_THRESH_TEST = 0.05
    # Inference: at most this many candidates per level (before refinement and NMS).
    node.TOPK_CANDIDATES_TEST = 1000
    # Inference: class-aware NMS IoU threshold.
    node.NMS_THRESH_TEST = 0.5
    # Inference: what the NMS IoU is measured on. "box": the polygons' boxes (one torchvision
    # NMS call; exportable). "shape": the polygons themselves, the seed's NMS on the edge shapes
    # (polar_refine.modeling.shape_nms: exact areas, the intersection counted on a 16x16 grid over
    # each pair's intersection box, within 0.07 of the exact IoU (mean 0.007); only pairs whose
    # exact IoU bound passes the threshold, only against kept candidates, stopping at
    # TEST.DETECTIONS_PER_IMAGE kept; eager only, not exportable yet).
    node.NMS_TYPE = "box"
    # Inference: the top-k of each level's candidates (those above SCORE_THRESH_TEST) ranks by
    # "class" probability, or by "class_x_centre" (class x centre probability, the final score;
    # the seed's segmentation confidence and PolarMask's rule).
    node.CANDIDATE_SCORE_TEST = "class"

    # Refine regression module (the seed's coarse-to-fine strategy).
    node.REFINE = CN()
    # Turn refinement on (r = r_coarse + delta_r). Off reproduces PolarMask.
    node.REFINE.ENABLED = True
    # Detach the coarse radii before computing the sampling points, so L_fine does not push the
    # coarse branch through the sampling coordinates.
    node.REFINE.DETACH_COARSE = True
    # Clamp of the sampling coordinates in grid_sample's normalised [-1, 1] frame. Points farther
    # out read zeros; the clamp also keeps NaN/huge radii from reaching grid_sample.
    node.REFINE.GRID_CLAMP = 2.0
    # The polar IoU loss reads radii clamped at 0, so a refined ray that goes negative gets no
    # gradient and can stay dead. True: the clamp is straight-through in the fine loss (same
    # value; a negative ray gets the gradient of a ray of length 0).
    node.REFINE.NEGATIVE_RAY_GRADIENT = False
    # Number of refine stages (the seed has 1): stage s samples the features on stage s-1's
    # contour and adds its own correction; every stage has its own polar IoU loss (loss_fine,
    # loss_fine2, ...). Each stage holds K * (C + 1) parameters. 3 won the 3-seed ablation
    # (README, issue 11): +2.5 segm AP on shapes, a tie on dsb2018, 3.5 % of inference.
    node.REFINE.NUM_STAGES = 3
    # What the refine stages sample at the contour points, concatenated along channels: "fpn"
    # (the head's input FPN levels, the seed) and/or "reg_tower" (the output of the head's
    # regression tower, already computed for the coarse radii; same cost per stage).
    node.REFINE.FEATURES = ["fpn"]

    # Global contour perception head (training only; never run at inference).
    node.CONTOUR = CN()
    # Turn the contour head and its loss on.
    node.CONTOUR.ENABLED = True
    # Feature the contour head reads; "" means the largest (finest) of IN_FEATURES.
    node.CONTOUR.IN_FEATURE = ""
    # Output channels of its 3x3 convs (the seed: 128, 64, 64, 64), then one logit channel.
    node.CONTOUR.CHANNELS = [128, 64, 64, 64]
    # Weight of the contour focal loss (L_contour / L_hbb).
    node.CONTOUR.LOSS_WEIGHT = 1.0
    # Width in feature-map pixels of the boundary band drawn from the instance masks.
    node.CONTOUR.BOUNDARY_WIDTH = 1
    # Upsampling factor (bilinear) of the contour tower's output before the boundary logits, so
    # the boundary map is predicted and drawn at stride / UPSAMPLE (1: the seed, at the feature's
    # stride). A finer map asks the feature for sub-cell boundary positions.
    node.CONTOUR.UPSAMPLE = 1

    # Training-only semantic head (beyond the seed; CondInst's auxiliary semantic loss): per cell
    # of one level, L category logits against the instance masks' categories (sigmoid focal loss
    # normalised by the count of object cells). Never run at inference.
    node.SEMANTIC = CN()
    # Turn the semantic head and its loss on.
    node.SEMANTIC.ENABLED = False
    # Feature it reads; "" means the finest of IN_FEATURES.
    node.SEMANTIC.IN_FEATURE = ""
    # Output channels of its 3x3 convs, then L logit channels.
    node.SEMANTIC.CHANNELS = [128, 128]
    # Weight of its focal loss (loss_semantic).
    node.SEMANTIC.LOSS_WEIGHT = 1.0

    # Contour classifier (beyond the seed): re-classifies the candidates from features sampled on
    # their own contour (mean, max, and at the location) and the contour's shape (radii / mean,
    # log scale), with an MLP to L + 1 logits; trained with cross-entropy on the positives and
    # the hardest negatives of the dense classifier. At test time a candidate takes the argmax
    # category q_l of its L probabilities and the score sqrt(p * q_l) x centre (p: its dense
    # probability).
    node.CONTOUR_CLASSIFIER = CN()
    # Turn it and its loss (loss_contour_cls) on.
    node.CONTOUR_CLASSIFIER.ENABLED = False
    # Width of the MLP's hidden layer.
    node.CONTOUR_CLASSIFIER.HIDDEN_DIM = 128
    # Background locations per image it is trained on: those of highest dense class probability.
    node.CONTOUR_CLASSIFIER.NEGATIVES_PER_IMAGE = 32
    # Weight of its cross-entropy loss.
    node.CONTOUR_CLASSIFIER.LOSS_WEIGHT = 1.0

    # Compute the annotation-only polar targets (polygon edges, mass centres, areas, contour and
    # semantic maps) in the data-loader workers with PolarDatasetMapper (PolarRefineTrainer's
    # loader). False: detectron2's DatasetMapper, and the model computes them in the training loop.
    node.TARGETS_IN_LOADER = True

    # Name of the head in POLAR_HEAD_REGISTRY, so other projects can swap it.
    node.HEAD_NAME = "PolarRefineHead"
    if was_frozen:
        cfg.freeze()
    return cfg
