"""Table 1 of the patent, row "PolarMask" (R-50): coarse radii only, COCO 1x.

The LazyConfig twin of ``polarmask_R_50_FPN_1x.yaml``; the rest as
``polar_refine_plus_R_50_FPN_1x.py``.
"""

from .polar_refine_plus_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.refiner = None
model.contour = None
dataloader.train.mapper.contour_stride = 0  # no contour head: no boundary map
train.output_dir = "./output/polarmask_R_50_FPN_1x_lazy"
