#!/usr/bin/env python
"""Train and evaluate PolarRefine with detectron2's own machinery.

    python train_net.py --config-file configs/Shapes/polar_refine_tiny.yaml
    python train_net.py --config-file configs/Shapes/polar_refine_tiny.py train.max_iter=100
    python train_net.py --config-file configs/Shapes/polar_refine_tiny.yaml --resume
    python train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/model_final.pth
                                        # (metrics also in OUTPUT_DIR/results.json)
    python train_net.py --config-file CFG --num-gpus 8                     # one machine
    python train_net.py --config-file CFG --num-gpus 8 --num-machines 2 \\
        --machine-rank 0 --dist-url tcp://HOST:PORT                          # several machines

Without a GPU, ``--num-gpus N`` starts N CPU processes (gloo), and ``MODEL.DEVICE`` is set to
"cpu" automatically.

A ``.yaml`` config goes to `PolarRefineTrainer` (overrides: ``KEY VALUE`` pairs); a ``.py``
(LazyConfig) config to `polar_refine.engine.lazy` (overrides: ``key=value``), modelled on
detectron2's ``tools/lazyconfig_train_net.py``. ``--coco-dataset NAME JSON IMAGE_ROOT``
(repeatable) registers a COCO-format folder under NAME first, in every process.
"""

import json
import logging
import os

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.evaluation.testing import flatten_results_dict
from detectron2.utils import comm

import polar_refine  # noqa: F401  (registers PolarRefine, its head, evaluator and datasets)
from polar_refine import add_polar_refine_config
from polar_refine.data.user_datasets import (
    add_dataset_arguments,
    check_num_classes,
    register_datasets_from_args,
)
from polar_refine.engine import PolarRefineTrainer
from polar_refine.engine.lazy import lazy_main

logger = logging.getLogger("polar_refine")


def setup(args):
    """Config from defaults + MODEL.POLAR_REFINE + the YAML + the command-line overrides."""
    cfg = get_cfg()
    add_polar_refine_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if not torch.cuda.is_available() and cfg.MODEL.DEVICE != "cpu":
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    """Run in every process by ``launch``: register ``--coco-dataset``s, then train or test."""
    registered = register_datasets_from_args(args)
    if args.config_file.endswith(".py"):
        return lazy_main(args)
    cfg = setup(args)
    used = set(cfg.DATASETS.TRAIN) | set(cfg.DATASETS.TEST)
    check_num_classes([n for n in registered if n in used], cfg.MODEL.POLAR_REFINE.NUM_CLASSES)
    if args.eval_only:
        model = PolarRefineTrainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = PolarRefineTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
            # the metrics as training's metrics.json names them (e.g. "segm/AP-c_shape")
            with open(os.path.join(cfg.OUTPUT_DIR, "results.json"), "w") as f:
                json.dump(flatten_results_dict(res), f, indent=1)
        return res
    trainer = PolarRefineTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None):
    args = add_dataset_arguments(default_argument_parser()).parse_args(argv)
    if args.config_file == "":
        args.config_file = os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "configs/Shapes/polar_refine_tiny.yaml"
        )
    return launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    cli()
