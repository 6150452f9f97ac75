# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""Registration of the polar_refine datasets in ``DatasetCatalog`` / ``MetadataCatalog``.

Registered names (all with metadata ``evaluator_type="polar_coco"``):

* ``shapes_train``, ``shapes_val``, ``shapes_tiny_train``, ``shapes_tiny_val``: the synthetic
  shapes splits of `polar_refine.data.shapes`, generated into ``$POLAR_REFINE_CACHE`` (default
  ``~/.cache/polar_refine/shapes``) the first time ``DatasetCatalog.get(name)`` is called;
* ``dsb2018_train``, ``dsb2018_val``: ``$DETECTRON2_DATASETS/dsb2018/{train,val}/annotations.json``
  with images under ``.../{train,val}/images`` (one class, "nucleus");
* ``dsb2018_train_sub``, ``dsb2018_tune``: ``dsb2018_train`` split by a stable hash of each
  image's file name (``dsb2018_tune``: about 20 %), so that settings can be chosen on data that
  is neither trained on nor ``dsb2018_val``;
* ``coco128_seg``: ``$DETECTRON2_DATASETS/coco128-seg/annotations.json`` (80 COCO classes, COCO
  category ids).

``DETECTRON2_DATASETS`` defaults to ``datasets`` as in ``detectron2.data.datasets.builtin``.
Registration touches no file: environment variables are read, and data generated or read, only
when a dataset is loaded. ``json_file`` / ``image_root`` are added to the metadata then.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Callable, Dict, List, Optional, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.data.datasets.coco import load_coco_json

from .shapes import SHAPE_CLASSES, SHAPES_SPLITS, ensure_shapes

__all__ = ["register_all", "datasets_root", "EXTERNAL_DATASETS"]

logger = logging.getLogger(__name__)

EVALUATOR_TYPE = "polar_coco"

# name -> (json file, image root), relative to the datasets root. The json "file_name"s of both
# start with "images/".
EXTERNAL_DATASETS: Dict[str, Tuple[str, str]] = {
    "dsb2018_train": ("dsb2018/train/annotations.json", "dsb2018/train"),
    "dsb2018_val": ("dsb2018/val/annotations.json", "dsb2018/val"),
    "coco128_seg": ("coco128-seg/annotations.json", "coco128-seg"),
}

_COCO_THING_IDS: List[int] = [c["id"] for c in COCO_CATEGORIES if c["isthing"]]
_COCO_THING_NAMES: List[str] = [c["name"] for c in COCO_CATEGORIES if c["isthing"]]


def datasets_root() -> str:
    """``$DETECTRON2_DATASETS``, default ``datasets`` (read at call time)."""
    return os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets"))


def _set_paths(name: str, json_file: str, image_root: str) -> None:
    """Record where a dataset was loaded from in its metadata.

    ``Metadata`` refuses to change a key to a different value; if the dataset is loaded again
    from another place (e.g. another cache root), the old paths are replaced.
    """
    meta = MetadataCatalog.get(name)
    for key, value in (("json_file", json_file), ("image_root", image_root)):
        if meta.get(key) is not None and meta.get(key) != value:
            delattr(meta, key)
        setattr(meta, key, value)


def _load_shapes(name: str) -> List[Dict]:
    json_file, image_root = ensure_shapes(name)
    _set_paths(name, json_file, image_root)
    return load_coco_json(json_file, image_root, name)


def _external_paths(name: str, root: Optional[str]) -> Tuple[str, str]:
    root = root if root is not None else datasets_root()
    rel_json, rel_images = EXTERNAL_DATASETS[name]
    json_file = os.path.join(root, rel_json)
    image_root = os.path.join(root, rel_images)
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"Dataset '{name}': annotation file {json_file} does not exist. Put the data under "
            f"$DETECTRON2_DATASETS (now {root!r}) as <root>/{rel_json} and <root>/{rel_images}/."
        )
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"Dataset '{name}': image folder {image_root} does not exist.")
    return json_file, image_root


def _load_dsb2018(name: str, root: Optional[str]) -> List[Dict]:
    json_file, image_root = _external_paths(name, root)
    _set_paths(name, json_file, image_root)
    return load_coco_json(json_file, image_root, name)


# Share of dsb2018_train's images in dsb2018_tune (by a stable hash of the file name).
DSB2018_TUNE_PERCENT = 20


def _in_tune_split(file_name: str) -> bool:
    stem = os.path.splitext(os.path.basename(file_name))[0]  # the same for a re-encoded copy
    digest = hashlib.md5(stem.encode()).hexdigest()
    return int(digest[:8], 16) % 100 < DSB2018_TUNE_PERCENT


def _load_dsb2018_split(name: str, root: Optional[str]) -> List[Dict]:
    """``dsb2018_train_sub`` / ``dsb2018_tune``: the two parts of dsb2018_train. No json_file is
    recorded, so evaluators build the ground truth from these records alone."""
    json_file, image_root = _external_paths("dsb2018_train", root)
    dicts = load_coco_json(json_file, image_root, name)
    tune = name == "dsb2018_tune"
    return [d for d in dicts if _in_tune_split(d["file_name"]) == tune]


def _load_coco128(name: str, root: Optional[str]) -> List[Dict]:
    """Load coco128-seg with COCO's class names.

    The json's category *ids* are COCO's, but its category *names* swap 67 and 70 ("toilet" /
    "dining table"; the annotations themselves follow COCO's ids). The class names are therefore
    taken from detectron2's COCO metadata, keyed by id, and ids are mapped to contiguous ones as
    for COCO.
    """
    json_file, image_root = _external_paths(name, root)
    _set_paths(name, json_file, image_root)
    dicts = load_coco_json(json_file, image_root, dataset_name=None)  # raw category ids
    id_map = MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id
    for record in dicts:
        for obj in record["annotations"]:
            try:
                obj["category_id"] = id_map[obj["category_id"]]
            except KeyError as e:
                raise KeyError(
                    f"Dataset '{name}': category_id={obj['category_id']} in {json_file} is not "
                    "a COCO thing category id."
                ) from e
    return dicts


def _register(name: str, loader: Callable[[], List[Dict]], **metadata) -> None:
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(evaluator_type=EVALUATOR_TYPE, **metadata)


def register_all(root: Optional[str] = None) -> None:
    """Register every polar_refine dataset; names already in ``DatasetCatalog`` are skipped.

    Args:
        root: folder holding ``dsb2018/`` and ``coco128-seg/``. If None (default),
            ``$DETECTRON2_DATASETS`` (default ``datasets``) is read each time such a dataset is
            loaded. The shapes splits always use ``$POLAR_REFINE_CACHE``, read at load time.
    """
    registered = set(DatasetCatalog.list())
    for name in SHAPES_SPLITS:
        if name not in registered:
            _register(name, lambda name=name: _load_shapes(name), thing_classes=list(SHAPE_CLASSES))
    for name in ("dsb2018_train", "dsb2018_val"):
        if name not in registered:
            _register(name, lambda name=name: _load_dsb2018(name, root), thing_classes=["nucleus"])
    for name in ("dsb2018_train_sub", "dsb2018_tune"):
        if name not in registered:
            _register(
                name, lambda name=name: _load_dsb2018_split(name, root), thing_classes=["nucleus"]
            )
    if "coco128_seg" not in registered:
        _register(
            "coco128_seg",
            lambda: _load_coco128("coco128_seg", root),
            thing_classes=list(_COCO_THING_NAMES),
            thing_dataset_id_to_contiguous_id={cid: i for i, cid in enumerate(_COCO_THING_IDS)},
        )
