# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""The location grid of every level: where the dense head's outputs sit in the image."""

from typing import List, NamedTuple, Sequence, Tuple

import torch

__all__ = ["Locations", "LocationGenerator", "level_size_ranges"]


def level_size_ranges(strides: Sequence[int], sizes_of_interest: Sequence[float]) -> List[Tuple]:
    """Per-level (low, high) object-size ranges; the last level is open-ended.

    ``sizes_of_interest`` gives the L - 1 upper bounds; with a different length the bounds are
    derived from the strides as ``8 * stride`` (FCOS's rule).
    """
    n = len(strides)
    bounds = list(sizes_of_interest)
    if len(bounds) != n - 1:
        bounds = [8.0 * s for s in strides[:-1]]
    lows = [0.0] + [float(b) for b in bounds]
    highs = [float(b) for b in bounds] + [float("inf")]
    return list(zip(lows, highs))


class Locations(NamedTuple):
    """Every location of every level, finest level first, row-major within a level (R in all).

    Each field is indexed by the location's index r in [0, R): the index the head's flattened
    outputs use (`DenseDetector._transpose_dense_predictions`).
    """

    points: (
        torch.Tensor
    )  # (R, 2) float: cell centre (x, y) in input pixels, ((j + .5) d, (i + .5) d)
    cells: torch.Tensor  # (R, 2) float: (j, i), the location in cells of its level
    strides: torch.Tensor  # (R,) float: the stride d of its level
    levels: torch.Tensor  # (R,) long: its level
    map_sizes: torch.Tensor  # (R, 2) long: (W, H) of its level's map
    level_starts: torch.Tensor  # (R,) long: index of its level's first location
    size_ranges: torch.Tensor  # (R, 2) float: (low, high) object size its level handles


class LocationGenerator:
    """Builds `Locations` from the head's input maps (FCOS's and the patent's grid: one location
    per feature cell, at the cell's centre).

    Everything is made on the maps' device from Python scalars and ``arange`` (no tensor is
    copied from the host), and map sizes come from the maps' shapes, so a trace keeps them
    dynamic.
    """

    def __init__(self, strides: Sequence[int], sizes_of_interest: Sequence[float]):
        """
        Args:
            strides: per level, its stride in input pixels.
            sizes_of_interest: see `level_size_ranges`.
        """
        self.strides = [int(s) for s in strides]
        self.size_ranges = level_size_ranges(self.strides, sizes_of_interest)

    def __call__(self, features: List[torch.Tensor]) -> Locations:
        """
        Args:
            features: per level (N, C, H_l, W_l); only their shapes and device are read.
        """
        fields = [[] for _ in Locations._fields]
        start = 0
        for lvl, (f, s) in enumerate(zip(features, self.strides)):
            h, w = f.shape[-2:]  # ints, or 0-dim tensors while tracing
            ys, xs = torch.meshgrid(
                torch.arange(h, device=f.device, dtype=torch.float32),
                torch.arange(w, device=f.device, dtype=torch.float32),
                indexing="ij",
            )
            cells = torch.stack([xs.flatten(), ys.flatten()], 1)
            zero = torch.zeros_like(cells[:, 0])
            izero = zero.long()
            lo, hi = self.size_ranges[lvl]
            for out, value in zip(
                fields,
                (
                    (cells + 0.5) * s,
                    cells,
                    zero + s,
                    izero + lvl,
                    torch.stack([izero + w, izero + h], 1),
                    izero + start,
                    torch.stack([zero + lo, zero + hi], 1),
                ),
            ):
                out.append(value)
            start = start + h * w
        return Locations(*(torch.cat(x) for x in fields))
