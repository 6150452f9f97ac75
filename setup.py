#!/usr/bin/env python
"""polar_refine: coarse-to-fine polar instance segmentation as a Detectron2 plugin.

detectron2 itself is *not* declared in ``install_requires``: no distribution named
``detectron2`` exists on PyPI. ``scripts/setup.sh`` installs it from the ``sal-detectron2``
wheel (see README). Everything else the package imports at run time is declared here.
"""

from setuptools import find_packages, setup

setup(
    name="polar_refine",
    version="0.1.0",
    description="PolarRefine: single-stage coarse-to-fine polar instance segmentation "
    "(Detectron2 plugin)",
    packages=find_packages(include=["polar_refine", "polar_refine.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.0",
        "torchvision",
        "fvcore>=0.1.5,<0.1.6",
        "iopath>=0.1.7,<0.1.10",
        "pycocotools>=2.0.2",
        "numpy<2",  # sal-detectron2 requires numpy<2
        "opencv-python<4.12",  # 4.12+ requires numpy>=2
        "tqdm",
        "shapely",  # detectron2 needs it to crop polygon annotations (INPUT.CROP, dsb2018)
    ],
    extras_require={
        "dev": ["pytest", "ruff"],
        # export_model.py --format onnx, polar_refine.export.ONNXPredictor, demo.py --onnx.
        # Pinned to versions tested with numpy<2: ml_dtypes (needed by onnx) 0.6+ needs numpy 2.
        "export": ["onnx==1.23.2", "onnxruntime==1.32.0", "ml_dtypes>=0.5.4,<0.6"],
    },
)
