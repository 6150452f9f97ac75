"""Training utilities: the PolarRefine trainer and the config/launch helpers of train_net.py."""

from .trainer import PolarRefineTrainer, wrap_ddp  # noqa: F401
