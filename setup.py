#!/usr/bin/env python
"""polar_refine: coarse-to-fine polar instance segmentation as a Detectron2 plugin.

detectron2 itself is *not* declared in ``install_requires``: no distribution named
``detectron2`` exists on PyPI. ``scripts/setup.sh`` installs it from the ``sal-detectron2``
wheel (see README). Everything else the package imports at run time is declared here.

The repository's ``configs/`` ship inside the package as ``polar_refine/model_zoo/configs``
(read them with ``polar_refine.model_zoo.get_config_file`` / ``get_config``), as detectron2's
own ``setup.py`` ships its ``configs/`` in ``detectron2/model_zoo/configs``.
"""

import glob
import os
import shutil
from os import path
from typing import List

from setuptools import find_packages, setup

ROOT = path.dirname(path.realpath(__file__))


def get_model_zoo_configs() -> List[str]:
    """
    Make the repository's ``configs/`` available as ``polar_refine/model_zoo/configs`` and
    return the config files (``.yaml`` and ``.py``, recursively) for ``package_data``.

    A symlink keeps the editable install in step with ``configs/``; where symlinks are not
    available the directory is copied. The directory structure is kept, so the ``_BASE_``
    paths of the YAML configs and the relative imports of the LazyConfig ``.py`` configs
    (``from ..common.polar_refine_data import dataloader``) resolve in the installed copy.
    """
    source_configs_dir = path.join(ROOT, "configs")
    destination = path.join(ROOT, "polar_refine", "model_zoo", "configs")

    # Remove a stale symlink / copy from a previous build, only when configs/ is here: a source
    # tree without it (an sdist) keeps the copy it came with.
    if path.exists(source_configs_dir):
        if path.islink(destination):
            os.unlink(destination)
        elif path.isdir(destination):
            shutil.rmtree(destination)

    if not path.exists(destination):
        try:
            os.symlink(source_configs_dir, destination)
        except OSError:
            shutil.copytree(source_configs_dir, destination)

    # package_data paths are relative to the package directory (polar_refine/model_zoo).
    config_paths = []
    for ext in ("yaml", "py"):
        config_paths += glob.glob(path.join(destination, "**", "*." + ext), recursive=True)
    package_dir = path.join(ROOT, "polar_refine", "model_zoo")
    return sorted(path.relpath(p, package_dir) for p in config_paths)


setup(
    name="polar_refine",
    version="0.1.0",
    description="PolarRefine: single-stage coarse-to-fine polar instance segmentation "
    "(Detectron2 plugin)",
    license="Apache-2.0",
    packages=find_packages(include=["polar_refine", "polar_refine.*"]),
    package_data={"polar_refine.model_zoo": get_model_zoo_configs()},
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
