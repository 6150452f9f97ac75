"""Table 1, row "PolarMask" (R-50): coarse radii only, COCO 1x.

The LazyConfig twin of ``polarmask_R_50_FPN_1x.yaml``; the rest as
``polar_refine_contour_R_50_FPN_1x.py``.
"""

from .polar_refine_contour_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.refine = None
model.extra_refine = []
model.contour = None
train.output_dir = "./output/polarmask_R_50_FPN_1x_lazy"
