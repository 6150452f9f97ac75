"""Table 1 of the patent, "model 1" (R-50): one refine stage, no contour head, COCO 1x.

The LazyConfig twin of ``polar_refine_R_50_FPN_1x.yaml``; the rest as
``polar_refine_contour_R_50_FPN_1x.py``.
"""

from .polar_refine_contour_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.contour = None
dataloader.train.mapper.contour_stride = 0  # no contour head: no boundary map
train.output_dir = "./output/polar_refine_R_50_FPN_1x_lazy"
