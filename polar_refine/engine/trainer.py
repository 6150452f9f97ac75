# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""A detectron2 DefaultTrainer for PolarRefine (evaluator by dataset type, CPU-safe DDP)."""

import contextlib
import os
from unittest import mock

from detectron2.data import MetadataCatalog, build_detection_train_loader
from detectron2.engine import DefaultTrainer, create_ddp_model
from detectron2.evaluation import COCOEvaluator

from .amp import PolarAMPTrainer

__all__ = ["PolarRefineTrainer", "polar_training_parts", "wrap_ddp"]


def wrap_ddp(model, **kwargs):
    """detectron2's ``create_ddp_model``, but with ``device_ids=None`` for CPU models.

    ``create_ddp_model`` passes ``device_ids=[local_rank]``, which PyTorch's DDP rejects for a
    module on the CPU, so a multi-process CPU ``launch`` (gloo) would fail.
    """
    on_cpu = next(model.parameters()).device.type == "cpu"
    if on_cpu:
        kwargs["device_ids"] = None
    kwargs.setdefault("broadcast_buffers", False)
    return create_ddp_model(model, **kwargs)


@contextlib.contextmanager
def polar_training_parts():
    """Within this context, ``DefaultTrainer.__init__`` wraps models with `wrap_ddp` and builds
    `PolarAMPTrainer` for ``SOLVER.AMP.ENABLED`` (instead of ``create_ddp_model``, which fails
    for CPU processes, and ``AMPTrainer``, which asserts CUDA). Patching these two names of
    ``detectron2.engine.defaults`` for the duration of the constructor keeps the rest of
    ``DefaultTrainer.__init__`` upstream's own rather than a copy."""
    with mock.patch.multiple(
        "detectron2.engine.defaults", create_ddp_model=wrap_ddp, AMPTrainer=PolarAMPTrainer
    ):
        yield


class PolarRefineTrainer(DefaultTrainer):
    """``DefaultTrainer`` with:

    * ``build_evaluator`` choosing by the dataset's ``evaluator_type``: ``"polar_coco"`` and
      ``"coco"`` get `PolarCOCOEvaluator` (polygons straight to RLE, no ``_C`` needed);
    * DDP that also works for CPU processes (see `wrap_ddp`);
    * ``SOLVER.AMP.ENABLED`` on the CPU too (bf16 autocast, see `PolarAMPTrainer`);
    * the polar targets computed in the loader workers (`PolarDatasetMapper`);
    * with ``MODEL.POLAR_REFINE.DEFORM`` (whose stages train alone on a trained model), an
      error when there is no model to start from.

    Data loading, solver, LR schedule, checkpointing (``--resume``) and TensorBoard/JSON writers
    are detectron2's own.
    """

    def __init__(self, cfg):
        with polar_training_parts():
            super().__init__(cfg)

    def resume_or_load(self, resume=True):
        start = self.cfg.MODEL.WEIGHTS or (resume and self.checkpointer.has_checkpoint())
        if self.cfg.MODEL.POLAR_REFINE.DEFORM.ENABLED and not start:
            raise ValueError(
                "MODEL.POLAR_REFINE.DEFORM trains the deformation stages alone on a trained model: "
                "set MODEL.WEIGHTS to its checkpoint (e.g. the default's model_final.pth)"
            )
        super().resume_or_load(resume)

    @classmethod
    def build_train_loader(cls, cfg):
        """detectron2's train loader with `PolarDatasetMapper`, which loads the masks and
        computes the annotation-only polar targets in the workers."""
        from ..data.mapper import PolarDatasetMapper

        return build_detection_train_loader(cfg, mapper=PolarDatasetMapper(cfg, True))

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
