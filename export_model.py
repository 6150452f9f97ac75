#!/usr/bin/env python
"""Export a trained PolarRefine to ONNX or TorchScript (after detectron2's
``tools/deploy/export_model.py``)::

    python export_model.py --config-file configs/Shapes/polar_refine_tiny.yaml --format onnx \\
        --output exported/ MODEL.WEIGHTS output/shapes_tiny/model_final.pth

The exported graph runs the whole inference path (normalisation and padding through polygons
and NMS) on one (3, H, W) float32 image at the network input size, H and W dynamic, and returns
``polygons``, ``scores``, ``classes``, ``boxes`` and ``coarse_polygons``. The code is in
``polar_refine.export``; this script only parses arguments.
"""

import argparse
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
        "opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.WEIGHTS model.pth"
    )
    return parser


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="polar_refine")
    from polar_refine.export import export_model, setup_export_cfg

    try:
        cfg = setup_export_cfg(args.config_file, args.opts)
        path = export_model(cfg, args.format, args.output, args.sample_image)
    except Exception as e:  # config, weights, image or export failure: one line, status 1
        print(f"{PROG}: error: {' '.join(f'{type(e).__name__}: {e}'.split())}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
