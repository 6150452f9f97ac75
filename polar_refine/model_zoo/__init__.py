# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""The configs of polar_refine, read from the installed package (as ``detectron2.model_zoo``).

``setup.py`` ships the repository's ``configs/`` as ``polar_refine/model_zoo/configs`` (a
symlink in an editable install, a copy in a wheel), so a config can be found from any working
directory::

    from polar_refine import model_zoo

    cfg = model_zoo.get_config("COCO-InstanceSegmentation/polar_refine_contour_R_50_FPN_1x.yaml")
    lazy = model_zoo.get_config("COCO-InstanceSegmentation/polar_refine_contour_R_50_FPN_1x.py")

No trained weights are published, so there is no ``get_checkpoint_url`` and ``trained=True`` is
refused.
"""

import os

from detectron2.config import LazyConfig, get_cfg

from ..config import add_polar_refine_config

__all__ = ["get_config_file", "get_config"]

_CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def get_config_file(config_path: str) -> str:
    """
    Returns the path of a config file shipped with polar_refine.

    Args:
        config_path (str): config file name relative to the repository's ``configs/``
            directory, e.g. "COCO-InstanceSegmentation/polar_refine_contour_R_50_FPN_1x.yaml"

    Returns:
        str: the absolute path of the installed copy of ``configs/<config_path>``.
    """
    cfg_file = os.path.join(_CONFIGS_DIR, config_path)
    if not os.path.isfile(cfg_file):
        raise RuntimeError(
            f"{config_path} is not one of polar_refine's configs (looked for {cfg_file})"
        )
    return cfg_file


def get_config(config_path: str, trained: bool = False):
    """
    Returns the config object of a config file shipped with polar_refine.

    Args:
        config_path (str): config file name relative to the repository's ``configs/``
            directory; ``.yaml`` for a yacs config, ``.py`` for a LazyConfig.
        trained (bool): must be False: polar_refine publishes no trained weights, so the
            config's own ``MODEL.WEIGHTS`` / ``train.init_checkpoint`` (ImageNet backbone
            weights) is what a model built from it starts from.

    Returns:
        CfgNode (``.yaml``, with ``MODEL.POLAR_REFINE`` added by `add_polar_refine_config`
        before the merge) or omegaconf.DictConfig (``.py``, from ``LazyConfig.load``).
    """
    if trained:
        raise RuntimeError(
            f"trained=True is not supported for {config_path}: polar_refine has no trained weights"
        )
    cfg_file = get_config_file(config_path)
    if cfg_file.endswith(".yaml"):
        cfg = get_cfg()
        add_polar_refine_config(cfg)
        cfg.merge_from_file(cfg_file)
        return cfg
    if cfg_file.endswith(".py"):
        return LazyConfig.load(cfg_file)
    raise RuntimeError(f"{config_path} is neither a .yaml nor a .py config")
