"""The patent's refine operator written literally, a test oracle for `PolarRefineStage`.

Sample the C channels of the location's level at its K contour points with ``grid_sample``,
stack them into a K*C contour feature, apply the grouped 1x1 conv (one C->1 map per ray), scale
by the stride. Slow (a loop over levels and images), and exactly what the fast path must equal.
"""

import torch
import torch.nn.functional as F

from polar_refine.modeling.refine import contour_sampling_points


def refine_reference(stage, features, locs, location, image, radii, detach=True):
    """Same arguments and result as ``PolarRefineStage.forward``."""
    r = radii.detach() if detach else radii
    out = r.new_zeros(r.shape[0], stage.num_rays)
    levels = locs.levels[location]
    for level, feat in enumerate(features):
        sel = (levels == level).nonzero().flatten()
        if sel.numel() == 0:
            continue
        h, w = feat.shape[-2:]
        loc = location[sel]
        pts = contour_sampling_points(
            locs.cells[loc], r[sel], stage.directions, locs.strides[loc], locs.map_sizes[loc]
        )
        grid = (pts + 0.5) * pts.new_tensor([2.0 / w, 2.0 / h]) - 1.0
        ctx = r.new_zeros(sel.numel(), stage.num_rays, feat.shape[1])
        for i in torch.unique(image[sel]).tolist():
            m = (image[sel] == i).nonzero().flatten()
            sampled = F.grid_sample(
                feat[i : i + 1], grid[m][None], mode="bilinear", align_corners=False
            )  # (1, C, P_i, K)
            ctx[m] = sampled[0].permute(1, 2, 0)
        d = stage.delta(ctx.reshape(sel.numel(), -1, 1)).squeeze(-1)  # one C->1 map per ray
        out[sel] = d * locs.strides[loc][:, None]
    return radii + out
