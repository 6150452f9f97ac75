#!/usr/bin/env bash
# One-command, idempotent setup of .venv for polar_refine (Python >= 3.10, python3.11 by default;
# set PYTHON to use another interpreter; CPU or GPU torch).
#
#   bash scripts/setup.sh
#
# Steps: create .venv -> torch/torchvision -> detectron2 (sal-detectron2 wheel, see README)
# -> detectron2's missing deps -> project (editable, extras dev and export). A second run only
# checks and exits.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY_BIN="${PYTHON:-python3.11}"
STAMP="$VENV/.polar_refine_setup_ok"
HASH_INPUTS=("$ROOT/scripts/setup.sh" "$ROOT/setup.py")

step() { CURRENT_STEP="$1"; echo "[setup] $1" >&2; }
fail() { echo "[setup] FAILED at step: ${CURRENT_STEP:-unknown} (exit $1). Re-run 'bash scripts/setup.sh' after fixing the cause above." >&2; exit "$1"; }
trap 'fail $?' ERR

want_hash="$(cat "${HASH_INPUTS[@]}" | sha256sum | cut -c1-16)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want_hash" ]] \
  && "$VENV/bin/python" -c "import detectron2, torch, polar_refine, onnxruntime" 2>/dev/null; then
  echo "[setup] .venv is up to date (nothing to do)" >&2
  exit 0
fi

step "create virtualenv with $PY_BIN"
if [[ ! -x "$VENV/bin/python" ]]; then
  command -v "$PY_BIN" >/dev/null || { echo "[setup] $PY_BIN not found on PATH" >&2; false; }
  "$PY_BIN" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)
# The same minimum as setup.py's python_requires (tests/test_project.py checks they agree).
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "polar_refine needs Python >= 3.10 (setup.py python_requires), got %s" % sys.version'

step "install torch==2.14.1 torchvision==0.29.1"
if ! "$PY" -c "import torch, torchvision; assert torch.__version__.startswith('2.14.1') and torchvision.__version__.startswith('0.29.1')" 2>/dev/null; then
  "${PIP[@]}" install "torch==2.14.1" "torchvision==0.29.1"
fi

step "install detectron2 (sal-detectron2==0.7.2 wheel, py3.10 tag, installed onto 3.11)"
if ! "$PY" -c "import detectron2" 2>/dev/null; then
  "${PIP[@]}" install installer
  WHEELDIR="$(mktemp -d)"
  "${PIP[@]}" download --no-deps --only-binary=:all: --python-version 3.10 --implementation cp \
    --platform linux_x86_64 -d "$WHEELDIR" "sal-detectron2==0.7.2"
  "$PY" -m installer "$WHEELDIR"/*.whl
  rm -rf "$WHEELDIR"
fi

step "install detectron2's runtime dependencies (pinned as upstream pins them)"
# numpy<2: sal-detectron2's own metadata requires it; opencv-python<4.12: newer wheels need numpy>=2.
"${PIP[@]}" install "fvcore>=0.1.5,<0.1.6" "iopath>=0.1.7,<0.1.10" "setuptools<81" \
  "pycocotools>=2.0.2" "Pillow>=7.1" "matplotlib" "termcolor>=1.1" "yacs>=0.1.8" "tabulate" \
  "cloudpickle" "tqdm>4.29.0" "tensorboard" "hydra-core>=1.1" "omegaconf>=2.1,<2.4" \
  "packaging" "numpy<2" "opencv-python<4.12" "shapely"

step "install polar_refine (editable) with its test tools and the export extra (onnx, onnxruntime)"
"${PIP[@]}" install --no-build-isolation -e "$ROOT[dev,export]" "numpy<2"

step "verify imports"
"$PY" -c "import torch, detectron2, polar_refine, onnx, onnxruntime; from detectron2.modeling import build_model; print('[setup] ok: torch', torch.__version__, '| detectron2', detectron2.__version__)" >&2
echo "$want_hash" > "$STAMP"
