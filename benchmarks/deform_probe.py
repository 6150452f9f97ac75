#!/usr/bin/env python
"""The deformation stages trained alone on a trained model's frozen features: a quick probe.

    DETECTRON2_DATASETS=../shared/data .venv/bin/python benchmarks/deform_probe.py \
        --weights output/ablation/shapes/polarrefine_default_seed0/model_final.pth

Loads a model trained without ``MODEL.POLAR_REFINE.DEFORM``, adds fresh deformation stages,
and draws ``--batches`` training batches once: their FPN levels, positives, refined polar radii
and ground-truth edges are kept in memory. The stages alone then train on those batches for
``--iters`` SGD steps (the rest of the model never changes, as when ``DEFORM`` trains them,
which draws fresh batches instead). Reported:

* per category, the plain matching distance (`contour_match_loss`, beta 0, a fraction of the
  object's size) of the last ``--held`` batches' positives (not trained on): the polar contour
  the stages start from, and the deformed one;
* per category, the share of those deformed contours that cross themselves (`self_crossing`:
  tangled, which the even-odd fill draws with holes);
* the val segm AP (all and per category) of the model with the trained stages.

``--train-only CATEGORY`` trains the stages on that category's positives alone (the distances
and the AP are still reported for all).

Drawing the batches once makes the steps cheap (about 5 minutes in all on the tiny shapes
configuration), and the held-out distances show which categories a change to the stages helps,
before the ablation's runs.
"""

import argparse
import collections
import os
import sys

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.evaluation.testing import flatten_results_dict
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage
from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from polar_refine import add_polar_refine_config  # noqa: E402
from polar_refine.engine import PolarRefineTrainer  # noqa: E402
from polar_refine.modeling.deform import (  # noqa: E402
    _polygon_size_from_edges,
    contour_match_loss,
    positive_edges,
    resample_polygons,
    self_crossing,
)
from polar_refine.polar import radii_to_points  # noqa: E402


@torch.no_grad()
def draw_batches(model, cfg, count):
    """``count`` training batches through the frozen model: what the stages need of each."""
    loader = iter(PolarRefineTrainer.build_train_loader(cfg))
    batches = []
    with EventStorage(0):
        for _ in tqdm(range(count), desc="drawing batches"):
            data = next(loader)
            images = model.preprocess_image(data)
            levels = model.backbone(images.tensor)
            feats = [levels[f] for f in model.head_in_features]
            pred = model.head(feats)
            gts = [x["instances"] for x in data]
            flat, locs, targets, img, idx = model._positives(feats, pred, gts)
            fine = model.refiner(feats, locs, idx, img, flat[2][img, idx])[-1]
            batches.append(
                {
                    "feats": feats,
                    "pixels": images.tensor,
                    "locs": locs,
                    "idx": idx,
                    "img": img,
                    "fine": fine,
                    "target": torch.cat([t["radii"] for t in targets]),
                    "edges": positive_edges(gts, targets),
                    "ctr": torch.cat([t["centerness"] for t in targets]),
                    "cls": torch.cat([g.gt_classes[t["pos_inst"]] for g, t in zip(gts, targets)]),
                }
            )
    return batches


def train_stages(deformer, batches, iters, lr, momentum, start, only=None):
    """SGD on the stages only, the solver's warm-up and a x0.1 step at 80 %; the losses are
    normalised as in training (centre-ness sum, EMA 0.9). ``only``: a category index, the
    other categories' positives weigh 0."""
    opt = torch.optim.SGD(deformer.parameters(), lr=lr, momentum=momentum, weight_decay=1e-4)
    deformer.train()
    norm = None
    for it in tqdm(range(iters), desc="training the stages"):
        b = batches[it % len(batches)]
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (it + 1) / 100) * (0.1 if it >= 0.8 * iters else 1.0)
        out = deformer(b["feats"], b["pixels"], b["locs"], b["idx"], b["img"], b[start])
        weight = b["ctr"] if only is None else b["ctr"] * (b["cls"] == only)
        s = weight.sum().clamp(min=1e-2).item()
        norm = s if norm is None else 0.9 * norm + 0.1 * s
        loss = sum(deformer.losses(out, b["edges"], weight, norm).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    deformer.eval()


@torch.no_grad()
def match_distances(deformer, batches, names, start):
    """Per category: (mean polar distance, mean deformed distance, positives, share of the
    deformed contours that cross themselves)."""
    tot = collections.defaultdict(lambda: [0.0, 0.0, 0, 0])
    for b in batches:
        out = deformer(b["feats"], b["pixels"], b["locs"], b["idx"], b["img"], b[start])[-1]
        centres = b["locs"].points[b["idx"]]
        polar = resample_polygons(radii_to_points(centres, b[start].clamp(min=0)), out.shape[1])
        size = _polygon_size_from_edges(b["edges"])
        before = contour_match_loss(polar, b["edges"], size)
        after = contour_match_loss(out, b["edges"], size)
        tangled = self_crossing(out).tolist()
        for k, x0, x1, x2 in zip(b["cls"].tolist(), before.tolist(), after.tolist(), tangled):
            t = tot[names[k]]
            t[0], t[1], t[2], t[3] = t[0] + x0, t[1] + x1, t[2] + 1, t[3] + x2
    return {k: (v[0] / v[2], v[1] / v[2], v[2], v[3] / v[2]) for k, v in tot.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default="configs/Shapes/polar_refine_tiny.yaml")
    parser.add_argument("--weights", required=True, help="a checkpoint trained without DEFORM")
    parser.add_argument("--batches", type=int, default=250, help="training batches drawn")
    parser.add_argument("--held", type=int, default=40, help="of which held out for distances")
    parser.add_argument("--iters", type=int, default=600, help="SGD steps on the stages")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train-only", metavar="CATEGORY", help="train the stages on this category's positives"
    )
    parser.add_argument(
        "--start", choices=["fine", "target"], default="fine",
        help="contours the stages start from, in training and in the distances: the model's "
        "refined polar radii, or the polar targets (the ground truth as a polar contour draws "
        "it; the val AP still starts from the model's)",
    )  # fmt: skip
    parser.add_argument("--out", default="output/deform_probe", help="evaluation output folder")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides")
    args = parser.parse_args()
    if args.held >= args.batches:
        sys.exit(f"--held ({args.held}) must be below --batches ({args.batches})")

    cfg = get_cfg()
    add_polar_refine_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(["MODEL.POLAR_REFINE.DEFORM.ENABLED", "True"] + args.opts)
    cfg.OUTPUT_DIR = args.out
    cfg.freeze()
    seed_all_rng(args.seed)
    model = PolarRefineTrainer.build_model(cfg)
    DetectionCheckpointer(model).load(args.weights)
    model.eval()
    names = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).thing_classes
    if args.train_only is not None and args.train_only not in names:
        sys.exit(f"--train-only: {args.train_only!r} is not one of {', '.join(names)}")
    only = None if args.train_only is None else names.index(args.train_only)
    batches = draw_batches(model, cfg, args.batches)
    train = (args.iters, args.lr, cfg.SOLVER.MOMENTUM, args.start, only)
    train_stages(model.deformer, batches[: -args.held], *train)

    dist = match_distances(model.deformer, batches[-args.held :], names, args.start)
    flat = flatten_results_dict(PolarRefineTrainer.test(cfg, model))
    ap = {k.split("-", 1)[-1]: v for k, v in flat.items() if k.startswith("segm/AP-")}
    print(f"\nval segm AP {flat['segm/AP']:.1f}")
    print(
        "| category | polar distance | deformed distance | held-out positives "
        "| deformed contours crossing themselves | val segm AP |"
    )
    print("|---|---|---|---|---|---|")
    nan = float("nan")
    for name in names:
        d0, d1, n, crossing = dist.get(name, (nan, nan, 0, nan))
        print(
            f"| {name} | {d0:.3f} | {d1:.3f} | {n} | {100 * crossing:.1f} % "
            f"| {ap.get(name, nan):.1f} |"
        )


if __name__ == "__main__":
    main()
