# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""Training utilities: the PolarRefine trainer, the mixed-precision step trainer and DDP."""

from .amp import PolarAMPTrainer, build_train_loop  # noqa: F401
from .trainer import PolarRefineTrainer, polar_training_parts, wrap_ddp  # noqa: F401
