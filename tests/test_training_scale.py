"""Training at scale: polar targets off the training loop (loader workers, tensor-only
assigner), no host synchronisation or host-to-device copy in a step, normalisers across
processes, and mixed precision on the CPU."""

import copy
import json
import math
import sys

import numpy as np
import pytest
import torch
from conftest import circle, draw_image, make_instances, tiny_cfg
from detectron2.data import DatasetMapper
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from reference_targets import ReferenceAssigner
from test_reliability import _awkward_polys

from polar_refine.data import PolarDatasetMapper
from polar_refine.modeling.targets import PolarTargetAssigner


def _crowded_polys(seed, n=40, h=160, w=192):
    """Many small, overlapping blobs (nuclei-like), some tiny enough to need the fallback."""
    rng = np.random.RandomState(seed)
    polys = []
    for _ in range(n):
        cx, cy = rng.uniform(8, w - 8), rng.uniform(8, h - 8)
        r = rng.choice([1.5, 3.0, 6.0, 12.0])
        polys.append([circle(cx, cy, r * rng.uniform(0.8, 1.2), n=12)])
    return polys


def _locations(model, h, w):
    feats = [torch.zeros(1, 1, math.ceil(h / s), math.ceil(w / s)) for s in model.strides]
    return model.locations(feats)


def _as_set(t):
    order = torch.argsort(t["pos_idx"])
    return t["pos_idx"][order], t["pos_inst"][order], t["radii"][order], t["centerness"][order]


@pytest.mark.parametrize("case", ["awkward", "crowded0", "crowded1", "crowded2", "crowded3"])
def test_tensor_assigner_matches_the_per_instance_reference(case):
    """The tensor-only assigner gives the targets of the former per-instance host loop."""
    if case == "awkward":
        polys, h, w = list(_awkward_polys().values()), 192, 200
    else:
        seed = int(case[-1])
        polys, h, w = _crowded_polys(seed, n=40 if seed < 2 else 120), 160, 192
    inst = make_instances(h, w, polys, [i % 3 for i in range(len(polys))])
    inst.gt_iscrowd = torch.zeros(len(polys), dtype=torch.long)
    inst.gt_iscrowd[1] = 1  # crowd: never a positive
    model = build_model(tiny_cfg())
    locs = _locations(model, h, w)
    ref = ReferenceAssigner(num_classes=6)(
        locs.points, locs.strides, locs.size_ranges, [copy.deepcopy(inst)]
    )[0]
    new = PolarTargetAssigner(num_classes=6)(locs, [inst])[0]
    assert torch.equal(new["labels"], ref["labels"])
    for a, b in zip(_as_set(new), _as_set(ref)):
        torch.testing.assert_close(a, b)
    assert 1 not in new["pos_inst"].tolist()
    if case != "awkward":  # the fallback ran: some instances have no centre-sampled positive
        assert len(set(new["pos_inst"].tolist())) >= len(polys) - 2


def _dataset_dicts(tmp_path, n=2, h=128, w=160):
    """Detectron2 dataset dicts (polygons, one crowd) with images written to disk."""
    import cv2

    dicts = []
    for i in range(n):
        polys = _crowded_polys(10 + i, n=12, h=h, w=w)
        img = draw_image(h, w, polys, seed=i).permute(1, 2, 0).numpy().astype(np.uint8)
        path = str(tmp_path / f"{i}.png")
        cv2.imwrite(path, img)
        anns = []
        for j, p in enumerate(polys):
            xy = np.asarray(p[0]).reshape(-1, 2)
            x0, y0 = xy.min(0)
            x1, y1 = xy.max(0)
            anns.append({"bbox": [x0, y0, x1, y1], "bbox_mode": 0, "category_id": j % 3,
                         "segmentation": p, "iscrowd": int(j == 5)})  # fmt: skip
        dicts.append({"file_name": path, "height": h, "width": w, "image_id": i,
                      "annotations": anns})  # fmt: skip
    return dicts


def _mapped(cfg, mapper_cls, dicts):
    mapper = mapper_cls(cfg, True)
    mapper.augmentations.augs = []  # no random flip: both mappers see the same geometry
    return [mapper(copy.deepcopy(d)) for d in dicts]


def _losses(cfg, batch, seed=0):
    torch.manual_seed(seed)
    model = build_model(cfg)
    model.train()
    with EventStorage(1):
        return model(batch), model


def test_loader_targets_equal_in_model_targets(tmp_path):
    """PolarDatasetMapper's precomputed targets give exactly the losses that detectron2's own
    DatasetMapper gives (the model then computes them itself)."""
    cfg = tiny_cfg()
    dicts = _dataset_dicts(tmp_path)
    loader = _mapped(cfg, PolarDatasetMapper, dicts)
    plain = _mapped(cfg, DatasetMapper, dicts)
    assert loader[0]["instances"].has("gt_polar_edges") and "polar_contour" in loader[0]
    assert not plain[0]["instances"].has("gt_polar_edges") and "polar_contour" not in plain[0]
    assert loader[0]["polar_contour"].sum() > 0
    a, _ = _losses(cfg, loader)
    b, _ = _losses(cfg, plain)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_training_step_with_loader_targets_never_syncs_with_the_host(tmp_path, monkeypatch):
    """With PolarDatasetMapper, a training step (forward, targets, losses, backward) calls none
    of the host-sync methods: they raise if called."""
    cfg = tiny_cfg()
    batch = _mapped(cfg, PolarDatasetMapper, _dataset_dicts(tmp_path))
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()

    def forbidden(name):
        def f(*args, **kwargs):
            raise AssertionError(f"host sync: Tensor.{name} called in the training step")

        return f

    with EventStorage(1):
        for name in ("cpu", "item", "tolist", "numpy", "__int__", "__float__", "__bool__"):
            monkeypatch.setattr(torch.Tensor, name, forbidden(name))
        losses = model(batch)
        total = sum(losses.values())
        total.backward()
        monkeypatch.undo()
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.refiner.stages[0].delta.weight.grad is not None


def test_training_step_builds_no_tensor_from_host_data(tmp_path, monkeypatch):
    """With PolarDatasetMapper, a training step (forward, targets, losses, backward) builds no
    tensor on the model's device from Python or numpy data: each such build is a blocking
    host-to-device copy on a GPU. Constants are buffers, Python scalars or ``arange``."""
    cfg = tiny_cfg()
    batch = _mapped(cfg, PolarDatasetMapper, _dataset_dicts(tmp_path))
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    built = []

    def recording(name, fn, method=False):
        def f(*args, **kwargs):
            if method or kwargs.get("device") is not None:
                built.append(name)
            return fn(*args, **kwargs)

        return f

    with EventStorage(1):
        for name in ("tensor", "as_tensor", "asarray"):
            monkeypatch.setattr(torch, name, recording(name, getattr(torch, name)))
        monkeypatch.setattr(
            torch.Tensor, "new_tensor", recording("new_tensor", torch.Tensor.new_tensor, True)
        )
        losses = model(batch)
        sum(losses.values()).backward()
        monkeypatch.undo()
    assert built == []
    assert all(torch.isfinite(v) for v in losses.values())


def test_amp_bf16_on_cpu_trains_with_finite_losses(tmp_path, tmp_cache):
    """SOLVER.AMP.ENABLED on the CPU: PolarAMPTrainer, bf16 autocast, finite losses."""
    from polar_refine.engine import PolarAMPTrainer, PolarRefineTrainer

    cfg = tiny_cfg(
        DATASETS__TRAIN="('shapes_tiny_train',)", SOLVER__IMS_PER_BATCH="2",
        DATALOADER__NUM_WORKERS="0", INPUT__MIN_SIZE_TRAIN="(128,)", SOLVER__MAX_ITER="3",
        SOLVER__WARMUP_ITERS="1", SOLVER__AMP__ENABLED="True", OUTPUT_DIR=str(tmp_path),
    )  # fmt: skip
    cfg.DATASETS.TEST = ()
    trainer = PolarRefineTrainer(cfg)
    assert isinstance(trainer._trainer, PolarAMPTrainer)
    assert trainer._trainer.precision == torch.bfloat16
    dtypes = []
    trainer._trainer.model.head.register_forward_hook(
        lambda m, i, o: dtypes.append((o[0][0].dtype, o[2][0].dtype))
    )
    trainer.resume_or_load(resume=False)
    trainer.train()
    # autocast was on; the radii stay float32
    assert dtypes and all(d == (torch.bfloat16, torch.float32) for d in dtypes)
    for k in ("loss_cls", "loss_ctr", "loss_coarse", "loss_fine", "loss_contour"):
        vals = [v for v, _ in trainer.storage.history(k).values()]
        assert len(vals) == 3 and all(math.isfinite(v) for v in vals), (k, vals)


def _two_images():
    polys_a = [[circle(40, 40, 20)], [circle(90, 70, 14)], [circle(30, 100, 3)]]
    polys_b = [[circle(60, 60, 30)], [circle(110, 30, 9)]]
    return [
        {"image": draw_image(128, 128, polys_a, seed=1),
         "instances": make_instances(128, 128, polys_a, [0, 1, 2])},
        {"image": draw_image(128, 128, polys_b, seed=2),
         "instances": make_instances(128, 128, polys_b, [3, 0])},
    ]  # fmt: skip


def _step(model, batch):
    with EventStorage(1):
        losses = model(batch)
        sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


def _ddp_worker(out_path):
    """One of two processes: its own image, DDP-averaged gradients, all-gathered losses."""
    from detectron2.utils import comm

    from polar_refine.engine import wrap_ddp

    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    model.train()
    ddp = wrap_ddp(model)
    rank = comm.get_rank()
    with EventStorage(1):
        losses = ddp([_two_images()[rank]])
        sum(losses.values()).backward()
    losses = {k: float(v) for k, v in losses.items()}
    gathered = comm.all_gather(losses)
    if rank == 0:
        mean = {k: sum(g[k] for g in gathered) / len(gathered) for k in losses}
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        torch.save({"losses": mean, "grads": grads}, out_path)


@pytest.mark.skipif(sys.platform != "linux", reason="uses gloo over localhost")
def test_two_processes_equal_one_process_with_both_images(tmp_path):
    """Normalisers all-reduced: 2 processes x 1 image == 1 process x 2 images, in the mean of
    the processes' losses (what detectron2 logs) and in the (DDP-averaged) gradients."""
    from detectron2.engine import launch

    out = str(tmp_path / "ddp.pt")
    launch(_ddp_worker, 2, dist_url="auto", args=(out,))
    ddp = torch.load(out, weights_only=False)

    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    model.train()
    losses, grads = _step(model, _two_images())
    assert ddp["losses"].keys() == losses.keys()
    for k, v in losses.items():
        assert ddp["losses"][k] == pytest.approx(float(v), rel=1e-4, abs=1e-6), k
    assert ddp["grads"].keys() == grads.keys()
    worst = max(
        float((ddp["grads"][n] - g).abs().max() / g.abs().max().clamp(min=1e-8))
        for n, g in grads.items()
    )
    assert worst < 1e-3, worst
    print(json.dumps({"max relative gradient difference": worst}))


def test_building_the_mapper_leaves_the_global_rng_alone():
    """PolarDatasetMapper builds a backbone for its output_shape(); the global RNG must come out
    as it went in, or the loader's worker seeds (drawn from it) and so the augmentations of a
    seeded training would change."""
    cfg = tiny_cfg()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    mapper = PolarDatasetMapper(cfg, True)
    assert mapper.contour_stride == 8
    assert torch.equal(torch.get_rng_state(), before)
