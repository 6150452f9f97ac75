"""End-to-end tests of ``demo/demo.py``, run as a subprocess the way a user runs it.

The model has random weights (``MODEL.WEIGHTS ""``, seeded by the demo) and a zero score threshold,
so that every image has detections to draw; inputs are tiny and ``INPUT.MIN_SIZE_TEST`` is 128.
Each run pays the imports (a few seconds), so runs are shared between tests where possible.
"""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join("demo", "demo.py")
# `--opts` takes the rest of the command line: these come last.
QUICK = [
    "--confidence-threshold", "0.0",
    "--opts", "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", "128", "TEST.DETECTIONS_PER_IMAGE", "8",
]  # fmt: skip
NUM_FRAMES, FPS, FRAME_SIZE = 12, 10.0, (80, 64)  # (width, height)


def run_demo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python demo/demo.py ARGS... QUICK...`` from the repository root, without a display."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    return subprocess.run(
        [sys.executable, DEMO, *args, *QUICK],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_lines(proc: subprocess.CompletedProcess, needle: str = "error:"):
    return [line for line in proc.stderr.splitlines() if needle in line]


def read_video(path: str):
    """(CAP_PROP_FRAME_COUNT, CAP_PROP_FPS, the frames read)."""
    cap = cv2.VideoCapture(path)
    assert cap.isOpened(), path
    count, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return count, fps, frames


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """96x128 colour, grayscale and RGBA PNGs, and a broken.jpg of random bytes."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.RandomState(0)
    img = (rng.rand(96, 128, 3) * 60).astype(np.uint8)
    cv2.circle(img, (40, 50), 25, (0, 200, 255), -1)
    cv2.rectangle(img, (80, 20), (115, 70), (255, 120, 40), -1)
    cv2.imwrite(str(folder / "colour.png"), img)
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    rgba = cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
    rgba[..., 3] = 200
    cv2.imwrite(str(folder / "rgba.png"), rgba)
    (folder / "broken.jpg").write_bytes(rng.bytes(600))
    return folder


@pytest.fixture(scope="module")
def folder_run(image_dir, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("folder_out")
    return run_demo("--input", str(image_dir), "--output", str(out_dir)), out_dir


@pytest.fixture(scope="module")
def video_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("video") / "clip.mp4")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), FPS, FRAME_SIZE)
    for i in range(NUM_FRAMES):
        frame = np.full((FRAME_SIZE[1], FRAME_SIZE[0], 3), 40, np.uint8)
        cv2.circle(frame, (20 + 3 * i, 32), 12, (0, 200, 255), -1)
        writer.write(frame)
    writer.release()
    assert read_video(path)[0] == NUM_FRAMES
    return path


def test_image_folder_with_a_broken_file(folder_run, image_dir):
    proc, out_dir = folder_run
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(error_lines(proc, "broken.jpg")) == 1, proc.stderr
    assert len(error_lines(proc)) == 1, proc.stderr
    assert sorted(os.listdir(out_dir)) == ["colour.png", "gray.png", "rgba.png"]
    src = cv2.imread(str(image_dir / "colour.png"))
    for name in os.listdir(out_dir):
        vis = cv2.imread(str(out_dir / name))
        assert vis.shape == (96, 128, 3), name
        if name == "colour.png":
            assert not np.array_equal(vis, src)  # detections were drawn
    assert "detected 8 instances" in proc.stdout  # the per-image log


def test_single_input_to_output_file(folder_run, image_dir, tmp_path):
    """One input and ``--output FILE``: that file, identical to the folder run (seeded model)."""
    out = tmp_path / "sub" / "vis.png"
    proc = run_demo("--input", str(image_dir / "colour.png"), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(tmp_path / "sub") == ["vis.png"]
    assert np.array_equal(cv2.imread(str(out)), cv2.imread(str(folder_run[1] / "colour.png")))


def test_show_coarse_draws_more(folder_run, image_dir, tmp_path):
    out = tmp_path / "coarse.png"
    proc = run_demo("--input", str(image_dir / "colour.png"), "--output", str(out), "--show-coarse")
    assert proc.returncode == 0, proc.stderr
    plain = cv2.imread(str(folder_run[1] / "colour.png"))
    coarse = cv2.imread(str(out))
    assert coarse.shape == plain.shape
    assert not np.array_equal(coarse, plain)


def test_video_keeps_every_frame_and_the_fps(video_file, tmp_path):
    out = tmp_path / "clip_vis.mp4"
    proc = run_demo("--video-input", video_file, "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "frame/s" in proc.stderr  # the tqdm progress bar
    count, fps, frames = read_video(str(out))
    assert count == NUM_FRAMES and len(frames) == NUM_FRAMES
    assert fps == pytest.approx(FPS)
    assert frames[0].shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)


def test_webcam_source_recorded_to_a_file(video_file, tmp_path):
    out = tmp_path / "out.mp4"
    proc = run_demo("--webcam", video_file, "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    count, fps, frames = read_video(str(out))
    assert len(frames) > 0
    assert count == NUM_FRAMES and len(frames) == NUM_FRAMES
    assert fps == pytest.approx(FPS)


@pytest.mark.skipif(os.path.exists("/dev/video7"), reason="camera 7 exists here")
def test_missing_camera_fails_cleanly(tmp_path):
    out = tmp_path / "cam.mp4"
    proc = run_demo("--webcam", "7", "--output", str(out))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and "7" in lines[0], proc.stderr
    assert not out.exists()


def test_bad_config_path_fails_cleanly():
    proc = run_demo("--config-file", "no/such/config.yaml", "--input", "x.png", "--output", "o/")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and "no/such/config.yaml" in lines[0], proc.stderr


def test_drawn_labels_are_at_least_the_threshold(monkeypatch):
    """A predictor that returns scores under the threshold (as an exported model with a lower
    baked-in threshold does): the demo draws only those at or above it."""
    import torch
    from detectron2.config import get_cfg
    from detectron2.structures import Instances
    from detectron2.utils.visualizer import Visualizer

    import polar_refine
    from demo.predictor import VisualizationDemo
    from polar_refine import polar

    def predictor(image):
        inst = Instances(image.shape[:2])
        centres = torch.tensor([[30.0, 30.0], [70.0, 40.0], [40.0, 70.0]])
        inst.pred_polygons = polar.radii_to_points(centres, torch.full((3, 36), 12.0))
        inst.scores = torch.tensor([0.9, 0.3, 0.6])
        inst.pred_classes = torch.tensor([0, 1, 2])
        return {"instances": inst}

    labels = []
    draw = Visualizer.overlay_instances

    def recording(self, **kwargs):
        labels.extend(kwargs["labels"])
        return draw(self, **kwargs)

    monkeypatch.setattr(Visualizer, "overlay_instances", recording)
    cfg = get_cfg()
    polar_refine.add_polar_refine_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, "configs/Shapes/polar_refine_tiny.yaml"))
    demo = VisualizationDemo(cfg, predictor=predictor, min_score=0.5)
    demo.run_on_image(np.zeros((100, 100, 3), np.uint8))
    assert labels == ["circle 90%", "square 60%"]
