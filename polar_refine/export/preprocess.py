# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""Test-time input preparation shared by the exporter and the exported-model predictors."""

import numpy as np
from detectron2.data import transforms as T

__all__ = ["prepare_image"]


def prepare_image(
    image_bgr: np.ndarray, min_size: int, max_size: int, input_format: str = "BGR"
) -> np.ndarray:
    """What detectron2's ``DefaultPredictor`` feeds the model, as a numpy array.

    Args:
        image_bgr: (H, W, 3) BGR image (as OpenCV reads it), any real dtype.
        min_size, max_size: ``INPUT.MIN_SIZE_TEST`` / ``INPUT.MAX_SIZE_TEST`` (shortest-edge
            resize, the long side capped).
        input_format: the model's ``INPUT.FORMAT`` ("BGR" or "RGB").

    Returns:
        (3, h, w) float32 in ``input_format``, at the network input size.
    """
    image = image_bgr[:, :, ::-1] if input_format == "RGB" else image_bgr
    aug = T.ResizeShortestEdge([min_size, min_size], max_size)
    image = aug.get_transform(image).apply_image(image)
    return np.ascontiguousarray(image.astype(np.float32).transpose(2, 0, 1))
