# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""Run an exported PolarRefine (ONNX) with ONNX Runtime, like detectron2's ``DefaultPredictor``."""

import json
import os
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from detectron2.structures import Instances

from ..modeling.postprocess import polar_postprocess
from .graph import INPUT_NAME, OUTPUT_NAMES
from .preprocess import prepare_image

__all__ = ["ExportedModelError", "ONNXPredictor", "read_metadata"]

METADATA_KEY = "polar_refine"
"""Key of the JSON metadata (ONNX ``metadata_props``, TorchScript extra file ``<key>.json``)."""


class ExportedModelError(ValueError):
    """A model file or an input that an exported-model predictor cannot use (one-line message)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def read_metadata(props: Dict[str, str]) -> Dict:
    """The export metadata (config values a predictor needs) from an ONNX model's metadata
    properties (``onnxruntime``'s ``session.get_modelmeta().custom_metadata_map``)."""
    if METADATA_KEY not in props:
        raise ExportedModelError(
            f"the ONNX model has no '{METADATA_KEY}' metadata: was it written by export_model.py?"
        )
    return json.loads(props[METADATA_KEY])


class ONNXPredictor:
    """Predict with an exported PolarRefine ONNX model through ONNX Runtime.

    Same contract as detectron2's ``DefaultPredictor`` on a PolarRefine config: a BGR image in,
    ``{"instances": Instances}`` at the image's size out, with ``pred_polygons`` (N, K, 2),
    ``pred_boxes``, ``scores``, ``pred_classes``, ``pred_coarse_polygons`` and, when the model
    was exported with ``MODEL.MASK_ON``, ``pred_masks`` (N, H, W) bool. Resizing happens before
    the graph (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST`` stored in the model's metadata);
    rescaling to the image size and the masks after it, by the package's own
    `polar_postprocess` / `polygons_to_masks`, so no PolarRefine model is built.

    Errors (unreadable model file, image of a wrong type or shape, a failed run) are raised as
    `ExportedModelError` with a one-line message.
    """

    def __init__(
        self,
        path: str,
        providers: Optional[Sequence[str]] = None,
        num_threads: int = 0,
    ):
        """
        Args:
            path: a ``model.onnx`` written by ``export_model.py``.
            providers: ONNX Runtime execution providers (default: the available ones, CUDA
                first when present).
            num_threads: intra-op threads (0: ONNX Runtime's default, one per physical core).
        """
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ExportedModelError(
                f"{e}; install the export extra: pip install -e .[export]"
            ) from e
        if not os.path.isfile(path):
            raise ExportedModelError(f"no such ONNX model file: {path}")
        try:
            options = ort.SessionOptions()
            options.intra_op_num_threads = num_threads
            options.log_severity_level = 3  # errors only
            available = ort.get_available_providers()
            order = ["CUDAExecutionProvider", "CPUExecutionProvider"]
            providers = providers or [p for p in order if p in available]
            self.session = ort.InferenceSession(path, options, providers=list(providers))
        except Exception as e:  # ORT's Fail / InvalidProtobuf / InvalidGraph, ...
            raise ExportedModelError(f"cannot load ONNX model {path}: {e}") from e
        meta = read_metadata(self.session.get_modelmeta().custom_metadata_map)
        self.metadata = meta
        self.input_format = meta["input_format"]
        self.min_size = int(meta["min_size_test"])
        self.max_size = int(meta["max_size_test"])
        self.mask_on = bool(meta["mask_on"])

    def run_network(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        """Run the graph on a prepared input.

        Args:
            image: (3, h, w) float32 in the model's input format, at the network input size.

        Returns:
            the raw outputs by name: ``polygons`` (N, K, 2), ``scores`` (N,), ``classes`` (N,),
            ``boxes`` (N, 4), ``coarse_polygons`` (N, K, 2), at (h, w).
        """
        try:
            outputs = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: image})
        except Exception as e:  # onnxruntime's Fail / InvalidArgument / RuntimeException
            raise ExportedModelError(f"ONNX Runtime failed on a {image.shape} input: {e}") from e
        return dict(zip(OUTPUT_NAMES, outputs))

    def __call__(self, original_image: np.ndarray) -> Dict[str, Instances]:
        """
        Args:
            original_image: (H, W, 3) BGR image (as OpenCV reads it), uint8 or real-valued
                0-255.

        Returns:
            ``{"instances": Instances}`` at (H, W) (see the class docstring).
        """
        image = self._check(original_image)
        height, width = image.shape[:2]
        net_input = prepare_image(image, self.min_size, self.max_size, self.input_format)
        out = self.run_network(net_input)
        return {"instances": self.postprocess(out, net_input.shape[1:], height, width)}

    def postprocess(self, outputs: Dict[str, np.ndarray], input_size, height: int, width: int):
        """Raw outputs at the network input size (h, w) -> ``Instances`` at (height, width)."""
        res = Instances(tuple(int(s) for s in input_size))
        res.pred_polygons = torch.from_numpy(outputs["polygons"])
        res.pred_coarse_polygons = torch.from_numpy(outputs["coarse_polygons"])
        res.scores = torch.from_numpy(outputs["scores"])
        res.pred_classes = torch.from_numpy(outputs["classes"])
        return polar_postprocess(res, height, width, self.mask_on)

    @staticmethod
    def _check(image) -> np.ndarray:
        """``image`` as an (H, W, 3) array, or a one-line `ExportedModelError`."""
        if not isinstance(image, np.ndarray):
            raise ExportedModelError(
                f"expected an (H, W, 3) BGR numpy image, got {type(image).__name__}"
            )
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise ExportedModelError(f"expected an (H, W, 3) BGR image, got shape {image.shape}")
        if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
            raise ExportedModelError(f"expected a numeric image, got dtype {image.dtype}")
        if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
            raise ExportedModelError("the image has NaN or infinite values")
        return image
