# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""int8 static quantisation of an exported PolarRefine ONNX model with ONNX Runtime.

Only the convolutions are quantised (QDQ format, weights per output channel, activations per
tensor, calibrated on real images): they hold nearly all of the arithmetic, and candidate
selection, the refine gathers, NMS and the polygons stay in float32, where int8 would move
coordinates by whole pixels. On x86 CPUs with VNNI, ONNX Runtime runs the int8 convolutions
with integer dot products.
"""

import json
import os
from typing import Iterable, Optional

import numpy as np

from .predictor import METADATA_KEY
from .preprocess import prepare_image

__all__ = ["quantize_int8"]


class _ImageReader:
    """onnxruntime's CalibrationDataReader over BGR images, prepared as the predictor does."""

    def __init__(self, images: Iterable[np.ndarray], input_name, min_size, max_size, fmt):
        self._items = iter(
            {input_name: prepare_image(img, min_size, max_size, fmt)} for img in images
        )

    def get_next(self) -> Optional[dict]:
        return next(self._items, None)


def quantize_int8(fp32_path: str, int8_path: str, calibration_images: Iterable[np.ndarray]) -> str:
    """Write an int8 copy of the ONNX model at ``fp32_path`` to ``int8_path``.

    Args:
        fp32_path: a ``model.onnx`` written by ``export_model.py`` (its metadata gives the input
            name, the test-time resize and the input format).
        int8_path: where the quantised model goes; it keeps the same metadata, so
            `ONNXPredictor` runs it unchanged.
        calibration_images: BGR images (as OpenCV reads them) from the training distribution;
            a few dozen are enough for the activation ranges.

    Returns:
        ``int8_path``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    proto = onnx.load(fp32_path)
    props = {p.key: p.value for p in proto.metadata_props}
    meta = json.loads(props[METADATA_KEY])
    prepared = int8_path + ".pre.onnx"
    quant_pre_process(fp32_path, prepared, skip_symbolic_shape=True)
    reader = _ImageReader(
        calibration_images,
        meta["input_name"],
        meta["min_size_test"],
        meta["max_size_test"],
        meta["input_format"],
    )
    quantize_static(
        prepared,
        int8_path,
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["Conv"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    os.remove(prepared)
    out = onnx.load(int8_path)
    del out.metadata_props[:]
    for key, value in props.items():
        entry = out.metadata_props.add()
        entry.key, entry.value = key, value
    meta["precision"] = "int8"
    out.metadata_props[[p.key for p in out.metadata_props].index(METADATA_KEY)].value = json.dumps(
        meta
    )
    onnx.save(out, int8_path)
    return int8_path
