#!/usr/bin/env bash
# The main job (README command 1, run through `make main` after the setup):
#   1. train PolarRefine+ (configs/Shapes/polar_refine_tiny.yaml) on the embedded synthetic
#      `shapes_train` set (CPU, a few minutes), then evaluate on `shapes_val`;
#   2. choose the drawing threshold on `shapes_tune` (never val): the score of best F1;
#   3. draw 8 `shapes_val` images with demo/demo.py into $OUT/vis, refined contours filled and
#      coarse ones dashed;
#   4. draw the training curves and print one summary: the AP table, the time, the pictures.
# Environment: OUT (default output/main_job), ITERS (default 850), IMS (images per batch,
# default 2), EXTRA (more config overrides). 850 iterations of 2 images keep the job within
# 5 minutes on a 2-core x86-64 CPU (docs/BENCHMARKS.md); two images per batch were chosen on
# shapes_tune over four at the same number of images.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT="${OUT:-output/main_job}"
ITERS="${ITERS:-850}"
IMS="${IMS:-2}"
CFG=configs/Shapes/polar_refine_tiny.yaml
START=$(date +%s)

echo "[main] training $CFG for $ITERS iterations of $IMS images into $OUT (progress every 20 iterations)"
$PY train_net.py --config-file "$CFG" \
  SOLVER.IMS_PER_BATCH "$IMS" SOLVER.MAX_ITER "$ITERS" \
  SOLVER.STEPS "($((ITERS * 2 / 3)),$((ITERS * 8 / 9)))" \
  OUTPUT_DIR "$OUT" ${EXTRA:-}

echo "[main] choosing the drawing threshold on shapes_tune"
THRESH="$($PY scripts/main_report.py threshold "$OUT" 2>/dev/null | tail -n 1)"
VAL_IMAGES="$($PY -c 'from polar_refine.data.shapes import ensure_shapes; print(ensure_shapes("shapes_val")[1])')"
mapfile -t IMAGES < <(ls "$VAL_IMAGES"/*.jpg | head -n 8)
echo "[main] drawing predictions of ${#IMAGES[@]} validation images into $OUT/vis at score >= $THRESH"
mkdir -p "$OUT/vis"
$PY demo/demo.py --config-file "$CFG" --input "${IMAGES[@]}" --output "$OUT/vis" \
  --confidence-threshold "$THRESH" --show-coarse --opts MODEL.WEIGHTS "$OUT/model_final.pth"

$PY scripts/main_report.py summary "$OUT" --seconds "$(($(date +%s) - START))" --threshold "$THRESH"
