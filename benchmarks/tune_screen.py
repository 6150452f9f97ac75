#!/usr/bin/env python
"""Screen settings on the tune splits (never on val), several trainings at once.

Each job is ``train_net.py`` on a dataset's training part and evaluated on its tune split:
``dsb2018_train_sub`` -> ``dsb2018_tune`` (a stable 20 % of dsb2018_train) and ``shapes_train``
-> ``shapes_tune`` (a third generated set from the training distribution). The budgets and
configs are the ablation's (``benchmarks/ablation.py``), so a setting that wins here is then
measured there, on val, over 3 seeds.

    DETECTRON2_DATASETS=../shared/data .venv/bin/python benchmarks/tune_screen.py \\
        --datasets dsb2018 --variants default convs4 --seeds 0 1 --parallel 1

With a GPU, ``--device cuda --parallel 6`` runs six trainings side by side on it. Jobs start in
the order given (variants, then seeds, then datasets); no job starts after ``--deadline``
seconds, and running ones are stopped at ``--kill-after``. It prints and writes (``--out``/
``screen.json``) segm AP, AP75 and the training time of every finished job.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from ablation import DEFAULT, ITERS, ROWS  # noqa: E402

SPLITS = {"dsb2018": ("('dsb2018_train_sub',)", "('dsb2018_tune',)"),
          "shapes": ("('shapes_train',)", "('shapes_tune',)")}  # fmt: skip
PR = "MODEL.POLAR_REFINE."
# name -> config overrides on top of the dataset's default (PolarRefine+)
VARIANTS = {
    "default": [],
    "no_contour": [PR + "CONTOUR.ENABLED", "False"],
    "1stage": [PR + "REFINE.NUM_STAGES", "1"],
    "contour_wide": [PR + "CONTOUR.CHANNELS", "[128,64,64,64]"],
    "contour_narrow": [PR + "CONTOUR.CHANNELS", "[32,16,16,16]"],
    "convs2": [PR + "NUM_CONVS", "2"],
    "convs4": [PR + "NUM_CONVS", "4"],
}  # fmt: skip


def command(ds, variant, seed, out, device, workers, iters=None):
    iters = iters or ITERS[ds]
    train, test = SPLITS[ds]
    return [
        sys.executable, os.path.join(ROOT, "train_net.py"),
        "--config-file", os.path.join(ROOT, dict((n, c) for n, c, _ in ROWS[ds])[DEFAULT]),
        *VARIANTS[variant],
        "DATASETS.TRAIN", train, "DATASETS.TEST", test, "SEED", str(seed), "OUTPUT_DIR", out,
        "SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", f"({int(iters * 0.7)},{int(iters * 0.9)})",
        "MODEL.DEVICE", device, "DATALOADER.NUM_WORKERS", str(workers),
    ]  # fmt: skip


def result(out):
    path = os.path.join(out, "metrics.json")
    if not os.path.isfile(path):
        return None
    rows = [json.loads(line) for line in open(path)]
    segm = [r for r in rows if "segm/AP" in r]
    return {"AP": segm[-1]["segm/AP"], "AP75": segm[-1]["segm/AP75"]} if segm else None


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--datasets", nargs="+", default=["dsb2018", "shapes"], choices=list(SPLITS))
    ap.add_argument("--variants", nargs="+", default=["default"], choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "output", "tune_screen"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--iters", type=int, default=None, help=f"default: the ablation's {ITERS}")
    ap.add_argument("--workers", type=int, default=1, help="DATALOADER.NUM_WORKERS per job")
    ap.add_argument("--deadline", type=float, default=1e9, help="start no job after this (s)")
    ap.add_argument("--kill-after", type=float, default=1e9, help="stop running jobs then (s)")
    args = ap.parse_args()
    jobs = [(ds, v, s) for s in args.seeds for ds in args.datasets for v in args.variants]
    t0 = time.time()
    running, done = {}, {}
    while jobs or running:
        for key, (proc, start, out) in list(running.items()):
            if proc.poll() is not None:
                done[key] = dict(result(out) or {"rc": proc.returncode}, wall_s=time.time() - start)
                print(f"[screen] {key}: {done[key]}", flush=True)
                del running[key]
        now = time.time() - t0
        if now > args.kill_after:
            for key, (proc, start, out) in running.items():
                proc.kill()
                done[key] = {"killed_at_s": now}
            break
        while jobs and len(running) < args.parallel and now < args.deadline:
            ds, v, s = key = jobs.pop(0)
            out = os.path.join(args.out, ds, f"{v}_seed{s}")
            finished = result(out)
            if finished:  # reused from an earlier run of the script
                done[key] = dict(finished, wall_s=None)
                continue
            os.makedirs(out, exist_ok=True)
            log = open(os.path.join(out, "stdout.txt"), "w")
            cmd = command(ds, v, s, out, args.device, args.workers, args.iters)
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            running[key] = (proc, time.time(), out)
        if not running and (not jobs or now >= args.deadline):
            break
        time.sleep(2)
    table = {f"{ds}/{v}/seed{s}": r for (ds, v, s), r in done.items()}
    print(json.dumps(table, indent=1))
    os.makedirs(args.out, exist_ok=True)
    json.dump(table, open(os.path.join(args.out, "screen.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
