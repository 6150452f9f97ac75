# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""Mixed-precision training on any device: detectron2's ``AMPTrainer`` without its CUDA assert."""

import time

import torch
from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.utils.events import get_event_storage

__all__ = ["PolarAMPTrainer", "build_train_loop"]


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class PolarAMPTrainer(AMPTrainer):
    """detectron2's `AMPTrainer`, with ``torch.autocast`` on the model's own device.

    `AMPTrainer.run_step` asserts ``torch.cuda.is_available()`` and uses ``torch.cuda.amp``. This
    class keeps its step line for line but autocasts on the model's device: fp16 with a
    ``GradScaler`` on CUDA (detectron2's default), bf16 without loss scaling on the CPU
    (``torch.autocast("cpu", dtype=torch.bfloat16)``; bf16 has fp32's exponent range, so no
    scaler is needed and the scaler here is disabled, a pass-through).
    """

    def __init__(self, model, data_loader, optimizer, *args, precision=None, grad_scaler=None,
                 **kwargs):  # fmt: skip
        device = _model_device(model)
        if precision is None:
            precision = torch.float16 if device.type == "cuda" else torch.bfloat16
        if grad_scaler is None:
            grad_scaler = torch.amp.GradScaler(
                device.type, enabled=precision == torch.float16 and device.type == "cuda"
            )
        super().__init__(
            model, data_loader, optimizer, *args, grad_scaler=grad_scaler, precision=precision,
            **kwargs,
        )  # fmt: skip
        self.device_type = device.type

    def run_step(self):
        """`AMPTrainer.run_step`, with ``torch.autocast(self.device_type, self.precision)``."""
        assert self.model.training, "[PolarAMPTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast(self.device_type, dtype=self.precision):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses = loss_dict
                loss_dict = {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())

        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()

        self.grad_scaler.scale(losses).backward()

        if self.log_grad_scaler:
            storage = get_event_storage()
            storage.put_scalar("[metric]grad_scaler", self.grad_scaler.get_scale())

        self.after_backward()

        if self.async_write_metrics:
            self.concurrent_executor.submit(
                self._write_metrics, loss_dict, data_time, iter=self.iter
            )
        else:
            self._write_metrics(loss_dict, data_time)

        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()


def build_train_loop(model, data_loader, optimizer, *, amp: bool = False, **kwargs):
    """The step trainer for a (possibly DDP-wrapped) model: `PolarAMPTrainer` when ``amp``,
    else detectron2's `SimpleTrainer`. Extra keyword arguments go to the trainer."""
    cls = PolarAMPTrainer if amp else SimpleTrainer
    return cls(model, data_loader, optimizer, **kwargs)
