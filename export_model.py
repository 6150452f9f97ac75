#!/usr/bin/env python
"""Export a trained PolarRefine to ONNX or TorchScript (after detectron2's
``tools/deploy/export_model.py``)::

    python export_model.py --config-file configs/Shapes/polar_refine_tiny.yaml --format onnx \\
        --output exported/ MODEL.WEIGHTS output/shapes_tiny/model_final.pth
    python export_model.py --config-file configs/DSB2018/polar_refine_deploy_R_18_tiny.yaml \
        --int8 32 --output exported/ MODEL.WEIGHTS model_final.pth   # + model_int8.onnx

The exported graph runs the whole inference path (normalisation and padding through polygons
and NMS) on one (3, H, W) float32 image at the network input size, H and W dynamic, and returns
``polygons``, ``scores``, ``classes``, ``boxes`` and ``coarse_polygons``. The code is in
``polar_refine.export``; this script only parses arguments.
"""

import argparse
import os
import sys

from detectron2.utils.logger import setup_logger

PROG = "export_model.py"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("::")[0].strip())
    parser.add_argument("--config-file", required=True, metavar="FILE", help="config file")
    parser.add_argument(
        "--format", choices=["onnx", "torchscript"], default="onnx", help="default: onnx"
    )
    parser.add_argument(
        "--output", required=True, metavar="DIR", help="folder for model.onnx / model.ts"
    )
    parser.add_argument(
        "--sample-image",
        metavar="IMG",
        help="image to trace on (default: a noise image of INPUT.MIN_SIZE_TEST)",
    )
    parser.add_argument(
        "--int8",
        type=int,
        default=0,
        metavar="N",
        help="also write model_int8.onnx (ONNX Runtime static int8, polar_refine.export."
        "quantize_int8), calibrated on the first N images of DATASETS.TRAIN[0]",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.WEIGHTS model.pth"
    )
    return parser


def calibration_images(dataset: str, num: int) -> list:
    """The first ``num`` images of a registered dataset, BGR as OpenCV reads them."""
    import cv2
    from detectron2.data import DatasetCatalog

    import polar_refine  # noqa: F401  (registers the datasets)

    dicts = DatasetCatalog.get(dataset)[:num]
    if not dicts:
        raise ValueError(f"dataset {dataset!r} has no images to calibrate int8 on")
    return [cv2.imread(d["file_name"], cv2.IMREAD_COLOR) for d in dicts]


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="polar_refine")
    from polar_refine.export import export_model, quantize_int8, setup_export_cfg

    try:
        cfg = setup_export_cfg(args.config_file, args.opts)
        if args.int8 and args.format != "onnx":
            raise ValueError("--int8 quantises the ONNX model: use it with --format onnx")
        path = export_model(cfg, args.format, args.output, args.sample_image)
        if args.int8:
            path = quantize_int8(
                path,
                os.path.join(args.output, "model_int8.onnx"),
                calibration_images(cfg.DATASETS.TRAIN[0], args.int8),
            )
    except Exception as e:  # config, weights, image or export failure: one line, status 1
        print(f"{PROG}: error: {' '.join(f'{type(e).__name__}: {e}'.split())}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
