"""PolarRefine+ R-50-FPN as a LazyConfig ``model``: three refine stages + the contour head.

Mirrors ``configs/Base-PolarRefine.yaml`` with ``MODEL.RESNETS.DEPTH 50``: detectron2's
RetinaNet-style ResNet-FPN (``common/models/retinanet.py``: P3-P5 from C3-C5, P6/P7 from C5,
256 channels, FrozenBN), the polar head on P3-P7 (4 convs per tower, GN), the refine module and
the training-only contour head on P3. ``tests/test_lazyconfig.py`` checks that the model built
from here has exactly the parameters of the one built from the YAML twin.

Set ``model.num_classes`` (the head and the assigner follow it); ``model.refiner.num_stages = 1``
gives the patent's single stage, ``model.refiner = None`` coarse radii only (PolarMask), and
``model.contour = None`` drops the contour head.
"""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config

from polar_refine.modeling import (
    ContourHead,
    PolarRefine,
    PolarRefineHead,
    PolarRefiner,
    PolarTargetAssigner,
)

# detectron2's RetinaNet backbone: ResNet-50 (FrozenBN, stride in 1x1) + FPN with P6/P7 from C5,
# exactly what MODEL.BACKBONE.NAME "build_retinanet_resnet_fpn_backbone" builds from the YAML.
_retinanet = get_config("common/models/retinanet.py").model
_backbone = _retinanet.backbone
_backbone.bottom_up.freeze_at = 2  # MODEL.BACKBONE.FREEZE_AT (detectron2's default)

model = L(PolarRefine)(
    backbone=_backbone,
    head=L(PolarRefineHead)(
        # one ShapeSpec per level of head_in_features (P3-P7): channels and stride
        input_shape=[ShapeSpec(channels=256, stride=s) for s in (8, 16, 32, 64, 128)],
        num_classes="${..num_classes}",
        num_convs=4,
        channels=0,  # 0: the FPN width
        norm="GN",
        prior_prob=0.01,
        max_log_radius=10.0,
    ),
    head_in_features=["p3", "p4", "p5", "p6", "p7"],
    assigner=L(PolarTargetAssigner)(num_classes="${..num_classes}", center_sample_radius=1.5),
    refiner=L(PolarRefiner)(in_channels=256, num_rays=36, num_stages=3, detach_coarse=True),
    contour=L(ContourHead)(
        input_shape=ShapeSpec(channels=256, stride=8),  # P3
        in_feature="p3",
        channels=[128, 64, 64, 64],
        boundary_width=1,
        loss_weight=1.0,
        focal_loss_alpha=0.25,
        focal_loss_gamma=2.0,
    ),
    num_classes=80,
    sizes_of_interest=[64, 128, 256, 512],
    focal_loss_alpha=0.25,
    focal_loss_gamma=2.0,
    coarse_loss_weight=1.0,
    centerness_loss_weight=1.0,
    loss_normalizer_momentum=0.9,
    test_score_thresh=0.05,
    test_topk_candidates=1000,
    test_nms_thresh=0.5,
    nms_type="box",
    score_from="center",
    max_detections_per_image=100,
    mask_on=True,
    # MSRA (caffe2) ImageNet weights: BGR, std absorbed into conv1 (detectron2's YAML default)
    pixel_mean=[103.530, 116.280, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
)
