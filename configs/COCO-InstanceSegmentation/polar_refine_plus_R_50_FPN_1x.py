"""PolarRefine+ (R-50), the default: three refine stages + the contour head, COCO 1x.

The LazyConfig twin of ``polar_refine_plus_R_50_FPN_1x.yaml``: ImageNet R-50 weights, SGD
(lr 0.01, momentum 0.9, weight decay 1e-4, none on norms) over 16 images per batch, 90k
iterations with the LR divided by 10 at 60k and 80k, 500 warm-up iterations from 0.333, gradients
clipped to norm 35. Train it with::

    python train_net.py --num-gpus 8 \
        --config-file configs/COCO-InstanceSegmentation/polar_refine_plus_R_50_FPN_1x.py

Unlike the YAML, mixed precision is on (``train.amp.enabled``), as in detectron2's LazyConfig
baselines: fp16 autocast on CUDA, bf16 on the CPU.
"""

from detectron2.model_zoo import get_config

from ..common.polar_refine_data import dataloader  # noqa: F401
from ..common.polar_refine_model import model  # noqa: F401

optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.01  # SOLVER.BASE_LR for 16 images per batch

lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_1x  # 90k, x0.1 at 60k, 80k
lr_multiplier.warmup_length = 500 / 90000  # SOLVER.WARMUP_ITERS / MAX_ITER
lr_multiplier.warmup_factor = 0.333  # SOLVER.WARMUP_FACTOR

train = get_config("common/train.py").train
train.max_iter = 90000
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.amp.enabled = True
train.eval_period = 0  # evaluate once, after training (TEST.EVAL_PERIOD 0)
train.checkpointer.period = 5000
# SOLVER.CLIP_GRADIENTS of the YAML configs; applied by polar_refine.engine.lazy.do_train
train.clip_gradients = dict(enabled=True, clip_type="norm", clip_value=35.0, norm_type=2.0)
train.output_dir = "./output/polar_refine_plus_R_50_FPN_1x_lazy"
