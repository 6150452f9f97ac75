"""PolarRefine+ (R-101), the default: three refine stages + the contour head, COCO 1x.

The LazyConfig twin of ``polar_refine_plus_R_101_FPN_1x.yaml``:
``polar_refine_plus_R_50_FPN_1x.py`` with a ResNet-101 and its ImageNet weights.
"""

from .polar_refine_plus_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
train.output_dir = "./output/polar_refine_plus_R_101_FPN_1x_lazy"
