#!/usr/bin/env python
"""The patent's Table-1 ablation, rerun on CPU-sized budgets, plus detectron2's Mask R-CNN.

    DETECTRON2_DATASETS=../shared/data .venv/bin/python benchmarks/ablation.py \
        --datasets dsb2018 shapes --seeds 0 1 2 --out output/ablation

For every dataset, seed and row it runs ``train_net.py`` (same backbone, solver, input size and
iteration budget for all rows), which trains and then evaluates with PolarCOCOEvaluator; rows
that change inference only evaluate the default's checkpoints. Runs already finished under
``--out`` are reused, so the script can be stopped and restarted. It prints a markdown table
(mean +- half-range over seeds) and writes it to ``--out/table.md``. After a change of
inference code, ``--reevaluate`` evaluates every finished run's checkpoint again with today's
code (``train_net.py --eval-only``, once per commit of the package, ``train_net.py`` or the
configs) instead of reading its training-time evaluation.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = "configs/Shapes/polar_refine_tiny.yaml"
ONE_STAGE = ["MODEL.POLAR_REFINE.REFINE.NUM_STAGES", "1"]
NO_CONTOUR = ["MODEL.POLAR_REFINE.CONTOUR.ENABLED", "False"]
DEFAULT = "PolarRefine+ (default)"
ROWS = {
    "shapes": [
        ("PolarMask (coarse only)", SHAPES,
         ["MODEL.POLAR_REFINE.REFINE.ENABLED", "False"] + NO_CONTOUR),
        ("+ refine (model 1)", SHAPES, ONE_STAGE + NO_CONTOUR),
        ("+ refine + contour (model 2)", SHAPES, ONE_STAGE),
        (DEFAULT, SHAPES, []),
        ("Mask R-CNN (detectron2)", "configs/Baselines/mask_rcnn_R_18_FPN_tiny_shapes.yaml", []),
    ],
    "dsb2018": [
        ("PolarMask (coarse only)", "configs/DSB2018/polarmask_R_18_tiny.yaml", []),
        ("+ refine (model 1)", "configs/DSB2018/polar_refine_R_18_tiny.yaml", []),
        ("+ refine + contour (model 2)", "configs/DSB2018/polar_refine_contour_R_18_tiny.yaml", []),
        (DEFAULT, "configs/DSB2018/polar_refine_plus_R_18_tiny.yaml", []),
        ("Mask R-CNN (detectron2)", "configs/Baselines/mask_rcnn_R_18_FPN_tiny_dsb2018.yaml", []),
    ],
    # a brief fit on 128 real images (trained and evaluated on them), one seed
    "coco128": [(DEFAULT, "configs/COCO128/polar_refine_R_18_tiny.yaml", [])],
}  # fmt: skip
# Changes measured on top of the default of each dataset: trained rows, then rows that only
# change inference and are evaluated on the default's own checkpoints (no training).
CHANGES = []
# Each: (name, overrides, the row whose checkpoints it evaluates).
EVAL_CHANGES = [
    (
        "default, score from covered locations",
        ["MODEL.POLAR_REFINE.SCORE_FROM", "covered"],
        DEFAULT,
    ),
]
# Parts trained on the default's finished checkpoint (MODEL.WEIGHTS), the rest of the model
# frozen, for their own iterations: (name, overrides, iterations). Their runs' figures are the
# default's with the part added; the default's row is the same model without it.
STAGES_ALONE = "default + deformation stages trained on it"
ON_DEFAULT = [
    (
        STAGES_ALONE,
        ["MODEL.POLAR_REFINE.DEFORM.ENABLED", "True"],
        600,
    ),
]
ON_DEFAULT_ITERS = {name: iters for name, _, iters in ON_DEFAULT}
for _ds, _rows in ROWS.items():
    _cfg = dict((n, c) for n, c, _ in _rows)[DEFAULT]
    _rows += [(name, _cfg, opts) for name, opts in CHANGES]
    _rows += [(name, _cfg, opts) for name, opts, _ in ON_DEFAULT]
EVAL_ONLY = {name: base for name, _, base in EVAL_CHANGES}
for _ds, _rows in ROWS.items():
    _cfg = dict((n, c) for n, c, _ in _rows)[DEFAULT]
    _rows += [(name, _cfg, opts) for name, opts, _ in EVAL_CHANGES]
# The equal-time row: the default trained for the wall time of Mask R-CNN's budget, measured in
# the same run (its iterations = budget x Mask R-CNN's s/iter / the default's s/iter, per seed).
EQUAL_TIME = "PolarRefine+ at Mask R-CNN's training time"
# Iteration budget per dataset, the same for every row of that dataset (CPU-sized).
ITERS = {"shapes": 1000, "dsb2018": 800, "coco128": 800}
METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
# Config overrides appended to every row's command (``--opts``, e.g. a solver setting).
EXTRA_OPTS = []
# With --reevaluate: the commit whose code evaluates every run (set in main).
REEVALUATE = {"commit": None}


def _slug(name):
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def run_one(dataset, seed, name, cfg, opts, out_root, iters):
    if name in EVAL_ONLY:
        return run_eval(dataset, seed, name, cfg, opts, out_root, iters)
    if name in ON_DEFAULT_ITERS:  # the default's checkpoint of this seed, trained first if needed
        run_one(dataset, seed, DEFAULT, cfg, [], out_root, iters)
        weights = os.path.join(out_root, dataset, f"{_slug(DEFAULT)}_seed{seed}", "model_final.pth")
        opts, iters = opts + ["MODEL.WEIGHTS", weights], ON_DEFAULT_ITERS[name]
    out = os.path.join(out_root, dataset, f"{_slug(name)}_seed{seed}")
    done = os.path.join(out, "result.json")
    if os.path.isfile(done) and trained_iters(out) == iters:
        result = json.load(open(done))
        stale = config_changes(out, cfg, opts + EXTRA_OPTS)
        if result.get("extra_opts", []) == EXTRA_OPTS and not stale:
            result.setdefault("segm_per_class", _per_class(out))
            if REEVALUATE["commit"]:
                result.update(reevaluate(out, cfg, opts + EXTRA_OPTS))
            return dict(result, s_per_iter=seconds_per_iter(out))
        if stale:
            print(f"[ablation] rerunning {out}: its config differs from today's in {stale}")
    cmd = [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file",
           os.path.join(ROOT, cfg), *opts, "SEED", str(seed), "OUTPUT_DIR", out]  # fmt: skip
    cmd += ["SOLVER.MAX_ITER", str(iters),
            "SOLVER.STEPS", f"({int(iters * 0.7)},{int(iters * 0.9)})", *EXTRA_OPTS]  # fmt: skip
    print(f"[ablation] {dataset} seed {seed}: {name}", flush=True)
    t0 = time.time()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "stdout.txt"), "w") as log:
        subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    res = [r for r in _metrics(out) if "segm/AP" in r][-1]
    result = {
        "segm": {k: res.get(f"segm/{k}") for k in METRICS + ["AP@100"]},
        "bbox": {k: res.get(f"bbox/{k}") for k in METRICS},
        "segm_per_class": {
            k[len("segm/AP-") :]: v for k, v in res.items() if k.startswith("segm/AP-")
        },
        "wall_s": time.time() - t0,
        "extra_opts": EXTRA_OPTS,
    }
    json.dump(result, open(done, "w"), indent=1)
    if REEVALUATE["commit"]:
        result.update(reevaluate(out, cfg, opts + EXTRA_OPTS))
    return dict(result, s_per_iter=seconds_per_iter(out))


def reevaluate(out, cfg, opts):
    """The segm / bbox metrics of the finished run ``out``'s checkpoint, evaluated by today's
    code into ``out/reevaluated`` (reused when that commit already evaluated it)."""
    dst = os.path.join(out, "reevaluated")
    done = os.path.join(dst, "result.json")
    commit = REEVALUATE["commit"]
    if os.path.isfile(done) and json.load(open(done)).get("commit") == commit:
        return json.load(open(done))["metrics"]
    print(f"[ablation] evaluating {out} again (commit {commit})", flush=True)
    metrics = evaluate_checkpoint(cfg, opts, os.path.join(out, "model_final.pth"), dst)
    json.dump({"commit": commit, "metrics": metrics}, open(done, "w"), indent=1)
    return metrics


def evaluate_checkpoint(cfg, opts, weights, out):
    """``train_net.py --eval-only`` of ``weights`` with the row's config into ``out``: its segm
    and bbox metrics, and the segm AP per category."""
    cmd = [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file",
           os.path.join(ROOT, cfg), "--eval-only", *opts,
           "MODEL.WEIGHTS", weights, "OUTPUT_DIR", out]  # fmt: skip
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "stdout.txt"), "w") as log:
        subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    res = json.load(open(os.path.join(out, "results.json")))
    return {
        "segm": {k: res.get(f"segm/{k}") for k in METRICS + ["AP@100"]},
        "bbox": {k: res.get(f"bbox/{k}") for k in METRICS},
        "segm_per_class": {
            k[len("segm/AP-") :]: v for k, v in res.items() if k.startswith("segm/AP-")
        },
    }


def run_eval(dataset, seed, name, cfg, opts, out_root, iters):
    """An inference-only change: the checkpoint of this seed of the row it evaluates (trained
    first if needed), evaluated with ``opts``."""
    by_name = {n: (c, o) for n, c, o in ROWS[dataset]}
    trained = EVAL_ONLY[name]
    base = run_one(dataset, seed, trained, *by_name[trained], out_root, iters)
    weights = os.path.join(out_root, dataset, f"{_slug(trained)}_seed{seed}", "model_final.pth")
    out = os.path.join(out_root, dataset, f"{_slug(name)}_seed{seed}")
    done = os.path.join(out, "result.json")
    if os.path.isfile(done) and os.path.getmtime(done) > os.path.getmtime(weights):
        result = json.load(open(done))
        fresh = result.get("commit") == REEVALUATE["commit"] or not REEVALUATE["commit"]
        if result.get("opts") == opts + EXTRA_OPTS and fresh:
            return dict(result, s_per_iter=base["s_per_iter"])
    print(f"[ablation] {dataset} seed {seed}: {name} (evaluation of {trained!r}'s weights)")
    result = {
        **evaluate_checkpoint(cfg, opts + EXTRA_OPTS, weights, out),
        "opts": opts + EXTRA_OPTS,
        "weights": weights,
        "commit": REEVALUATE["commit"],
    }
    json.dump(result, open(done, "w"), indent=1)
    return dict(result, s_per_iter=base["s_per_iter"])


def run_equal_time(dataset, seed, out_root, iters=None):
    """The default for as many iterations as fit in Mask R-CNN's training time on this seed
    (both runs' s/iter come from this run of the script or from finished runs it reuses)."""
    iters = iters or ITERS[dataset]
    by_name = {name: (cfg, opts) for name, cfg, opts in ROWS[dataset]}
    mrcnn = run_one(dataset, seed, "Mask R-CNN (detectron2)", *by_name["Mask R-CNN (detectron2)"],
                    out_root, iters)  # fmt: skip
    full = run_one(dataset, seed, DEFAULT, *by_name[DEFAULT], out_root, iters)
    n = int(round(iters * mrcnn["s_per_iter"] / full["s_per_iter"]))
    res = run_one(dataset, seed, EQUAL_TIME, *by_name[DEFAULT], out_root, n)
    return dict(res, iters=n)


# Keys a row's runs may differ in (set per run by run_one), and, for a model that is not
# PolarRefine (Mask R-CNN), the PolarRefine keys it never reads.
RUN_KEYS = {"OUTPUT_DIR", "SEED", "SOLVER.MAX_ITER", "SOLVER.STEPS"}


def config_changes(out, cfg_file, opts):
    """Keys whose value in a finished run's saved config.yaml differs from the config the row
    means today (defaults + the YAML + the row's overrides, as train_net.py builds it), so that
    a finished run is not reused after a default changed (e.g. REFINE.NUM_STAGES). Keys that
    exist on only one side (added since the run) are not compared."""
    import yaml
    from detectron2.config import get_cfg

    from polar_refine import add_polar_refine_config

    cfg = get_cfg()
    add_polar_refine_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, cfg_file))
    cfg.merge_from_list(list(opts))
    today = yaml.safe_load(cfg.dump())
    saved = yaml.safe_load(open(os.path.join(out, "config.yaml")))
    skip = set(RUN_KEYS) | {"MODEL.DEVICE"}
    if today["MODEL"]["META_ARCHITECTURE"] != "PolarRefine":
        skip.add("MODEL.POLAR_REFINE")
    elif not today["MODEL"]["POLAR_REFINE"]["REFINE"]["ENABLED"]:  # PolarMask: no refine keys read
        skip |= {f"MODEL.POLAR_REFINE.REFINE.{k}" for k in today["MODEL"]["POLAR_REFINE"]["REFINE"]}
        skip.discard("MODEL.POLAR_REFINE.REFINE.ENABLED")
    if not today["MODEL"].get("POLAR_REFINE", {}).get("DEFORM", {}).get("ENABLED", True):
        # without the deformation stages their keys are never read
        skip |= {f"MODEL.POLAR_REFINE.DEFORM.{k}" for k in today["MODEL"]["POLAR_REFINE"]["DEFORM"]}
        skip.discard("MODEL.POLAR_REFINE.DEFORM.ENABLED")
    return sorted(_diff(today, saved, "", skip))


def _diff(a, b, prefix, skip):
    if prefix.rstrip(".") in skip:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            k
            for key in a.keys() & b.keys()
            for k in _diff(a[key], b[key], prefix + key + ".", skip)
        ]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        a, b = list(a), list(b)
    return [] if a == b else [prefix.rstrip(".")]


def trained_iters(out):
    """SOLVER.MAX_ITER of a finished run, read from the config.yaml train_net.py saved."""
    path = os.path.join(out, "config.yaml")
    if not os.path.isfile(path):
        return None
    match = re.search(r"^  MAX_ITER: (\d+)$", open(path).read(), re.M)
    return int(match.group(1)) if match else None


def _per_class(out):
    """Per-category segm AP of a finished run's last evaluation, by category name."""
    res = [r for r in _metrics(out) if "segm/AP" in r][-1]
    return {k[len("segm/AP-") :]: v for k, v in res.items() if k.startswith("segm/AP-")}


def _metrics(out):
    return [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]


def seconds_per_iter(out):
    """Median over the run of detectron2's per-20-iteration median step time: robust to a few
    slow windows (another job on the machine, a paused process)."""
    times = [r["time"] for r in _metrics(out) if "time" in r and "total_loss" in r]
    return statistics.median(times) if times else None


def fmt(values, digits=1):
    values = [v for v in values if v is not None and v == v]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    mean, half = statistics.mean(values), (max(values) - min(values)) / 2
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--datasets", nargs="+", default=["dsb2018", "shapes"], choices=list(ROWS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument(
        "--iters", type=int, default=None, help=f"SOLVER.MAX_ITER for every row (default {ITERS})"
    )
    ap.add_argument("--out", default=os.path.join(ROOT, "output", "ablation"))
    ap.add_argument("--rows", nargs="+", default=None, help="only rows whose name has one of these")
    ap.add_argument(
        "--equal-time", action="store_true",
        help=f"add the row {EQUAL_TIME!r} (needs the Mask R-CNN and default runs of each seed)",
    )  # fmt: skip
    ap.add_argument(
        "--opts", nargs="+", default=[],
        help="config overrides for every row (KEY VALUE ...); use a separate --out",
    )  # fmt: skip
    ap.add_argument(
        "--doc", action="store_true",
        help="also write each dataset's table into docs/BENCHMARKS.md (replacing the last one)",
    )  # fmt: skip
    ap.add_argument(
        "--reevaluate", action="store_true",
        help="evaluate finished runs' checkpoints again with today's code (after an inference "
        "change); commit the change first: each commit of the code evaluates once",
    )  # fmt: skip
    args = ap.parse_args()
    EXTRA_OPTS[:] = args.opts
    if args.reevaluate:
        # the last commit that changed what evaluates (a docs commit does not re-evaluate)
        code = ["polar_refine", "train_net.py", "configs"]
        REEVALUATE["commit"] = subprocess.run(
            ["git", "log", "-1", "--format=%h", "--", *code],
            cwd=ROOT, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
    lines = []
    for ds in args.datasets:
        start = len(lines)
        rows = [r for r in ROWS[ds] if not args.rows or any(k in r[0] for k in args.rows)]
        results = {name: [] for name, _, _ in rows}
        equal_time = args.equal_time and (not args.rows or any(k in EQUAL_TIME for k in args.rows))
        if equal_time:
            results[EQUAL_TIME] = []
        for seed in args.seeds:
            for name, cfg, opts in rows:
                iters = args.iters or ITERS[ds]
                results[name].append(run_one(ds, seed, name, cfg, opts, args.out, iters))
            if equal_time:
                results[EQUAL_TIME].append(run_equal_time(ds, seed, args.out, args.iters))
        extra = ["AP@100"] if ds == "dsb2018" else []
        per_class = ds == "shapes"  # the C shape is the one no polar polygon draws
        head = "| " + ds + " row | " + " | ".join(f"segm {m}" for m in METRICS + extra)
        head += " | segm AP c_shape | segm AP other classes" if per_class else ""
        lines += [
            "",
            head + " | bbox AP | train s/iter |",
            "|---" * (len(METRICS) + len(extra) + 3 + 2 * per_class) + "|",
        ]
        for name, rs in results.items():
            cells = [fmt([r["segm"][m] for r in rs]) for m in METRICS + extra]
            if per_class:
                classes = [r.get("segm_per_class", {}) for r in rs]
                cells.append(fmt([c.get("c_shape") for c in classes]))
                others = [[v for k, v in c.items() if k != "c_shape"] for c in classes]
                cells.append(fmt([statistics.mean(o) if o else None for o in others]))
            cells.append(fmt([r["bbox"]["AP"] for r in rs]))
            cells.append(fmt([r["s_per_iter"] for r in rs], 2).replace(" ± ", "±"))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append(
            f"\n({ds}: {args.iters or ITERS[ds]} iterations of 4 images"
            f"{'; ' + ' '.join(args.opts) if args.opts else ''}; "
            f"mean ± half-range over seeds {args.seeds})"
        )
        if args.doc:
            from doc_table import write_table

            write_table(f"ablation-{ds}", "\n".join(lines[start:]))
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    open(os.path.join(args.out, "table.md"), "w").write(table + "\n")


if __name__ == "__main__":
    main()
