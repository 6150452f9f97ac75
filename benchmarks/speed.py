#!/usr/bin/env python
"""End-to-end speed and memory of PolarRefine against detectron2's RetinaNet and Mask R-CNN.

    .venv/bin/python benchmarks/speed.py                 # CPU, 512 x 683, 7 interleaved repeats
    .venv/bin/python benchmarks/speed.py --device cuda --repeats 50
    .venv/bin/python benchmarks/speed.py --deploy-only  # eager full model vs ONNX Runtime only

All models are R-50-FPN with random weights, fed the same image, with score thresholds at 0 so
every model carries a full candidate load (1000 per level, 100 detections). Inference is timed
end to end: preprocessing -> backbone -> head -> refine -> NMS -> polygons, boxes and masks at
output size (detectron2's own postprocessing for the baselines). Repeats are interleaved across
models and medians reported, with ratios, because shared machines are noisy.

The full model is also exported to ONNX (``polar_refine.export``) and run by ONNX Runtime on the
same image in the same interleaved loop ("ONNX Runtime" row: the graph plus the rescaling and
masks at output size that follow it, on the CPU).

Also: per-stage split for PolarRefine, training-step time per Table-1 row, and peak memory of a
training step per row (CPU: peak RSS of a fresh subprocess running one step; CUDA:
``torch.cuda.max_memory_allocated``).
"""

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

import polar_refine
from polar_refine.modeling.postprocess import polar_postprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL = "PolarRefine+ (default)"
SHAPE_ROW = "PolarRefine+, shape NMS"
COVERED_ROW = "PolarRefine+, score from covered locations"
DEFORM_ROW = "PolarRefine+, deformation stages"
ROWS = {
    "PolarMask (coarse only)": "polarmask_R_50_FPN_1x.yaml",
    "PolarRefine, model 1 (+refine)": "polar_refine_R_50_FPN_1x.yaml",
    "PolarRefine, model 2 (+refine +contour)": "polar_refine_contour_R_50_FPN_1x.yaml",
    FULL: "polar_refine_plus_R_50_FPN_1x.yaml",
    SHAPE_ROW: "polar_refine_plus_R_50_FPN_1x.yaml",
    COVERED_ROW: "polar_refine_plus_R_50_FPN_1x.yaml",
    DEFORM_ROW: "polar_refine_plus_R_50_FPN_1x.yaml",
}
# Config overrides of a row beyond its YAML: inference options, the same weights as FULL.
ROW_OPTS = {
    SHAPE_ROW: ["MODEL.POLAR_REFINE.NMS_TYPE", "shape"],
    COVERED_ROW: ["MODEL.POLAR_REFINE.SCORE_FROM", "covered"],
    DEFORM_ROW: ["MODEL.POLAR_REFINE.DEFORM.ENABLED", "True"],
}
BASELINES = {
    "RetinaNet R-50-FPN": "COCO-Detection/retinanet_R_50_FPN_1x.yaml",
    "Mask R-CNN R-50-FPN": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
}


def polar_cfg(name, device):
    cfg = get_cfg()
    polar_refine.add_polar_refine_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, "configs/COCO-InstanceSegmentation", ROWS[name]))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    cfg.MODEL.POLAR_REFINE.SCORE_THRESH_TEST = 0.0
    cfg.merge_from_list(ROW_OPTS.get(name, []))
    return cfg


def baseline_cfg(name, device):
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(BASELINES[name]))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    return cfg


def device_name(device):
    return torch.cuda.get_device_name() if device == "cuda" else f"cpu ({os.cpu_count()} cores)"


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def image_input(h, w, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8).float()
    return {"image": img.to(device), "height": h, "width": w}


def training_batch(h, w, n_images=2, n_inst=12, seed=0):
    """Images with random star-convex polygon instances (COCO-like load)."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(n_images):
        polys, boxes = [], []
        for _ in range(n_inst):
            cx, cy = torch.rand(2, generator=g) * torch.tensor(
                [w * 0.8, h * 0.8]
            ) + 0.1 * torch.tensor([w, h])
            base = 15 + 120 * torch.rand(1, generator=g).item()
            t = torch.arange(24) * 2 * math.pi / 24
            r = base * (0.7 + 0.3 * torch.rand(24, generator=g))
            xs = (cx + r * t.cos()).clamp(0, w - 1)
            ys = (cy + r * t.sin()).clamp(0, h - 1)
            polys.append([torch.stack([xs, ys], 1).flatten().tolist()])
            boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.tensor(boxes))
        inst.gt_classes = torch.randint(0, 80, (n_inst,), generator=g)
        inst.gt_masks = PolygonMasks(polys)
        img = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8).float()
        batch.append({"image": img, "instances": inst})
    return batch


@torch.no_grad()
def polar_stages(model, inputs, device):
    """PolarRefine inference split into stages; returns seconds per stage."""
    t = {}
    sync(device)
    t0 = time.perf_counter()
    images = model.preprocess_image(inputs)
    feats_all = model.backbone(images.tensor)
    feats = [feats_all[f] for f in model.head_in_features]
    sync(device)
    t1 = time.perf_counter()
    predictions = model.head(feats)
    sync(device)
    t2 = time.perf_counter()
    locs, cand, fine = model.candidates(feats, predictions)
    sync(device)
    t3 = time.perf_counter()
    args = (images.image_sizes, predictions, locs, cand, fine, feats, images.tensor)
    res = model.detections(*args)[0]
    out = polar_postprocess(res, inputs[0]["height"], inputs[0]["width"], model.mask_on)
    assert len(out) > 0
    sync(device)
    t4 = time.perf_counter()
    t["backbone"] = t1 - t0
    t["head"] = t2 - t1
    t["candidates+refine"] = t3 - t2
    t["post (score, NMS, polygons, masks)"] = t4 - t3
    return t


ORT_ROW = "PolarRefine+, ONNX Runtime"


def onnx_runner(model, inputs, workdir):
    """Export ``model`` to ONNX in ``workdir``; returns a function running the ONNX Runtime
    predictor end to end on ``inputs[0]`` (graph, then polygons and masks at output size), and
    the export time in seconds."""
    from polar_refine.export import ONNXPredictor, export_onnx

    image = inputs[0]["image"].cpu()
    height, width = inputs[0]["height"], inputs[0]["width"]
    t0 = time.perf_counter()
    path = export_onnx(model, image, os.path.join(workdir, "model.onnx"), {})
    seconds = time.perf_counter() - t0
    pred = ONNXPredictor.__new__(ONNXPredictor)  # no metadata needed: the input is prepared
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    pred.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    pred.mask_on = model.mask_on

    def run():
        x = image.numpy()
        t1 = time.perf_counter()
        out = pred.run_network(x)
        t2 = time.perf_counter()
        res = pred.postprocess(out, x.shape[1:], height, width)
        run.split.append((t2 - t1, time.perf_counter() - t2))
        return res

    run.split = []
    return run, seconds


def agreement(eager, exported) -> str:
    """One line comparing two Instances (eager PyTorch, exported model) on the same image."""
    n, m = len(eager), len(exported)
    if n != m:
        return f"eager and ONNX Runtime disagree: {n} against {m} detections"
    same_cls = bool((eager.pred_classes == exported.pred_classes).all())
    poly = (eager.pred_polygons - exported.pred_polygons).abs().max().item() if n else 0.0
    score = (eager.scores - exported.scores).abs().max().item() if n else 0.0
    masks = (eager.pred_masks != exported.pred_masks).float().mean().item() if n else 0.0
    return (
        f"eager vs ONNX Runtime on this image: {n} detections each, same classes {same_cls}, "
        f"max polygon difference {poly:.2g} px, max score difference {score:.2g}, "
        f"mask pixels differing {100 * masks:.3g} %"
    )


def train_step(model, opt, batch, device):
    """One SGD step; returns its wall time in seconds."""
    model.train()
    sync(device)
    t0 = time.perf_counter()
    losses = model(batch)
    opt.zero_grad()
    sum(losses.values()).backward()
    opt.step()
    sync(device)
    return time.perf_counter() - t0


def train_step_times(models, batch, device, repeats):
    """Median step time per model, steps interleaved across models (first round = warm-up)."""
    opts = {n: torch.optim.SGD(m.parameters(), lr=1e-4) for n, m in models.items()}
    times = {n: [] for n in models}
    with EventStorage():
        for r in range(repeats + 1):
            for n, m in models.items():
                t = train_step(m, opts[n], batch, device)
                if r:
                    times[n].append(t)
    return {n: statistics.median(v) for n, v in times.items()}


def peak_train_memory(row, device, h, w):
    """Peak memory of one training step of a row (MiB), measured in a fresh process on CPU."""
    if device == "cuda":
        model = build_model(polar_cfg(row, device))
        batch = training_batch(h, w)
        torch.cuda.reset_peak_memory_stats()
        train_step_times({row: model}, batch, device, 1)
        return torch.cuda.max_memory_allocated() / 2**20
    cmd = [sys.executable, __file__, "--worker-memory", row, "--height", str(h), "--width", str(w)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_mib"]


def worker_memory(row, h, w):
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = build_model(polar_cfg(row, "cpu"))
    batch = training_batch(h, w)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    train_step_times({row: model}, batch, "cpu", 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mib": peak, "rss_before_step_mib": before}))


def print_stages(stages, rows):
    print("\n## PolarRefine inference by stage (eager, median ms)\n")
    names = list(stages[rows[0]][0])
    print("| row | " + " | ".join(names) + " | post share |")
    print("|---" * (len(names) + 2) + "|")
    for n in rows:
        s = {k: statistics.median(d[k] for d in stages[n]) for k in names}
        total = sum(s.values())
        print(
            f"| {n} | "
            + " | ".join(f"{1e3 * s[k]:.1f}" for k in names)
            + f" | {100 * s[names[-1]] / total:.1f}% |"
        )


def print_deform_cost(model, stages):
    """The deformation stages against the limits their design keeps: parameters under 1 % of
    the model's inference parameters (the training-only contour head excluded), inference time
    under 10 % of the default's."""
    total = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("contour."))
    own = sum(p.numel() for p in model.deformer.parameters())
    ms = {n: sum(statistics.median(d[k] for d in stages[n]) for k in stages[n][0]) for n in stages}
    print(
        f"\nDeformation stages: {own} parameters, {100 * own / total:.2f} % of the model's "
        f"{total}; inference {1e3 * ms[DEFORM_ROW]:.1f} ms against {1e3 * ms[FULL]:.1f} ms for the "
        f"default ({100 * (ms[DEFORM_ROW] / ms[FULL] - 1):+.1f} %)"
    )


class _Tee:
    """stdout that also keeps what was printed (for ``--doc``)."""

    def __init__(self, stream):
        self.stream, self.parts = stream, []

    def write(self, text):
        self.parts.append(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()


def main():
    args = parse_args()
    if args.worker_memory or not args.doc:
        return run(args)
    tee = _Tee(sys.stdout)
    sys.stdout = tee
    try:
        run(args)
    finally:
        sys.stdout = tee.stream
    from doc_table import write_table

    mode = "stages" if args.stages_only else "deploy" if args.deploy_only else "all"
    text = "".join(tee.parts)
    text = text[text.index("\n## ") :] if "\n## " in text else text
    write_table(f"speed-{mode}-{args.device}", text.replace("\n## ", "\n#### "))


def parse_args():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--width", type=int, default=683)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--train-repeats", type=int, default=3)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument(
        "--deploy-only",
        action="store_true",
        help="time only the eager full model and its ONNX Runtime export (CPU)",
    )
    ap.add_argument(
        "--stages-only",
        action="store_true",
        help="time only the default's inference stages: box NMS, shape NMS, covered scores, "
        "deformation",
    )
    ap.add_argument(
        "--doc", action="store_true", help="also write the tables into docs/BENCHMARKS.md"
    )
    ap.add_argument("--worker-memory", default=None, help=argparse.SUPPRESS)
    return ap.parse_args()


def run(args):
    if args.worker_memory:
        return worker_memory(args.worker_memory, args.height, args.width)

    torch.manual_seed(0)
    dev, h, w = args.device, args.height, args.width
    rows = [FULL] if args.deploy_only else list(ROWS)
    if args.stages_only:
        rows = [FULL, SHAPE_ROW, COVERED_ROW, DEFORM_ROW]
    models = {n: build_model(polar_cfg(n, dev)).eval() for n in rows}
    for n in ROW_OPTS:
        if n in models:  # the same weights, other inference options (plus the deformer's own)
            models[n].load_state_dict(models[FULL].state_dict(), strict=False)
    if args.stages_only:
        with torch.no_grad():
            stages = {n: [] for n in rows}
            for i in range(args.repeats + 1):  # the first repeat is a warm-up
                for n in rows:
                    st = polar_stages(models[n], [image_input(h, w, dev)], dev)
                    if i:
                        stages[n].append(st)
        print_stages(stages, rows)
        return print_deform_cost(models[DEFORM_ROW], stages)
    if not args.deploy_only:
        models.update({n: build_model(baseline_cfg(n, dev)).eval() for n in BASELINES})
    inputs = [image_input(h, w, dev)]
    runners = {n: (lambda m=m: m(inputs)) for n, m in models.items()}
    workdir = tempfile.TemporaryDirectory()
    if dev == "cpu":
        runners[ORT_ROW], export_s = onnx_runner(models[FULL], inputs, workdir.name)
        print(f"exported {FULL} to ONNX in {export_s:.1f} s")
    times = {n: [] for n in runners}
    cpu_times = {n: [] for n in runners}  # process CPU time: less sensitive to other jobs
    stages = {n: [] for n in rows}
    with torch.no_grad():
        for run in runners.values():  # warm-up
            run()
        for _ in range(args.repeats):
            for n, run in runners.items():
                sync(dev)
                t0, c0 = time.perf_counter(), time.process_time()
                run()
                sync(dev)
                times[n].append(time.perf_counter() - t0)
                cpu_times[n].append(time.process_time() - c0)
            for n in rows:
                stages[n].append(polar_stages(models[n], inputs, dev))
        if ORT_ROW in runners:
            print(agreement(models[FULL](inputs)[0]["instances"], runners[ORT_ROW]()))
    workdir.cleanup()

    med = {n: statistics.median(v) for n, v in times.items()}
    if args.deploy_only:
        print(
            f"\n## Eager PyTorch against ONNX Runtime, {h}x{w}, device {device_name(dev)}, "
            f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved repeats\n"
        )
        cpu = {n: statistics.median(v) for n, v in cpu_times.items()}
        print("| model | ms / image | x eager | CPU ms / image | x eager (CPU time) |")
        print("|---|---|---|---|---|")
        for n, v in med.items():
            print(
                f"| {n} | {1e3 * v:.1f} | {v / med[FULL]:.3f} | {1e3 * cpu[n]:.1f} | "
                f"{cpu[n] / cpu[FULL]:.3f} |"
            )
        print_stages(stages, rows)
        if ORT_ROW in runners:
            split = runners[ORT_ROW].split[1:]  # without the warm-up
            graph_ms = 1e3 * statistics.median(s[0] for s in split)
            post_ms = 1e3 * statistics.median(s[1] for s in split)
            print(
                f"\nONNX Runtime row by stage (median ms): graph (preprocessing to NMS) "
                f"{graph_ms:.1f}, post (rescale, boxes, masks) {post_ms:.1f}"
            )
        return
    retina, mrcnn = med["RetinaNet R-50-FPN"], med["Mask R-CNN R-50-FPN"]
    print(
        f"\n## End-to-end inference, {h}x{w}, device {device_name(dev)}, "
        f"{torch.get_num_threads()} threads, "
        f"median of {args.repeats} interleaved repeats\n"
    )
    print("| model | ms / image | x RetinaNet | x Mask R-CNN | x eager full model |")
    print("|---|---|---|---|---|")
    for n, v in med.items():
        print(f"| {n} | {1e3 * v:.1f} | {v / retina:.3f} | {v / mrcnn:.3f} | {v / med[FULL]:.3f} |")
    coarse = med["PolarMask (coarse only)"]
    full = med[FULL]
    print(f"\nPolarRefine+ over coarse-only (inference): {100 * (full / coarse - 1):+.1f}%")
    print_stages(stages, rows)

    if args.skip_train:
        return
    batch = training_batch(h, w)
    if dev == "cuda":
        batch = [{"image": b["image"].to(dev), "instances": b["instances"].to(dev)} for b in batch]
    print(
        f"\n## Training step (2 images {h}x{w}, 12 instances each; median of "
        f"{args.train_repeats} interleaved) and peak memory\n"
    )
    print("| row | ms / step | x coarse-only | peak memory MiB | x coarse-only |")
    print("|---|---|---|---|---|")
    train_rows = [n for n in ROWS if n not in ROW_OPTS]  # NMS options do not change training
    tr = train_step_times({n: models[n] for n in train_rows}, batch, dev, args.train_repeats)
    mem = {n: peak_train_memory(n, dev, h, w) for n in train_rows}
    c = "PolarMask (coarse only)"
    for n in train_rows:
        print(
            f"| {n} | {1e3 * tr[n]:.1f} | {tr[n] / tr[c]:.3f} | {mem[n]:.0f} | "
            f"{mem[n] / mem[c]:.3f} |"
        )


if __name__ == "__main__":
    main()
