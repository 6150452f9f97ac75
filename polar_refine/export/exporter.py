# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""Export a PolarRefine model to ONNX or TorchScript (the code behind ``export_model.py``)."""

import copy
import json
import logging
import os
import warnings
from typing import Dict, Optional

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model

from ..config import add_polar_refine_config
from .graph import INPUT_NAME, OUTPUT_NAMES, PolarRefineExportGraph
from .predictor import METADATA_KEY
from .preprocess import prepare_image

__all__ = [
    "FORMATS",
    "ONNX_OPSET",
    "export_model",
    "export_onnx",
    "export_torchscript",
    "export_metadata",
    "sample_input",
    "setup_export_cfg",
]

logger = logging.getLogger(__name__)

FORMATS = {"onnx": "model.onnx", "torchscript": "model.ts"}
ONNX_OPSET = 17


def setup_export_cfg(config_file: str, opts=()):
    """A frozen PolarRefine config on the CPU: ``config_file``, then ``opts`` (KEY VALUE ...)."""
    cfg = get_cfg()
    add_polar_refine_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = "cpu"  # a trace records devices; export on the CPU, run anywhere ORT runs
    cfg.freeze()
    return cfg


def export_metadata(cfg) -> Dict:
    """Config values a predictor of the exported model needs (stored inside the model file)."""
    names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)
    classes = next(
        (c for c in (MetadataCatalog.get(n).get("thing_classes") for n in names) if c), None
    )
    return {
        "format_version": 1,
        "input_name": INPUT_NAME,
        "output_names": list(OUTPUT_NAMES),
        "input_format": cfg.INPUT.FORMAT,
        "min_size_test": int(cfg.INPUT.MIN_SIZE_TEST),
        "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST),
        "mask_on": bool(cfg.MODEL.MASK_ON),
        "score_thresh_test": float(cfg.MODEL.POLAR_REFINE.SCORE_THRESH_TEST),
        "num_classes": int(cfg.MODEL.POLAR_REFINE.NUM_CLASSES),
        "num_rays": int(cfg.MODEL.POLAR_REFINE.NUM_RAYS),
        "thing_classes": list(classes) if classes else None,
    }


def sample_input(cfg, image_path: Optional[str] = None) -> torch.Tensor:
    """The tracing input: ``image_path`` prepared as ``DefaultPredictor`` does, or a fixed noise
    image of the test size. Returns (3, h, w) float32. Any image works: sizes stay dynamic."""
    if image_path:
        image = read_image(image_path, format="BGR")
    else:
        h = int(cfg.INPUT.MIN_SIZE_TEST)
        w = min(int(round(h * 4 / 3)), int(cfg.INPUT.MAX_SIZE_TEST) or h * 2)
        image = np.random.RandomState(0).randint(0, 256, (h, w, 3)).astype(np.uint8)
    prepared = prepare_image(
        image, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, cfg.INPUT.FORMAT
    )
    return torch.from_numpy(prepared)


def _ignore_trace_warnings() -> None:
    """Inside ``warnings.catch_warnings()``: silence the tracer's warnings about values that are
    constants by design (strides, K, the batch of one image, assertion checks; everything that
    depends on the image comes from tensor shapes) and the exporters' deprecation notices."""
    warnings.simplefilter("ignore", torch.jit.TracerWarning)
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", DeprecationWarning)


def export_onnx(
    model: torch.nn.Module,
    sample: torch.Tensor,
    path: str,
    metadata: Dict,
    opset: int = ONNX_OPSET,
) -> str:
    """Trace ``model`` (a PolarRefine in eval mode) on ``sample`` into an ONNX file.

    The legacy TorchScript-based exporter is used (``dynamo=False``): it maps torchvision's NMS
    to ``NonMaxSuppression`` and keeps the height, width and detection count dynamic. The file
    is checked with ``onnx.checker`` and carries ``metadata`` (JSON under ``polar_refine``).

    Returns:
        ``path``.
    """
    import onnx

    graph = PolarRefineExportGraph(model).eval()
    dynamic = {INPUT_NAME: {1: "height", 2: "width"}}
    dynamic.update({name: {0: "detections"} for name in OUTPUT_NAMES})
    with warnings.catch_warnings(), torch.no_grad():
        _ignore_trace_warnings()
        torch.onnx.export(
            graph,
            (sample,),
            path,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic,
            do_constant_folding=True,
        )
    proto = onnx.load(path)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    proto.producer_name = "polar_refine"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, path)
    return path


def export_torchscript(
    model: torch.nn.Module, sample: torch.Tensor, path: str, metadata: Dict
) -> str:
    """Trace ``model`` (a PolarRefine in eval mode) on ``sample`` into a TorchScript file.

    The file loads with ``torch.jit.load`` after ``import torchvision`` (for its NMS operator),
    without ``polar_refine`` or detectron2; ``metadata`` is the extra file ``polar_refine.json``.
    The trace records the CPU as device: export on the device it will run on.

    Returns:
        ``path``.
    """
    graph = PolarRefineExportGraph(copy.deepcopy(model)).eval()
    graph.requires_grad_(False)  # outputs that do not require grad, as a deployed model's
    with warnings.catch_warnings(), torch.no_grad():
        _ignore_trace_warnings()
        traced = torch.jit.trace(graph, (sample,), check_trace=False)
    torch.jit.save(traced, path, _extra_files={f"{METADATA_KEY}.json": json.dumps(metadata)})
    return path


def export_model(cfg, fmt: str, output_dir: str, sample_image: Optional[str] = None) -> str:
    """Build the model of ``cfg``, load ``cfg.MODEL.WEIGHTS`` and export it.

    Args:
        cfg: a PolarRefine config (see `setup_export_cfg`).
        fmt: "onnx" or "torchscript".
        output_dir: created if needed; the file is ``model.onnx`` or ``model.ts`` inside.
        sample_image: the image to trace on (default: a noise image of the test size).

    Returns:
        the path of the written file.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {sorted(FORMATS)}")
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    sample = sample_input(cfg, sample_image)
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, FORMATS[fmt])
    export = export_onnx if fmt == "onnx" else export_torchscript
    export(model, sample, path, export_metadata(cfg))
    logger.info("Exported %s (traced on a %s input) to %s", fmt, tuple(sample.shape), path)
    return path
