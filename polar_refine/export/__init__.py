# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""Deployment: export PolarRefine to ONNX / TorchScript and run the ONNX model with ONNX Runtime.

``onnx`` and ``onnxruntime`` come with the ``export`` extra (``pip install -e .[export]``); they
are imported only when an ONNX file is written or run.
"""

from .exporter import (  # noqa: F401
    FORMATS,
    ONNX_OPSET,
    export_metadata,
    export_model,
    export_onnx,
    export_torchscript,
    sample_input,
    setup_export_cfg,
)
from .graph import INPUT_NAME, OUTPUT_NAMES, PolarRefineExportGraph  # noqa: F401
from .predictor import ExportedModelError, ONNXPredictor, read_metadata  # noqa: F401
from .preprocess import prepare_image  # noqa: F401
from .quantize import quantize_int8  # noqa: F401
