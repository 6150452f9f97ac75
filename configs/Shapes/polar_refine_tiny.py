"""PolarRefine+ as a tiny CPU LazyConfig: the twin of ``polar_refine_tiny.yaml``.

ResNet-18 (GN, random init), 64-channel FPN (GN) and head (4 convs per tower), contour head of
32/16/16/16 channels, trained on the embedded synthetic shapes (``shapes_train``, 4 images of
160-208 px per batch, 1,800 iterations, no mixed precision) and tested on ``shapes_val`` at
192 px::

    python train_net.py --config-file configs/Shapes/polar_refine_tiny.py
    python train_net.py --config-file configs/Shapes/polar_refine_tiny.py train.max_iter=100
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from detectron2.modeling.backbone import BasicStem, ResNet

from ..common.polar_refine_data import dataloader  # noqa: F401
from ..common.polar_refine_model import model  # noqa: F401

# ---- model: MODEL.RESNETS.DEPTH 18, NORM GN, FREEZE_AT 0; FPN 64 channels, GN
bottom_up = model.backbone.bottom_up
bottom_up.stem = L(BasicStem)(in_channels=3, out_channels=64, norm="GN")
bottom_up.stages = L(ResNet.make_default_stages)(depth=18, norm="GN")
bottom_up.freeze_at = 0
model.backbone.out_channels = 64
model.backbone.norm = "GN"
model.backbone.top_block.in_channels = 512  # C5 of a ResNet-18
model.head.input_shape = [ShapeSpec(channels=64, stride=s) for s in (8, 16, 32, 64, 128)]
model.head.num_convs = 4
model.refiner.in_channels = 64
model.contour.input_shape = ShapeSpec(channels=64, stride=8)
model.contour.channels = [32, 16, 16, 16]
model.num_classes = 6  # circle, ellipse, square, triangle, star, c_shape
model.sizes_of_interest = [32, 64, 128, 256]

# ---- data: shapes, 4 images per batch of 160-208 px (at most 320), tested at 192 px
dataloader.train.dataset.names = "shapes_train"
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(
        short_edge_length=(160, 176, 192, 208), sample_style="choice", max_size=320
    ),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 1
dataloader.test.dataset.names = "shapes_val"
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=192, max_size=320),
]
dataloader.test.num_workers = 1

# ---- solver: lr 0.01, x0.1 at 1,200 and 1,600 of 1,800 iterations, 100 warm-up iterations
optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.01

lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_1x
lr_multiplier.scheduler.milestones = [1200, 1600, 1800]
lr_multiplier.warmup_length = 100 / 1800
lr_multiplier.warmup_factor = 0.333

train = get_config("common/train.py").train
train.max_iter = 1800
train.device = "cpu"
train.init_checkpoint = ""
train.amp.enabled = False
train.eval_period = 0  # evaluate once, after training
train.checkpointer.period = 500
train.clip_gradients = dict(enabled=True, clip_type="norm", clip_value=35.0, norm_type=2.0)
train.output_dir = "./output/shapes_tiny_lazy"
