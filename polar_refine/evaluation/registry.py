# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""Registry of dataset evaluators, so configs and scripts can pick one by name."""

from typing import Optional

from detectron2.evaluation import DatasetEvaluator
from detectron2.utils.registry import Registry

__all__ = ["EVALUATOR_REGISTRY", "build_evaluator"]

EVALUATOR_REGISTRY = Registry("POLAR_EVALUATOR")
EVALUATOR_REGISTRY.__doc__ = """
Registry for dataset evaluators (:class:`detectron2.evaluation.DatasetEvaluator` subclasses).

A registered evaluator is constructed as ``evaluator_cls(dataset_name, output_dir=..., **kwargs)``.
It may also define a classmethod ``from_config(cfg, dataset_name, output_dir=None)`` that returns
the constructor's keyword arguments (``dataset_name`` included) read from a detectron2 config;
:func:`build_evaluator` uses it when a config is given.
"""


def build_evaluator(
    name: str,
    dataset_name: str,
    cfg=None,
    output_dir: Optional[str] = None,
    **kwargs,
) -> DatasetEvaluator:
    """
    Build the evaluator registered as ``name`` in :data:`EVALUATOR_REGISTRY` for one dataset.

    Args:
        name (str): registered name, e.g. ``"PolarCOCOEvaluator"``.
        dataset_name (str): a dataset registered in ``DatasetCatalog`` / ``MetadataCatalog``.
        cfg (CfgNode or None): if given and the evaluator class has ``from_config``, its keyword
            arguments are read from the config first; ``kwargs`` override them.
        output_dir (str or None): where the evaluator may dump its predictions and results.
        kwargs: further constructor arguments (e.g. ``distributed=False``).

    Returns:
        DatasetEvaluator: a new evaluator instance.
    """
    evaluator_cls = EVALUATOR_REGISTRY.get(name)
    if cfg is not None and hasattr(evaluator_cls, "from_config"):
        args = dict(evaluator_cls.from_config(cfg, dataset_name, output_dir=output_dir))
        args.update(kwargs)
        return evaluator_cls(**args)
    return evaluator_cls(dataset_name, output_dir=output_dir, **kwargs)
