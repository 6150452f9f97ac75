#!/usr/bin/env python
# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""Deployment as users run it: latency end to end and the AP of the same outputs.

    DETECTRON2_DATASETS=../shared/data .venv/bin/python benchmarks/deploy.py \\
        --config-file configs/DSB2018/polar_refine_plus_R_18_tiny.yaml \\
        --weights output/ablation/dsb2018/polarrefine_default_seed{0,1,2}/model_final.pth \\
        --dataset dsb2018_val --int8 32 --doc

For each score threshold (``--thresholds``: the evaluation one and a deployment one) and each
runtime (eager PyTorch, and ONNX Runtime on the model exported at that threshold) at each
thread count (``--threads``), it reports:

* the median and 90th-percentile latency per image over the first ``--num-images`` images of
  the dataset, end to end: reading and decoding the file, the test-time resize, the graph,
  polygons at the original size and, with ``--masks``, the masks of the returned detections;
* the segm and bbox AP of the same outputs over the whole dataset (PolarCOCOEvaluator);
* the mean number of detections per image.

Each runtime is timed in a block of its own (as a deployed process runs one runtime), in two
rounds whose order of runtimes is reversed, so that a slow period of the machine hits them
alike; latencies are over both rounds. With ``--doc`` the table goes into docs/BENCHMARKS.md.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import cv2
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def build_cfg(config_file, weights, thresh, masks):
    from detectron2.config import get_cfg

    import polar_refine

    cfg = get_cfg()
    polar_refine.add_polar_refine_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.MODEL.WEIGHTS = weights
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.POLAR_REFINE.SCORE_THRESH_TEST = float(thresh)
    cfg.MODEL.MASK_ON = bool(masks)
    cfg.freeze()
    return cfg


def eager_predictor(cfg):
    from detectron2.engine import DefaultPredictor

    return DefaultPredictor(cfg)


class Bf16Predictor:
    """A predictor run under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (the radius branch
    stays float32 by design)."""

    def __init__(self, predictor):
        self.predictor = predictor
        self.model = predictor.model

    def __call__(self, image):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.predictor(image)


def onnx_predictors(cfg, workdir, threads, int8_calibration=None):
    """The model of ``cfg`` exported to ONNX (at its threshold) in ONNX Runtime, by name; with
    ``int8_calibration`` (BGR images) also its int8 copy (`quantize_int8`)."""
    from polar_refine.export import ONNXPredictor, export_model, quantize_int8

    out = os.path.join(workdir, f"t{cfg.MODEL.POLAR_REFINE.SCORE_THRESH_TEST}")
    path = os.path.join(out, "model.onnx")
    if not os.path.isfile(path):
        export_model(cfg, "onnx", out)
    paths = {"ONNX Runtime": path}
    if int8_calibration is not None:
        paths["ONNX Runtime int8"] = os.path.join(out, "model_int8.onnx")
        if not os.path.isfile(paths["ONNX Runtime int8"]):
            quantize_int8(path, paths["ONNX Runtime int8"], int8_calibration)
    preds = {}
    for name, p in paths.items():
        preds[name] = ONNXPredictor(p, providers=["CPUExecutionProvider"], num_threads=threads)
        preds[name].mask_on = cfg.MODEL.MASK_ON
    return preds


def run_dataset(predictors, dicts, num_timed, rounds=2):
    """Every predictor on every image; returns per predictor the per-image latencies over the
    first ``num_timed`` images (``rounds`` times) and the outputs of all images.

    Each runtime is timed in a block of its own, as a deployed process runs one runtime: when
    runtimes alternate image by image, the worker threads one leaves spinning (PyTorch's
    OpenMP pool, ONNX Runtime's) take the second core from the next, and two-thread latencies
    come out up to 1.4x slower. Rounds reverse the order of the blocks, so that a slow period
    of the machine hits every runtime."""
    times = {n: [] for n in predictors}
    names = list(predictors)
    for r in range(rounds if num_timed else 0):
        for name in names if r % 2 == 0 else names[::-1]:
            pred = predictors[name]
            pred(cv2.imread(dicts[0]["file_name"], cv2.IMREAD_COLOR))  # its threads wake up
            for d in dicts[:num_timed]:
                t0 = time.perf_counter()
                image = cv2.imread(d["file_name"], cv2.IMREAD_COLOR)  # decode is part of the cost
                inst = pred(image)["instances"].to("cpu")
                if pred_has_masks(pred):
                    inst.pred_masks.any()  # masks are materialised when asked
                times[name].append(time.perf_counter() - t0)
    outputs = {n: [] for n in predictors}
    for name, pred in predictors.items():
        for d in dicts:
            outputs[name].append(
                pred(cv2.imread(d["file_name"], cv2.IMREAD_COLOR))["instances"].to("cpu")
            )
    return times, outputs


def pred_has_masks(pred):
    model = getattr(pred, "model", None)
    return bool(getattr(model, "mask_on", getattr(pred, "mask_on", False)))


def evaluate(dataset, dicts, outputs, max_dets):
    from polar_refine.evaluation import PolarCOCOEvaluator

    ev = PolarCOCOEvaluator(dataset, output_dir=None, max_dets_per_image=max_dets)
    ev.reset()
    for d, inst in zip(dicts, outputs):
        ev.process([d], [{"instances": inst}])
    res = ev.evaluate()
    return res["segm"]["AP"], res["bbox"]["AP"]


def _fmt(values):
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {(max(values) - min(values)) / 2:.1f}"


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config-file", required=True)
    ap.add_argument("--weights", nargs="+", required=True, help="checkpoints (e.g. 3 seeds)")
    ap.add_argument("--dataset", default="dsb2018_val")
    ap.add_argument("--thresholds", nargs="+", type=float, default=[0.05, 0.3])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--num-images", type=int, default=20, help="images timed (all are scored)")
    ap.add_argument("--masks", action="store_true", help="draw masks of the returned detections")
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="also eager PyTorch under bf16 autocast")
    ap.add_argument(
        "--int8", type=int, default=0, metavar="N",
        help="also an int8 copy, calibrated on the first N images of the config's training set",
    )  # fmt: skip
    ap.add_argument("--doc", action="store_true", help="write the table into docs/BENCHMARKS.md")
    args = ap.parse_args()

    import logging

    from detectron2.data import DatasetCatalog

    import polar_refine  # noqa: F401  (registers the datasets)

    logging.getLogger("detectron2").setLevel(logging.WARNING)
    dicts = DatasetCatalog.get(args.dataset)
    calibration = None
    if args.int8:
        train = build_cfg(args.config_file, args.weights[0], 0.05, False).DATASETS.TRAIN[0]
        calibration = [cv2.imread(d["file_name"]) for d in DatasetCatalog.get(train)[: args.int8]]
    latency, scores = {}, {}
    workdir = tempfile.TemporaryDirectory()
    for thresh in args.thresholds:
        for wi, weights in enumerate(args.weights):
            cfg = build_cfg(args.config_file, weights, thresh, args.masks)
            for threads in args.threads if wi == 0 else [max(args.threads)]:
                torch.set_num_threads(threads)
                preds = {"eager PyTorch": eager_predictor(cfg)}
                if args.bf16:
                    preds["eager PyTorch bf16"] = Bf16Predictor(eager_predictor(cfg))
                if not args.no_onnx:
                    out = os.path.join(workdir.name, f"w{wi}")
                    preds.update(onnx_predictors(cfg, out, threads, calibration))
                for p in preds.values():  # warm-up
                    p(cv2.imread(dicts[0]["file_name"]))
                times, outputs = run_dataset(preds, dicts, args.num_images if wi == 0 else 0)
                for name in preds:
                    if wi == 0:
                        lat = sorted(times[name])
                        p90 = lat[min(len(lat) - 1, int(round(0.9 * (len(lat) - 1))))]
                        latency[thresh, threads, name] = (statistics.median(lat), p90)
                    if threads == max(args.threads):
                        segm, bbox = evaluate(
                            args.dataset, dicts, outputs[name], cfg.TEST.DETECTIONS_PER_IMAGE
                        )
                        dets = float(np.mean([len(o) for o in outputs[name]]))
                        scores.setdefault((thresh, name), []).append((segm, bbox, dets))
                    print(thresh, threads, name, latency.get((thresh, threads, name)),
                          scores.get((thresh, name)), flush=True)  # fmt: skip
    workdir.cleanup()
    lines = [
        f"{args.dataset}, `{os.path.relpath(args.config_file, ROOT)}`, latency over the first "
        f"{args.num_images} images of the first checkpoint (each runtime timed on its own, "
        f"twice), AP over all {len(dicts)} images "
        f"(mean ± half-range over {len(args.weights)} checkpoints)"
        f"{', masks drawn' if args.masks else ', polygons only (no masks)'}:",
        "",
        "| score threshold | threads | runtime | median ms | p90 ms | segm AP | bbox AP | "
        "detections / image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (t, n, name), (med, p90) in latency.items():
        segm, bbox, dets = zip(*scores[t, name])
        lines.append(
            f"| {t:g} | {n} | {name} | {1e3 * med:.1f} | {1e3 * p90:.1f} | {_fmt(segm)} | "
            f"{_fmt(bbox)} | {np.mean(dets):.1f} |"
        )
    print("\n".join(lines))
    if args.doc:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from doc_table import write_table

        write_table(f"deploy-{args.dataset}", "\n".join(lines))


if __name__ == "__main__":
    main()
