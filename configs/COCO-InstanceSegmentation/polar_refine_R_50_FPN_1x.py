"""Table 1, "model 1" (R-50): refine module, no contour head, COCO 1x.

The LazyConfig twin of ``polar_refine_R_50_FPN_1x.yaml``; the rest as
``polar_refine_contour_R_50_FPN_1x.py``.
"""

from .polar_refine_contour_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.contour = None
train.output_dir = "./output/polar_refine_R_50_FPN_1x_lazy"
