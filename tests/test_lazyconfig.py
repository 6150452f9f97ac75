"""LazyConfig (``.py``) configs: every one instantiates offline and builds the model of its YAML
twin; the tiny one trains through ``train_net.py`` (2 steps), resumes and evaluates."""

import glob
import json
import os

import pytest
import torch
from conftest import ROOT

import train_net

PY_CONFIGS = sorted(
    os.path.relpath(p, ROOT)
    for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
    if os.sep + "common" + os.sep not in p
)
TINY_PY = os.path.join(ROOT, "configs/Shapes/polar_refine_tiny.py")
FAST = [
    "dataloader.train.dataset.names=shapes_tiny_train",
    "dataloader.test.dataset.names=shapes_tiny_val",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "lr_multiplier.warmup_length=0.1",
    "train.log_period=1",
]


def _load(path):
    from detectron2.config import LazyConfig

    return LazyConfig.load(os.path.join(ROOT, path))


def _yaml_model(path):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    import polar_refine

    cfg = get_cfg()
    polar_refine.add_polar_refine_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, path))
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg)


def _run(argv):
    """``train_net.py ARGV`` in this process (``launch`` with one process runs ``main``)."""
    from detectron2.engine import default_argument_parser

    from polar_refine.data.user_datasets import add_dataset_arguments

    return train_net.main(add_dataset_arguments(default_argument_parser()).parse_args(argv))


def _settings(model):
    """The plain settings (numbers, strings, lists) of every module of ``model`` and of its
    target assigner, by attribute path."""
    from omegaconf import ListConfig

    out = {}
    owners = [(n, m) for n, m in model.named_modules()] + [("assigner", model.assigner)]
    for name, owner in owners:
        for key, value in vars(owner).items():
            if isinstance(value, ListConfig):
                value = list(value)
            if isinstance(value, (list, tuple)) and not all(
                isinstance(v, (int, float, str)) for v in value
            ):
                continue  # lists of modules: compared through repr above
            if key.startswith("_") or not isinstance(value, (int, float, str, list, tuple)):
                continue
            out[f"{name}.{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def _metrics(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return [json.loads(line) for line in f]


def test_configs_found():
    names = {os.path.basename(p) for p in PY_CONFIGS}
    for depth in (50, 101):
        for row in ("polarmask", "polar_refine", "polar_refine_contour"):
            assert f"{row}_R_{depth}_FPN_1x.py" in names
    assert "polar_refine_tiny.py" in names


@pytest.mark.parametrize("path", PY_CONFIGS)
def test_python_config_instantiates_as_its_yaml_twin(path):
    """Model (random init, no download), optimizer, LR schedule and mappers instantiate; the
    model is the YAML twin's module for module, with the same parameters and frozen ones.

    The data loaders and the evaluator are not instantiated: they read the datasets (COCO 2017
    for the Table-1 rows, whose images are not part of the test data)."""
    from detectron2.config import instantiate
    from detectron2.data import DatasetCatalog

    cfg = _load(path)
    for key in ("model", "dataloader", "optimizer", "lr_multiplier", "train"):
        assert key in cfg, key
    model = instantiate(cfg.model)
    twin = _yaml_model(path[: -len(".py")] + ".yaml")
    assert repr(model) == repr(twin)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in twin.state_dict().items()}
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable == {k for k, p in twin.named_parameters() if p.requires_grad}
    assert _settings(model) == _settings(twin)

    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    assert optimizer.param_groups
    scheduler = instantiate(cfg.lr_multiplier)
    assert 0 < scheduler(0.0) < 1 and scheduler(0.5) == 1.0  # warm-up, then the base LR
    from polar_refine.data import PolarDatasetMapper

    train_mapper = instantiate(cfg.dataloader.train.mapper)
    assert isinstance(train_mapper, PolarDatasetMapper)  # as PolarRefineTrainer's loader
    assert train_mapper.contour_stride == (model.contour.stride if model.contour else 0)
    assert train_mapper.use_instance_mask and train_mapper.instance_mask_format == "polygon"
    instantiate(cfg.dataloader.test.mapper)
    for split in ("train", "test"):
        assert cfg.dataloader[split].dataset.names in DatasetCatalog.list()
    assert cfg.dataloader.evaluator.dataset_name == cfg.dataloader.test.dataset.names
    if "COCO-InstanceSegmentation" in path:
        depth = 101 if "R_101" in path else 50
        assert cfg.train.init_checkpoint.endswith(f"MSRA/R-{depth}.pkl")
        assert cfg.train.max_iter == 90000 and cfg.optimizer.lr == 0.01
        assert cfg.train.amp.enabled  # as detectron2's LazyConfig baselines
        assert cfg.dataloader.train.total_batch_size == 16


def test_gradient_clipping_matches_detectron2():
    """train.clip_gradients clips as the YAML configs' SOLVER.CLIP_GRADIENTS (per parameter)."""
    from detectron2.config import get_cfg
    from detectron2.solver.build import maybe_add_gradient_clipping

    from polar_refine.engine.lazy import add_gradient_clipping

    def step(make):
        p = torch.nn.Parameter(torch.ones(3))
        opt = make([p])
        p.grad = torch.tensor([30.0, 40.0, 0.0])
        opt.step()
        return p.detach()

    def ours(params):
        opt = torch.optim.SGD(params, lr=1.0)
        add_gradient_clipping(opt, dict(enabled=True, clip_type="norm", clip_value=5.0))
        return opt

    cfg = get_cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 5.0
    theirs = maybe_add_gradient_clipping(cfg, torch.optim.SGD)
    expected = step(lambda params: theirs(params, lr=1.0))
    assert torch.allclose(step(ours), expected)
    assert torch.allclose(expected, torch.tensor([1 - 3.0, 1 - 4.0, 1.0]), atol=1e-4)


def test_tiny_python_config_trains_resumes_and_evaluates(tmp_path, tmp_cache):
    """train_net.py with the tiny .py config: 2 steps, --resume for 1 more, --eval-only."""
    out = str(tmp_path / "lazy")
    common = ["--config-file", TINY_PY]
    opts = FAST + [f"train.output_dir={out}", "train.checkpointer.period=2"]
    res = _run(common + opts + ["train.max_iter=2"])
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    assert os.path.isfile(os.path.join(out, "config.yaml"))  # dumped by default_setup
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))
    steps = [r for r in _metrics(out) if "total_loss" in r]
    assert [r["iteration"] for r in steps] == [0, 1]
    assert {"loss_cls", "loss_fine", "loss_contour"} <= set(steps[-1])
    assert set(res) >= {"segm", "bbox"}  # evaluated after the last step (train.eval_period 0)
    assert any("segm/AP" in r for r in _metrics(out))
    results_json = os.path.join(out, "inference", "shapes_tiny_val", "coco_instances_results.json")
    assert os.path.isdir(os.path.dirname(results_json))

    _run(common + ["--resume"] + opts + ["train.max_iter=3"])
    log = open(os.path.join(out, "log.txt")).read()
    assert "Starting training from iteration 2" in log
    ckpt = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == 2

    weights = os.path.join(out, "model_final.pth")
    res = _run(common + ["--eval-only"] + opts + [f"train.init_checkpoint={weights}"])
    assert all(k in res["segm"] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))


def test_lazy_amp_on_cpu(tmp_path, tmp_cache, monkeypatch):
    """train.amp.enabled (on in the COCO configs) trains on the CPU (bf16 autocast)."""
    from polar_refine.engine import PolarAMPTrainer, lazy

    built, original = [], lazy.build_train_loop

    def recording(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(lazy, "build_train_loop", recording)
    out = str(tmp_path / "amp")
    argv = ["--config-file", TINY_PY] + FAST
    argv += [f"train.output_dir={out}", "train.max_iter=2", "train.amp.enabled=True"]
    argv += ["train.eval_period=0", "dataloader.test.dataset.names=shapes_tiny_val"]
    _run(argv)
    assert len(built) == 1 and isinstance(built[0], PolarAMPTrainer)
    losses = [r["total_loss"] for r in _metrics(out) if "total_loss" in r]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
