"""Training and evaluation through detectron2's machinery: train_net.py, resume, eval-only,
plain DefaultTrainer, and the 2-process CPU launch."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

import train_net

TINY = os.path.join(ROOT, "configs/Shapes/polar_refine_tiny.yaml")
FAST = [
    "DATASETS.TRAIN", "('shapes_tiny_train',)",
    "DATASETS.TEST", "('shapes_tiny_val',)",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.WARMUP_ITERS", "2",
    "DATALOADER.NUM_WORKERS", "0",
    "INPUT.MIN_SIZE_TRAIN", "(128,)",
    "INPUT.MIN_SIZE_TEST", "128",
]  # fmt: skip


def _args(*argv):
    from detectron2.engine import default_argument_parser

    return default_argument_parser().parse_args(list(argv))


def _metrics(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return [json.loads(line) for line in f]


def test_train_checkpoint_resume_and_eval_only(tmp_path, tmp_cache):
    out = str(tmp_path / "run")
    common = ["--config-file", TINY]
    opts = FAST + ["OUTPUT_DIR", out, "SOLVER.CHECKPOINT_PERIOD", "4", "SOLVER.STEPS", "(100,)"]
    train_net.main(_args(*common, *opts, "SOLVER.MAX_ITER", "4"))
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    assert os.path.isfile(os.path.join(out, "last_checkpoint"))
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))  # TensorBoard
    rows = _metrics(out)
    assert any("segm/AP" in r and "bbox/AP" in r for r in rows)  # evaluated at the end
    assert max(r["iteration"] for r in rows if "total_loss" in r) == 3

    # --resume continues from the checkpoint's iteration, not from 0
    train_net.main(_args(*common, "--resume", *opts, "SOLVER.MAX_ITER", "6"))
    log = open(os.path.join(out, "log.txt")).read()
    assert "Starting training from iteration 4" in log
    ckpt = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == 5

    # --eval-only with the trained weights
    res = train_net.main(
        _args(
            *common, "--eval-only", *FAST, "OUTPUT_DIR", out,
            "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
        )
    )  # fmt: skip
    assert set(res) >= {"segm", "bbox"}
    assert all(k in res["segm"] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))
    # ... and saved, named as training's metrics.json names them
    saved = json.load(open(os.path.join(out, "results.json")))
    assert saved["segm/AP"] == res["segm"]["AP"] or math.isnan(res["segm"]["AP"])
    assert {"bbox/AP", "segm/AP50"} <= set(saved)


def test_plain_default_trainer_with_default_mapper(tmp_path, tmp_cache):
    """No custom mapper or trainer: detectron2's DefaultTrainer trains PolarRefine as is."""
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultTrainer

    import polar_refine

    cfg = get_cfg()
    polar_refine.add_polar_refine_config(cfg)
    cfg.merge_from_file(TINY)
    cfg.merge_from_list(FAST + ["OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "2"])
    cfg.DATASETS.TEST = ()
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 2  # after_train: iter == max_iter
    assert trainer.storage.history("total_loss").latest() > 0


@pytest.mark.skipif(sys.platform != "linux", reason="uses gloo over localhost")
def test_two_process_cpu_launch(tmp_path, tmp_cache):
    """train_net.py --num-gpus 2 on a machine without GPU: 2 CPU processes over gloo."""
    out = str(tmp_path / "ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1", POLAR_REFINE_CACHE=str(tmp_cache))
    cmd = [sys.executable, os.path.join(ROOT, "train_net.py"), "--num-gpus", "2",
           "--config-file", TINY, *FAST, "SOLVER.MAX_ITER", "3", "DATASETS.TEST", "()",
           "OUTPUT_DIR", out]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = open(os.path.join(out, "log.txt")).read()
    assert "world size: 2" in log.lower() or "Rank of current process: 0. World size: 2" in log
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
