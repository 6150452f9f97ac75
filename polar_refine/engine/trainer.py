"""A detectron2 DefaultTrainer for PolarRefine (evaluator by dataset type, CPU-safe DDP)."""

import logging
import os
import weakref

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, create_ddp_model
from detectron2.engine.train_loop import TrainerBase
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

__all__ = ["PolarRefineTrainer", "wrap_ddp"]


def wrap_ddp(model):
    """detectron2's ``create_ddp_model``, but with ``device_ids=None`` for CPU models.

    ``create_ddp_model`` passes ``device_ids=[local_rank]``, which PyTorch's DDP rejects for a
    module on the CPU, so a multi-process CPU ``launch`` (gloo) would fail.
    """
    on_cpu = next(model.parameters()).device.type == "cpu"
    kwargs = {"device_ids": None} if on_cpu else {}
    return create_ddp_model(model, broadcast_buffers=False, **kwargs)


class PolarRefineTrainer(DefaultTrainer):
    """``DefaultTrainer`` with:

    * ``build_evaluator`` choosing by the dataset's ``evaluator_type``: ``"polar_coco"`` and
      ``"coco"`` get `PolarCOCOEvaluator` (polygons straight to RLE, no ``_C`` needed);
    * DDP that also works for CPU processes (see `wrap_ddp`).

    Data loading, solver, LR schedule, checkpointing (``--resume``) and TensorBoard/JSON writers
    are detectron2's own.
    """

    def __init__(self, cfg):  # mirrors DefaultTrainer.__init__; only the DDP wrapping differs
        TrainerBase.__init__(self)
        logger = logging.getLogger("detectron2")
        if not logger.isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = wrap_ddp(model)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(
            model, data_loader, optimizer
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        from ..evaluation import PolarCOCOEvaluator

        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", "polar_coco")
        if evaluator_type in ("polar_coco", "coco"):
            return PolarCOCOEvaluator(
                dataset_name,
                output_dir=output_folder,
                max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
            )
        if evaluator_type == "coco_raster":
            return COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=False)
        raise NotImplementedError(
            f"no evaluator for dataset {dataset_name!r} of evaluator_type {evaluator_type!r}"
        )
