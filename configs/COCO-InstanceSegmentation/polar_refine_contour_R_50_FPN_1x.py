"""Table 1 of the patent, "model 2" (R-50): one refine stage + the contour head, COCO 1x.

The LazyConfig twin of ``polar_refine_contour_R_50_FPN_1x.yaml``; the rest as
``polar_refine_plus_R_50_FPN_1x.py``.
"""

from .polar_refine_plus_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.refiner.num_stages = 1  # the patent's
train.output_dir = "./output/polar_refine_contour_R_50_FPN_1x_lazy"
