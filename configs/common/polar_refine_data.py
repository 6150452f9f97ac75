"""COCO instance-segmentation data for PolarRefine as a LazyConfig ``dataloader``.

detectron2's ``common/data/coco.py`` (``coco_2017_train`` / ``coco_2017_val``, 16 images per
batch, 4 workers) with the settings of ``configs/Base-PolarRefine.yaml``: training images
resized to 800 px on the short side (at most 1333), horizontal flips, polygon masks, and
`PolarDatasetMapper` computing the annotation-only polar targets in the loader workers (as
`PolarRefineTrainer` does for the YAML configs; ``contour_stride`` is the stride of the map the
contour head reads, 8 for P3); testing at 800 / 1333; evaluation by
`PolarCOCOEvaluator` (polygons straight to COCO RLE, 100 detections per image). The results
json goes to ``<train.output_dir>/inference/<dataset>`` (set by
``polar_refine.engine.lazy.do_test`` when ``output_dir`` is left None).

Instantiating ``dataloader.train`` / ``dataloader.test`` / ``dataloader.evaluator`` reads the
datasets (``$DETECTRON2_DATASETS/coco``); the mappers alone need nothing on disk.
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from polar_refine.data import PolarDatasetMapper
from polar_refine.evaluation import PolarCOCOEvaluator

dataloader = get_config("common/data/coco.py").dataloader

dataloader.train.mapper._target_ = PolarDatasetMapper
dataloader.train.mapper.contour_stride = 8  # P3 (model.contour.in_feature)
dataloader.train.mapper.contour_width = 1  # model.contour.boundary_width
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(800,), sample_style="choice", max_size=1333),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.mapper.use_instance_mask = True
dataloader.train.mapper.instance_mask_format = "polygon"

dataloader.evaluator = L(PolarCOCOEvaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir=None,
    max_dets_per_image=100,
)
