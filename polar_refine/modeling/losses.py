# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""PolarRefine losses: L = L_cls + L_ctr + alpha * L_coarse + L_fine + L_contour."""

from typing import Optional

import torch
import torch.nn.functional as F
from detectron2.utils import comm
from fvcore.nn import sigmoid_focal_loss_jit

from ..polar import polar_iou_loss

__all__ = [
    "classification_loss",
    "centerness_loss",
    "radius_loss",
    "contour_loss",
    "reduce_mean",
    "zero_like_params",
]


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_classes: int, alpha: float, gamma: float
) -> torch.Tensor:
    """Sigmoid focal loss, summed. logits (R, L); labels (R,) with ``num_classes`` = background."""
    target = F.one_hot(labels, num_classes + 1)[:, :num_classes].to(logits.dtype)
    return sigmoid_focal_loss_jit(logits, target, alpha=alpha, gamma=gamma, reduction="sum")


def centerness_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE of the centre logits (P,) against the polar centerness targets (P,), summed."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction="sum")


def radius_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Polar IoU loss of (P, K) radii, weighted by the (P,) centerness targets, summed.

    Radii below 0 (possible after a refine stage's correction) are read as 0. Non-finite
    predictions are zeroed (with zero gradient) so one bad row cannot poison the batch.
    """
    finite = torch.isfinite(pred).all(1)
    pred = torch.where(finite[:, None], pred, pred.detach().nan_to_num(0.0, 0.0, 0.0))
    return polar_iou_loss(pred, target, weight=weight * finite, reduction="sum")


def contour_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    normalizer: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Focal loss of boundary logits (N, 1, H, W) against {0, 1} targets, divided by the number of
    boundary cells (at least 1) unless ``normalizer`` (a number or a 0-d tensor) is given."""
    loss = sigmoid_focal_loss_jit(logits, target, alpha=alpha, gamma=gamma, reduction="sum")
    n = normalizer if normalizer is not None else target.sum().clamp(min=1.0)
    return loss / n


def zero_like_params(module: torch.nn.Module) -> torch.Tensor:
    """A zero connected to every parameter of ``module`` (so DDP sees them all used).

    Made from one element of each parameter, not from activations: a dense ``x.sum() * 0``
    over prediction maps turns a single inf (e.g. an fp16 overflow) into a NaN loss.
    """
    return sum(p.reshape(-1)[:1].sum() for p in module.parameters()) * 0.0


def reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Sum of a (detached) tensor over the processes of detectron2's ``launch``, divided by the
    world size; ``x`` itself in a single process. Used for the loss normalisers."""
    world = comm.get_world_size()
    x = x.detach()
    if world == 1:
        return x
    x = x.clone()
    torch.distributed.all_reduce(x)
    return x / world
