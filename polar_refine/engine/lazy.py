# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""Training and evaluation from LazyConfig (``.py``) configs, as detectron2's
``tools/lazyconfig_train_net.py``.

A config provides ``model``, ``dataloader.{train,test,evaluator}``, ``optimizer``,
``lr_multiplier`` and ``train`` (detectron2's ``common/train.py`` keys: ``output_dir``,
``init_checkpoint``, ``max_iter``, ``amp.enabled``, ``ddp``, ``checkpointer``, ``eval_period``,
``log_period``, ``device``), plus one optional key of this project:
``train.clip_gradients = dict(enabled, clip_type, clip_value, norm_type)``, the YAML configs'
``SOLVER.CLIP_GRADIENTS``. See ``configs/Shapes/polar_refine_tiny.py`` and
``configs/COCO-InstanceSegmentation/*.py``.

``train_net.py`` sends ``.py`` configs here (`lazy_main`); the functions can also be used from
other scripts::

    cfg = LazyConfig.load("configs/Shapes/polar_refine_tiny.py")
    cfg = LazyConfig.apply_overrides(cfg, ["train.max_iter=100"])
    do_train(cfg, resume=False)
"""

import logging
import os

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, LazyConfig, instantiate
from detectron2.engine import default_setup, default_writers, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.solver.build import (
    _create_gradient_clipper,
    _generate_optimizer_class_with_gradient_clipping,
)
from detectron2.utils import comm

from .amp import build_train_loop

__all__ = [
    "lazy_setup",
    "lazy_main",
    "do_train",
    "do_test",
    "build_lazy_model",
    "add_gradient_clipping",
]

logger = logging.getLogger("polar_refine")


def lazy_setup(args):
    """Load ``args.config_file``, apply ``args.opts`` (``key=value`` overrides), run
    detectron2's ``default_setup`` (logging, seed, config dump into ``train.output_dir``).

    ``train.device`` falls back to "cpu" when CUDA is not available, as ``MODEL.DEVICE`` does
    in ``train_net.py``'s YAML path.
    """
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    if not torch.cuda.is_available() and cfg.train.get("device", "cuda") != "cpu":
        cfg.train.device = "cpu"
    default_setup(cfg, args)
    return cfg


def _wrap_ddp(model, cfg):
    """``create_ddp_model`` with ``train.ddp``; ``device_ids=None`` for CPU models (gloo),
    which DDP requires and detectron2 does not pass (see `polar_refine.engine.wrap_ddp`)."""
    kwargs = dict(cfg.train.get("ddp", {}))
    if next(model.parameters()).device.type == "cpu":
        kwargs["device_ids"] = None
    return create_ddp_model(model, **kwargs)


def build_lazy_model(cfg):
    """Instantiate ``cfg.model`` on ``cfg.train.device``."""
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    return model


def add_gradient_clipping(optimizer: torch.optim.Optimizer, clip_gradients) -> None:
    """Make ``optimizer`` clip gradients before every step, in place.

    Exactly detectron2's ``SOLVER.CLIP_GRADIENTS`` (``maybe_add_gradient_clipping``): per
    parameter, by ``clip_type`` "norm" (``norm_type``) or "value", at ``clip_value``. Nothing
    happens when ``clip_gradients`` is empty or its ``enabled`` is False.
    """
    if not clip_gradients or not clip_gradients.get("enabled", False):
        return
    clip_cfg = CfgNode(
        {
            "CLIP_TYPE": clip_gradients.get("clip_type", "norm"),
            "CLIP_VALUE": float(clip_gradients.get("clip_value", 1.0)),
            "NORM_TYPE": float(clip_gradients.get("norm_type", 2.0)),
        }
    )
    optimizer.__class__ = _generate_optimizer_class_with_gradient_clipping(
        type(optimizer), per_param_clipper=_create_gradient_clipper(clip_cfg)
    )


def _set_evaluator_output_dir(cfg) -> None:
    """Default ``dataloader.evaluator.output_dir`` (when present and None) to
    ``<train.output_dir>/inference/<dataset>``, where the COCO results json is written."""
    evaluator = cfg.dataloader.evaluator
    if "output_dir" in evaluator and evaluator.output_dir is None:
        dataset = cfg.dataloader.test.dataset.names
        dataset = dataset if isinstance(dataset, str) else "_".join(dataset)
        evaluator.output_dir = os.path.join(cfg.train.output_dir, "inference", dataset)


def do_test(cfg, model):
    """Run ``cfg.dataloader.test`` through ``model`` and ``cfg.dataloader.evaluator``.

    Returns:
        dict: the evaluator's results (``{}`` without an evaluator, and on non-main processes).
    """
    if "evaluator" not in cfg.dataloader:
        return {}
    _set_evaluator_output_dir(cfg)
    ret = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    if comm.is_main_process() and ret:
        print_csv_format(ret)
    return ret


def do_train(cfg, resume: bool = False):
    """Train ``cfg.model`` as detectron2's ``lazyconfig_train_net.py`` does.

    Hooks: iteration timer, LR scheduler (``lr_multiplier``), periodic checkpointer
    (``train.checkpointer``), evaluation every ``train.eval_period`` iterations and after the
    last one (`do_test`), and detectron2's default writers (console, ``metrics.json``,
    TensorBoard) every ``train.log_period``. With ``resume`` and a checkpoint in
    ``train.output_dir``, training continues after its iteration; otherwise the weights come
    from ``train.init_checkpoint``.

    Returns:
        dict: the results of the final evaluation (``{}`` when there was none).
    """
    model = build_lazy_model(cfg)
    logger.info("Model:\n%s", model)

    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    add_gradient_clipping(optimizer, cfg.train.get("clip_gradients"))

    train_loader = instantiate(cfg.dataloader.train)
    model = _wrap_ddp(model, cfg)
    # SimpleTrainer, or with train.amp.enabled the AMP trainer (fp16 on CUDA, bf16 on the CPU)
    trainer = build_train_loop(model, train_loader, optimizer, amp=bool(cfg.train.amp.enabled))
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)

    results = {}

    def test_and_save():
        results.clear()
        results.update(do_test(cfg, model))
        return results

    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            (
                hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
                if comm.is_main_process()
                else None
            ),
            hooks.EvalHook(cfg.train.eval_period, test_and_save),
            (
                hooks.PeriodicWriter(
                    default_writers(cfg.train.output_dir, cfg.train.max_iter),
                    period=cfg.train.log_period,
                )
                if comm.is_main_process()
                else None
            ),
        ]
    )

    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    if resume and checkpointer.has_checkpoint():
        # the checkpoint stores the iteration that just finished
        start_iter = trainer.iter + 1
    else:
        start_iter = 0
    trainer.train(start_iter, cfg.train.max_iter)
    return dict(results)


def _check_registered_datasets(cfg, args) -> None:
    """``model.num_classes`` against the category count of the ``--coco-dataset``s in use."""
    from ..data.user_datasets import check_num_classes

    registered = {name for name, _, _ in getattr(args, "coco_dataset", None) or []}
    used = set()
    for split in ("train", "test"):
        names = cfg.dataloader.get(split, {}).get("dataset", {}).get("names", ())
        used |= {names} if isinstance(names, str) else set(names)
    if "num_classes" in cfg.model:
        check_num_classes(sorted(registered & used), cfg.model.num_classes)


def lazy_main(args):
    """``train_net.py``'s entry for ``.py`` configs: train, or with ``--eval-only`` evaluate
    the weights of ``train.init_checkpoint`` (the last checkpoint of ``train.output_dir`` with
    ``--resume``)."""
    cfg = lazy_setup(args)
    _check_registered_datasets(cfg, args)
    if args.eval_only:
        model = build_lazy_model(cfg)
        model = _wrap_ddp(model, cfg) if comm.get_world_size() > 1 else model
        DetectionCheckpointer(model, save_dir=cfg.train.output_dir).resume_or_load(
            cfg.train.init_checkpoint, resume=args.resume
        )
        return do_test(cfg, model)
    return do_train(cfg, resume=args.resume)
