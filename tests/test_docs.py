"""The commands of README.md and docs/ run as written.

Every fenced ``bash`` or ``python`` block right after a ``<!-- runnable -->`` line is run, in
the order of the files below and of the blocks within each, sharing one output folder: bash from
the repository root, python from an empty temporary folder (so that nothing depends on the
working directory). The variables the docs ask the reader to set are set here, with the short
iteration count the docs name (``ITERS=20``). The own-data block of docs/OWN_DATA.md has its own
test (tests/test_own_data.py), which first makes the COCO folder it reads.
"""

import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import ROOT, circle, draw_image

DOCS = ["README.md", "docs/INSTALL.md", "docs/GETTING_STARTED.md", "docs/EXPORT.md"]
ITERS = 20
BLOCK = re.compile(r"<!-- runnable -->\s*\n```(bash|python)\n(.*?)```", re.S)


def runnable_blocks(path):
    """(language, code) of the runnable blocks of one markdown file."""
    with open(os.path.join(ROOT, path)) as f:
        return BLOCK.findall(f.read())


def test_every_doc_with_runnable_blocks_is_run():
    """A doc that marks a block runnable is in DOCS (or is OWN_DATA.md, tested apart)."""
    import glob

    marked = {
        os.path.relpath(p, ROOT)
        for p in glob.glob(os.path.join(ROOT, "docs", "*.md")) + [os.path.join(ROOT, "README.md")]
        if runnable_blocks(os.path.relpath(p, ROOT))
    }
    assert marked <= set(DOCS), marked - set(DOCS)
    assert all(runnable_blocks(p) for p in DOCS), "a listed doc has no runnable block"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """OUT, ITERS and IMAGES (two drawn images), the venv first on PATH."""
    tmp = tmp_path_factory.mktemp("docs")
    images = tmp / "images"
    images.mkdir()
    for i, polys in enumerate(([[circle(50, 60, 30)]], [[circle(120, 90, 40, n=5)]])):
        img = draw_image(160, 200, polys, seed=i).permute(1, 2, 0).numpy().astype(np.uint8)
        cv2.imwrite(str(images / f"{i}.png"), img)
    return dict(
        os.environ,
        OUT=str(tmp / "out"),
        ITERS=str(ITERS),
        IMAGES=str(images),
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"),
        MPLBACKEND="Agg",
        _CWD=str(tmp),
    )


@pytest.mark.parametrize("doc", DOCS)
def test_runnable_blocks_run_as_written(doc, env):
    for lang, code in runnable_blocks(doc):
        if lang == "bash":
            cmd, cwd = ["bash", "-e", "-c", code], ROOT
        else:
            cmd, cwd = [sys.executable, "-c", code], env["_CWD"]
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (doc, code, proc.stdout[-2000:], proc.stderr[-3000:])
    out = env["OUT"]
    if doc == "docs/GETTING_STARTED.md":
        assert os.path.isfile(os.path.join(out, "model_final.pth"))
        assert os.path.isfile(os.path.join(out, "lazy", "model_final.pth"))
        assert sorted(os.listdir(os.path.join(out, "vis"))) == ["0.png", "1.png"]
    if doc == "docs/EXPORT.md":
        assert {"model.onnx", "model.ts"} <= set(os.listdir(os.path.join(out, "exported")))
        assert sorted(os.listdir(os.path.join(out, "vis_onnx"))) == ["0.png", "1.png"]
