# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""Register your own COCO-format instance-segmentation folders, from Python or a command line.

detectron2's way is ``register_coco_instances(name, {}, json_file, image_root)``;
`register_coco_folder` does that and also reads the json's categories at once, so that the
class names and the dataset-id -> contiguous-id map are in ``MetadataCatalog`` before the
dataset is loaded (the demo names classes from them, and ``NUM_CLASSES`` can be checked).
Contiguous ids follow detectron2's ``load_coco_json``: categories sorted by id, numbered from 0;
the evaluator maps predictions back to the json's ids.

Command lines (``train_net.py``, ``demo/demo.py``) get a repeatable flag::

    --coco-dataset NAME JSON IMAGE_ROOT

through `add_dataset_arguments` / `register_datasets_from_args`; ``train_net.py`` then checks
with `check_num_classes` that ``MODEL.POLAR_REFINE.NUM_CLASSES`` is the json's category count.
"""

import argparse
import json
import logging
import os
from typing import Dict, List, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

__all__ = [
    "register_coco_folder",
    "read_coco_categories",
    "add_dataset_arguments",
    "register_datasets_from_args",
    "check_num_classes",
]

logger = logging.getLogger(__name__)

_REGISTERED_BY = "polar_refine.data.register_coco_folder"


def read_coco_categories(json_file: str) -> List[Dict]:
    """The ``categories`` of a COCO json, sorted by id (detectron2's contiguous-id order)."""
    with open(json_file) as f:
        data = json.load(f)
    if not isinstance(data, dict) or "categories" not in data:
        raise ValueError(f"{json_file} is not a COCO instances json (no 'categories')")
    return sorted(data["categories"], key=lambda c: c["id"])


def register_coco_folder(name: str, json_file: str, image_root: str):
    """Register a COCO-format instance-segmentation dataset under ``name``.

    ``register_coco_instances(name, {}, json_file, image_root)`` (evaluator type "coco", which
    `PolarRefineTrainer` evaluates with `PolarCOCOEvaluator`), plus ``thing_classes`` and
    ``thing_dataset_id_to_contiguous_id`` read from the json now. Category ids need not be
    contiguous; crowd annotations (``iscrowd: 1``) are ignored in training and used by COCO
    evaluation; objects may have several polygons; images without annotations are dropped from
    training (``DATALOADER.FILTER_EMPTY_ANNOTATIONS``) and kept for evaluation.

    Registering a name again with this function replaces the earlier registration; a name
    registered otherwise (e.g. detectron2's builtin ``coco_2017_train``) is an error.

    Returns:
        Metadata: the dataset's metadata.
    """
    json_file = os.path.abspath(os.path.expanduser(json_file))
    image_root = os.path.abspath(os.path.expanduser(image_root))
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"dataset {name!r}: annotation file {json_file} does not exist")
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"dataset {name!r}: image folder {image_root} does not exist")
    if name in DatasetCatalog.list():
        if MetadataCatalog.get(name).get("registered_by") != _REGISTERED_BY:
            raise ValueError(f"dataset name {name!r} is already registered; choose another name")
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    categories = read_coco_categories(json_file)
    register_coco_instances(name, {}, json_file, image_root)
    meta = MetadataCatalog.get(name)
    meta.set(
        thing_classes=[c["name"] for c in categories],
        thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(categories)},
        registered_by=_REGISTERED_BY,
    )
    logger.info(
        "Registered dataset %r: %d categories, %s, images in %s",
        name,
        len(categories),
        json_file,
        image_root,
    )
    return meta


def add_dataset_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the repeatable ``--coco-dataset NAME JSON IMAGE_ROOT`` option to ``parser``."""
    parser.add_argument(
        "--coco-dataset",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "JSON", "IMAGE_ROOT"),
        help="register a COCO-format dataset under NAME before anything else (repeatable); "
        "then use NAME in DATASETS.TRAIN / DATASETS.TEST (dataloader.*.dataset.names for .py "
        "configs)",
    )
    return parser


def register_datasets_from_args(args) -> List[str]:
    """Register every ``--coco-dataset`` of ``args``; returns their names.

    Call it in each process that needs the datasets (with detectron2's ``launch``, inside the
    ``main`` that every worker runs).
    """
    names = []
    for name, json_file, image_root in getattr(args, "coco_dataset", None) or []:
        register_coco_folder(name, json_file, image_root)
        names.append(name)
    return names


def check_num_classes(dataset_names: Sequence[str], num_classes: int) -> None:
    """Raise a ValueError naming the fix when a dataset's category count is not ``num_classes``.

    Only datasets whose metadata already has ``thing_classes`` are checked.
    """
    for name in dataset_names:
        classes = MetadataCatalog.get(name).get("thing_classes")
        if classes is not None and len(classes) != num_classes:
            raise ValueError(
                f"dataset {name!r} has {len(classes)} categories but the model has "
                f"{num_classes} classes: set MODEL.POLAR_REFINE.NUM_CLASSES {len(classes)} "
                f"(model.num_classes={len(classes)} for .py configs)"
            )
