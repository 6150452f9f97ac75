# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""ResNet-FPN with P6/P7 built from P5, as the patent, PolarMask and detectron2's FCOS do."""

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelP6P7
from detectron2.modeling.backbone.resnet import build_resnet_backbone

__all__ = ["build_polar_resnet_fpn_backbone"]


@BACKBONE_REGISTRY.register()
def build_polar_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """detectron2's ``build_retinanet_resnet_fpn_backbone`` with the top block reading P5.

    RetinaNet computes P6 from C5 (the last ResNet stage, 2048 channels for R-50); FCOS,
    PolarMask and the patent compute it from P5 (the FPN output, ``MODEL.FPN.OUT_CHANNELS``
    channels). P7 is a stride-2 conv of ReLU(P6) in both.
    """
    bottom_up = build_resnet_backbone(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(out_channels, out_channels, in_feature="p5"),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
