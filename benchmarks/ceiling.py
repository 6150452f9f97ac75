#!/usr/bin/env python
# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""The representation ceilings of a dataset: each ground-truth object redrawn as the model
draws it, the mean mask IoU with itself, per category (no model involved).

    DETECTRON2_DATASETS=../shared/data .venv/bin/python benchmarks/ceiling.py \\
        --datasets shapes_val dsb2018_val --doc

"polar": the 36-ray polar contour from the mass centre, farthest crossings (what the refine
stages are trained towards); "deformed": the largest part resampled to 64 points along its
length (what the deformation stages can draw).
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["shapes_val"])
    ap.add_argument("--num-rays", type=int, default=36)
    ap.add_argument("--num-points", type=int, default=64)
    ap.add_argument("--doc", action="store_true")
    args = ap.parse_args()
    from detectron2.data import DatasetCatalog

    import polar_refine  # noqa: F401  (registers the datasets)
    from polar_refine.evaluation import PolarCOCOEvaluator

    lines = []
    for name in args.datasets:
        DatasetCatalog.get(name)  # writes the json the evaluator reads
        ev = PolarCOCOEvaluator(
            name, polar_ceiling=True, num_rays=args.num_rays, deform_points=args.num_points
        )
        res = ev._eval_polar_ceiling()
        cats = sorted({k.split("-", 1)[1] for k in res if "-" in k})
        lines += [
            f"{name}, {int(res['num_instances'])} objects, mean mask IoU of each with its own "
            f"contour ({args.num_rays}-ray polar; {args.num_points}-point deformed):",
            "",
            "| representation | all | " + " | ".join(cats) + " |",
            "|---" * (len(cats) + 2) + "|",
        ]
        for rep, label in (("", "polar"), ("deformed/", "deformed")):
            cells = [f"{res[rep + 'mean_iou']:.3f}"]
            cells += [f"{res.get(f'{rep}mean_iou-{c}', float('nan')):.3f}" for c in cats]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.doc:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from doc_table import write_table

        write_table("ceiling", text)


if __name__ == "__main__":
    main()
